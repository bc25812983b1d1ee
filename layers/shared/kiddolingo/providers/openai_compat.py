"""The providers over any OpenAI-compatible HTTP API, with the official ``openai`` SDK.

Each stage has its own ``AsyncOpenAI`` client (:class:`~.sdk_client.StageClient`, built from
its ``StageSettings``: model, base URL, key), so transcription can run on another host (e.g.
``whisper-large-v3`` on an OpenAI-compatible endpoint) than chat or speech. Every SDK or
transport error leaves this module as a :class:`~.errors.ProviderError`.

Importing this module imports ``openai``; only :func:`kiddolingo.providers.build_providers`
does, on first use.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

from ..settings import Settings
from .base import DEFAULT_SPEECH_CHUNK_BYTES, Providers, Usage
from .errors import ProviderServerError
from .moderation import CHILD_SAFETY_THRESHOLDS, ModerationVerdict, evaluate_moderation
from .sdk_client import StageClient, map_provider_error, provider_errors

__all__ = [
    "OpenAIChatModel",
    "OpenAIModerator",
    "OpenAISpeechSynth",
    "OpenAITranscriber",
    "StageClient",
    "build_openai_providers",
    "map_provider_error",
]


class OpenAITranscriber:
    """:class:`~.base.Transcriber` over ``/audio/transcriptions``."""

    def __init__(self, client: StageClient) -> None:
        self._client = client

    async def transcribe(
        self,
        wav: bytes,
        *,
        languages: list[str] | None = None,
        prompt: str | None = None,
        usage: Usage | None = None,
    ) -> str:
        model = self._client.model
        hint: dict[str, Any] = {}
        if languages:
            if takes_languages(model):
                hint["languages"] = list(languages)
            else:  # whisper-1 and the gpt-4o transcribers take one language
                hint["language"] = languages[0]
        if prompt:
            hint["prompt"] = prompt
        with provider_errors("transcription"):
            result = await self._client.get().audio.transcriptions.create(
                model=model,
                file=("turn.wav", wav, "audio/wav"),
                response_format="json",
                **hint,
            )
        if usage is not None:
            usage.add(model, "audio_seconds", _transcribed_seconds(result, wav))
        text = getattr(result, "text", result)
        return str(text or "").strip()

    async def aclose(self) -> None:
        await self._client.aclose()


def takes_languages(model: str) -> bool:
    """Whether the transcription model takes a ``languages`` list (the gpt-transcribe family)
    rather than one ``language``."""
    return model.startswith(("gpt-transcribe", "gpt-live-transcribe"))


def _transcribed_seconds(result: Any, wav: bytes) -> float:
    """The seconds the provider billed: its own ``usage`` when it reports one, else the length
    of the audio sent (what per-minute pricing bills)."""
    reported = getattr(getattr(result, "usage", None), "seconds", None)
    if isinstance(reported, int | float) and reported > 0:
        return float(reported)
    return max(0, len(wav) - 44) / 2 / wav_rate(wav)


def wav_rate(wav: bytes) -> int:
    """The sample rate in a canonical WAV header (24 kHz if the header is short)."""
    return int.from_bytes(wav[24:28], "little") if len(wav) >= 28 else 24_000


class OpenAIChatModel:
    """:class:`~.base.ChatModel` over ``/chat/completions`` with ``stream=True``.

    With a ``reasoning_effort`` (the reasoning models, such as gpt-6-luna) the request carries
    it and ``max_completion_tokens`` (those models refuse ``max_tokens``), and ``temperature``
    only at effort ``none`` (they refuse sampling settings while they reason). Without one
    (gpt-4o and most OpenAI-compatible servers) it is the classic request."""

    def __init__(self, client: StageClient, *, reasoning_effort: str = "") -> None:
        self._client = client
        self._effort = reasoning_effort

    def request(
        self, messages: list[dict[str, Any]], *, temperature: float, max_tokens: int
    ) -> dict[str, Any]:
        """The parameters of ``chat.completions.create`` for this model."""
        params: dict[str, Any] = {
            "model": self._client.model,
            "messages": messages,
            "stream": True,
            # The last chunk carries the token counts: the turn's cost.
            "stream_options": {"include_usage": True},
        }
        if self._effort:
            params["reasoning_effort"] = self._effort
            params["max_completion_tokens"] = max_tokens
            if self._effort == "none":
                params["temperature"] = temperature
        else:
            params["max_tokens"] = max_tokens
            params["temperature"] = temperature
        return params

    async def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        temperature: float,
        max_tokens: int,
        usage: Usage | None = None,
    ) -> AsyncIterator[str]:
        params = self.request(messages, temperature=temperature, max_tokens=max_tokens)
        with provider_errors("chat"):
            response = await self._client.get().chat.completions.create(**params)
        try:
            with provider_errors("chat"):
                async for chunk in response:
                    if chunk.usage is not None and usage is not None:
                        _add_chat_usage(usage, self._client.model, chunk.usage)
                    if not chunk.choices:
                        continue
                    delta = chunk.choices[0].delta
                    text = delta.content if delta is not None else None
                    if text:
                        yield text
        finally:
            # Closing the response closes the HTTP stream: no more tokens are generated for us.
            await response.close()

    async def aclose(self) -> None:
        await self._client.aclose()


def _add_chat_usage(usage: Usage, model: str, reported: Any) -> None:
    cached = getattr(getattr(reported, "prompt_tokens_details", None), "cached_tokens", 0) or 0
    usage.add(model, "input_tokens", (reported.prompt_tokens or 0) - cached)
    usage.add(model, "cached_input_tokens", cached)
    # Reasoning tokens are billed as output and already counted in completion_tokens.
    usage.add(model, "output_tokens", reported.completion_tokens or 0)


class OpenAISpeechSynth:
    """:class:`~.base.SpeechSynth` over ``/audio/speech`` with ``response_format="pcm"``.

    Chunks have an even number of bytes (an odd byte is carried into the next chunk) and at
    most ``max_chunk_bytes``. The endpoint reports no transcript: what it says is the text.
    """

    reports_transcript = False

    def __init__(
        self, client: StageClient, *, max_chunk_bytes: int = DEFAULT_SPEECH_CHUNK_BYTES
    ) -> None:
        if max_chunk_bytes < 2:
            raise ValueError("max_chunk_bytes must be at least 2")
        self._client = client
        self._max_chunk = max_chunk_bytes - max_chunk_bytes % 2

    def open(self, *, voice: str, usage: Usage | None = None) -> _HttpSpeechSession:
        return _HttpSpeechSession(self, voice, usage)

    async def stream(
        self, text: str, *, voice: str, usage: Usage | None = None
    ) -> AsyncIterator[bytes]:
        if not text.strip():
            return
        model = self._client.model
        carry = b""
        with provider_errors("speech"):
            async with self._client.get().audio.speech.with_streaming_response.create(
                model=model,
                voice=voice,
                input=text,
                response_format="pcm",
            ) as response:
                if usage is not None:  # billed per character of input, once the request is taken
                    usage.add(model, "characters", len(text))
                async for data in response.iter_bytes():
                    if carry:
                        data, carry = carry + data, b""
                    if len(data) % 2:
                        data, carry = data[:-1], data[-1:]
                    for start in range(0, len(data), self._max_chunk):
                        yield data[start : start + self._max_chunk]
        # A trailing odd byte cannot be a sample: it is dropped.

    async def aclose(self) -> None:
        await self._client.aclose()


class _HttpSpeechSession:
    """One request per sentence: there is no connection to keep."""

    reports_transcript = False

    def __init__(self, synth: OpenAISpeechSynth, voice: str, usage: Usage | None) -> None:
        self._synth, self._voice, self._usage = synth, voice, usage

    def stream(self, text: str) -> AsyncIterator[bytes]:
        return self._synth.stream(text, voice=self._voice, usage=self._usage)

    async def aclose(self) -> None:
        return None


class OpenAIModerator:
    """:class:`~.base.Moderator` over ``/moderations``, judged by our own thresholds."""

    def __init__(
        self, client: StageClient, *, thresholds: Mapping[str, float] = CHILD_SAFETY_THRESHOLDS
    ) -> None:
        self._client = client
        self.thresholds = thresholds

    async def check(self, text: str) -> ModerationVerdict:
        if not text.strip():
            return ModerationVerdict.clean()
        with provider_errors("moderation"):
            response = await self._client.get().moderations.create(
                model=self._client.model, input=text
            )
        if not response.results:
            raise ProviderServerError("moderation", message="no moderation result")
        result = response.results[0]
        scores = {
            str(k): float(v)
            for k, v in result.category_scores.to_dict().items()
            if isinstance(v, int | float)
        }
        categories = {
            str(k): bool(v) for k, v in result.categories.to_dict().items() if v is not None
        }
        return evaluate_moderation(
            scores,
            api_flagged=bool(result.flagged),
            api_categories=categories,
            thresholds=self.thresholds,
        )

    async def aclose(self) -> None:
        await self._client.aclose()


def build_openai_providers(settings: Settings) -> Providers:
    """The four providers, one client per stage; speech on the API ``SPEECH_API`` names."""
    speech_client = StageClient("speech", settings.speech, settings)
    speech: Any
    if settings.speech_api == "realtime":
        from .realtime_speech import RealtimeSpeechSynth

        speech = RealtimeSpeechSynth(
            speech_client, reasoning_effort=settings.speech_reasoning_effort
        )
    else:
        speech = OpenAISpeechSynth(speech_client)
    return Providers(
        transcriber=OpenAITranscriber(
            StageClient("transcription", settings.transcription, settings)
        ),
        chat=OpenAIChatModel(
            StageClient("chat", settings.chat, settings),
            reasoning_effort=settings.chat_reasoning_effort,
        ),
        speech=speech,
        moderator=OpenAIModerator(StageClient("moderation", settings.moderation, settings)),
    )
