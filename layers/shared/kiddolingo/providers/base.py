"""The provider ports: one small async method each (Pipecat style).

The turn logic depends on these, never on an SDK. Implementations: :mod:`.openai_compat`
(any OpenAI-compatible HTTP API) and :mod:`.realtime_speech` (speech over the Realtime API);
tests may pass their own objects with the same methods.

Every method takes an optional :class:`Usage` and adds to it what the provider reported it
billed (seconds transcribed, tokens, characters): the turn's cost is computed from it.

Streams are async generators. Whoever stops reading one early must close it
(``await stream.aclose()``, or ``async with contextlib.aclosing(stream)``): closing closes the
HTTP response, which is how a cancelled reply stops costing money.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..protocol import OUTPUT_RATE
from .moderation import ModerationVerdict

__all__ = [
    "ChatModel",
    "Moderator",
    "Providers",
    "SpeechSession",
    "SpeechSynth",
    "Spoken",
    "Transcriber",
    "Usage",
]

#: Speech output format: PCM16 little-endian mono at this rate, the one output format of the
#: wire protocol (``response.output_audio.delta``).
SPEECH_SAMPLE_RATE = OUTPUT_RATE

#: Largest speech chunk handed out: 250 ms of 24 kHz PCM16, whose base64 (16 KB) fits a
#: API Gateway WebSocket frame (32 KB) with room to spare.
DEFAULT_SPEECH_CHUNK_BYTES = 12_000


@dataclass
class Usage:
    """What the providers billed for one turn, as they reported it: ``amounts[(model, meter)]``.

    Meters: ``audio_seconds`` (transcription), ``input_tokens`` / ``cached_input_tokens`` /
    ``output_tokens`` (text), ``audio_output_tokens`` (Realtime speech), ``characters``
    (``/audio/speech``). :mod:`kiddolingo.prices` turns them into dollars."""

    amounts: dict[tuple[str, str], float] = field(default_factory=dict)

    def add(self, model: str, meter: str, amount: float | None) -> None:
        if amount:
            key = (model, meter)
            self.amounts[key] = self.amounts.get(key, 0) + amount

    def merge(self, other: Usage) -> None:
        for (model, meter), amount in other.amounts.items():
            self.add(model, meter, amount)


@dataclass(frozen=True)
class Spoken:
    """A piece of the transcript of the speech audio, as the voice model reports it: the words
    it actually said, which may differ a little from the text it was asked to read."""

    text: str


@runtime_checkable
class Transcriber(Protocol):
    async def transcribe(
        self,
        wav: bytes,
        *,
        languages: list[str] | None = None,
        prompt: str | None = None,
        usage: Usage | None = None,
    ) -> str:
        """The text spoken in ``wav`` (a complete WAV file). ``languages``: ISO-639-1 codes the
        speech is likely in, most likely first; ``prompt`` biases the vocabulary."""
        ...


@runtime_checkable
class ChatModel(Protocol):
    def stream(
        self,
        messages: list[dict[str, Any]],
        *,
        temperature: float,
        max_tokens: int,
        usage: Usage | None = None,
    ) -> AsyncIterator[str]:
        """Text deltas of the assistant's reply to ``messages`` (OpenAI chat format)."""
        ...


@runtime_checkable
class SpeechSession(Protocol):
    """Speech for the sentences of one turn, in one voice (one connection where the API has
    connections). Close it when the turn ends: that stops whatever is still being spoken."""

    #: True when the stream reports what was actually said (:class:`Spoken` items).
    reports_transcript: bool

    def stream(self, text: str) -> AsyncIterator[bytes | Spoken]:
        """Speech for ``text``: 24 kHz PCM16 LE mono chunks of an even number of bytes,
        interleaved with :class:`Spoken` transcript pieces when ``reports_transcript``."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SpeechSynth(Protocol):
    def open(self, *, voice: str, usage: Usage | None = None) -> SpeechSession:
        """A session for one turn. Returns at once; a connection, if any, is opened in the
        background (call it from inside the event loop, as early as the turn knows it will
        speak, so the handshake is off the critical path)."""
        ...


@runtime_checkable
class Moderator(Protocol):
    async def check(self, text: str) -> ModerationVerdict:
        """Whether ``text`` is safe for a child, under our own thresholds."""
        ...


@dataclass
class Providers:
    """The four providers of a turn."""

    transcriber: Transcriber
    chat: ChatModel
    speech: SpeechSynth
    moderator: Moderator

    async def aclose(self) -> None:
        """Close the HTTP clients (the ones that have an ``aclose``)."""
        seen: set[int] = set()
        for provider in (self.transcriber, self.chat, self.speech, self.moderator):
            close = getattr(provider, "aclose", None)
            if close is not None and id(provider) not in seen:
                seen.add(id(provider))
                await close()
