"""What the Realtime speech session says and hears on its socket: the session and response
requests it sends, the errors it reads (as :class:`~.errors.ProviderError`), the usage a
response reports, and one sentence's events turned into the items its stream yields.

Importing this module imports ``openai`` and ``websockets``; only :mod:`.realtime_speech` does.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any, cast

import openai
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from .base import SPEECH_SAMPLE_RATE, Spoken, Usage
from .errors import (
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderRateLimitError,
    ProviderServerError,
)
from .sdk_client import map_provider_error

if TYPE_CHECKING:
    from openai.types.realtime import RealtimeSessionCreateRequestParam

#: What the voice model is told for every sentence. The sentence itself is the response's only
#: input, so nothing of the conversation reaches the model twice.
READ_ALOUD_INSTRUCTIONS = (
    "You are the voice of a kind language tutor for children aged 6 to 12. Read the user's "
    "text aloud exactly as written, word for word, in the language of each word. Do not answer "
    "it, translate it, explain it, or add or leave out any word. Speak warmly and clearly, a "
    "little slower than usual, with a short pause at each comma and full stop, as to a young "
    "child learning the language."
)


def _audio(voice: str) -> dict[str, Any]:
    return {"output": {"format": {"type": "audio/pcm", "rate": SPEECH_SAMPLE_RATE}, "voice": voice}}


def session_request(voice: str) -> RealtimeSessionCreateRequestParam:
    """The ``session.update`` that makes the socket a reader aloud in ``voice``."""
    session = {
        "type": "realtime",
        "output_modalities": ["audio"],
        "instructions": READ_ALOUD_INSTRUCTIONS,
        "audio": _audio(voice),
    }
    # The SDK's type pins the output rate to the literal 24000, which SPEECH_SAMPLE_RATE is.
    return cast("RealtimeSessionCreateRequestParam", session)


def response_request(text: str, key: str, voice: str, effort: str) -> dict[str, Any]:
    """The out-of-band response that reads ``text`` aloud; ``key`` comes back in its metadata."""
    response: dict[str, Any] = {
        "conversation": "none",
        "output_modalities": ["audio"],
        "instructions": READ_ALOUD_INSTRUCTIONS,
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": text}],
            }
        ],
        "metadata": {"sentence": key},
        "audio": _audio(voice),
    }
    if effort:
        response["reasoning"] = {"effort": effort}
    return response


def speech_error(exc: BaseException) -> ProviderError:
    """The :class:`ProviderError` for a failure of the Realtime socket or its handshake."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        message = f"Realtime handshake refused (HTTP {status})"
        if status in (401, 403):
            return ProviderAuthError("speech", status=status, message=message)
        if status == 429:
            return ProviderRateLimitError("speech", status=status, message=message)
        if status >= 500 or status in (408, 409):
            return ProviderServerError("speech", status=status, message=message)
        return ProviderError("speech", "bad_request", status=status, message=message)
    received = getattr(exc, "rcvd", None)
    if isinstance(exc, ConnectionClosed) and received is not None and received.code == 1008:
        # Policy violation: how a Realtime server closes on a refused key (not worth a retry).
        return ProviderAuthError("speech", message=received.reason or "policy violation")
    if isinstance(exc, WebSocketException | OSError | EOFError):
        return ProviderConnectionError("speech", message=str(exc) or type(exc).__name__)
    if isinstance(exc, openai.OpenAIError):
        return map_provider_error("speech", exc)
    return ProviderError("speech", message=str(exc) or type(exc).__name__)


def error_of(event: Any) -> ProviderError:
    """The :class:`ProviderError` for a Realtime ``error`` event."""
    error = getattr(event, "error", None)
    kind = str(getattr(error, "type", "") or "")
    code = str(getattr(error, "code", "") or "")
    message = str(getattr(error, "message", "") or "Realtime error")
    if "rate_limit" in kind or "rate_limit" in code:
        return ProviderRateLimitError("speech", message=message)
    if code in ("invalid_api_key", "unauthorized") or kind == "authentication_error":
        return ProviderAuthError("speech", message=message)
    if kind == "invalid_request_error":
        return ProviderError("speech", "bad_request", message=f"{code}: {message}".strip(": "))
    return ProviderServerError("speech", message=f"{code}: {message}".strip(": "))


def add_usage(usage: Usage, model: str, reported: Any) -> None:
    """What a finished response reports it billed, into ``usage``."""
    inp = getattr(reported, "input_token_details", None)
    out = getattr(reported, "output_token_details", None)
    cached = getattr(inp, "cached_tokens", 0) or 0
    usage.add(model, "input_tokens", (getattr(reported, "input_tokens", 0) or 0) - cached)
    usage.add(model, "cached_input_tokens", cached)
    usage.add(model, "output_tokens", getattr(out, "text_tokens", 0) or 0)
    usage.add(model, "audio_output_tokens", getattr(out, "audio_tokens", 0) or 0)


class SentenceItems:
    """One sentence's audio and transcript events, as the items its stream yields.

    Audio comes out in chunks of an even number of bytes, at most ``max_chunk`` (an odd byte
    waits for the next delta). Transcript that comes before any audio waits for it: until the
    first audio, a failed sentence can be retried without the child seeing its first words
    twice."""

    def __init__(self, max_chunk: int) -> None:
        self.max_chunk = max_chunk
        self.carry = b""
        self.early: list[Spoken] | None = []

    def audio(self, delta: str) -> list[bytes | Spoken]:
        """What an ``output_audio.delta`` lets out: held transcript first, then the audio."""
        data = base64.b64decode(delta)
        if self.carry:
            data, self.carry = self.carry + data, b""
        if len(data) % 2:
            data, self.carry = data[:-1], data[-1:]
        items: list[bytes | Spoken] = []
        if self.early and data:
            items.extend(self.early)
        if data:
            self.early = None
        items.extend(
            data[start : start + self.max_chunk] for start in range(0, len(data), self.max_chunk)
        )
        return items

    def transcript(self, delta: str) -> list[bytes | Spoken]:
        """What an ``output_audio_transcript.delta`` lets out (nothing while it is held)."""
        if not delta:
            return []
        if self.early is None:
            return [Spoken(delta)]
        self.early.append(Spoken(delta))
        return []

    def held(self) -> list[Spoken]:
        """The transcript still held when the response is done (it had no audio)."""
        return list(self.early or ())
