"""What a Realtime response is: the record of one response, the objects its events carry, and
the usage the fake reports for it."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import Any

from infra.fake_openai.voices import SPEECH_SAMPLE_RATE

__all__ = [
    "AUDIO_FORMAT",
    "AUDIO_TOKEN_MS",
    "CHARS_PER_TEXT_TOKEN",
    "DEFAULT_VOICE",
    "VOICES",
    "RealtimeResponse",
    "item_object",
    "new_id",
    "response_object",
    "response_usage",
]

#: The voices of the Realtime API's speech models.
VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
DEFAULT_VOICE = "marin"
AUDIO_FORMAT = {"type": "audio/pcm", "rate": SPEECH_SAMPLE_RATE}
#: The fake's usage rule, not a fact about OpenAI: an audio output token per 50 ms of audio
#: sent, a text token per 4 characters.
AUDIO_TOKEN_MS = 50
CHARS_PER_TEXT_TOKEN = 4


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def _text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TEXT_TOKEN)


@dataclass
class RealtimeResponse:
    """One out-of-band response, as the fake received and answered it."""

    id: str
    #: The ``id`` of the socket's session (``session.created``).
    session_id: str
    model: str | None
    #: The ``event_id`` the client gave its ``response.create``, if any.
    event_id: str | None
    #: The ``response`` object of ``response.create``, as sent.
    request: dict[str, Any]
    #: The sentence asked for (the ``input_text`` of the response's input).
    text: str
    #: What the fake spoke and transcribed: ``text``, unless a rewording was scripted.
    spoken: str
    #: The instructions and voice in effect: the response's own, else the session's.
    instructions: str | None
    voice: str | None
    metadata: dict[str, Any] | None
    received_at: float
    #: ``in_progress`` until ``response.done``: then ``completed``, ``cancelled`` or
    #: ``failed`` (an injected ``error`` event). Still ``in_progress`` if the socket went first.
    status: str = "in_progress"
    failure: str | None = None
    #: Audio bytes sent in ``response.output_audio.delta`` events, and the whole audio.
    bytes_sent: int = 0
    bytes_total: int | None = None
    #: The transcript deltas sent, joined.
    transcript_sent: str = ""
    first_byte_at: float | None = None
    cancel_requested_at: float | None = None
    finished_at: float | None = None
    #: The socket closed or dropped before ``response.done``.
    disconnected: bool = False
    #: ``response.done``'s usage.
    usage: dict[str, Any] | None = None

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def reworded(self) -> bool:
        return self.spoken != self.text

    @property
    def finished(self) -> bool:
        return self.finished_at is not None


def response_object(response: RealtimeResponse, status: str) -> dict[str, Any]:
    """The ``response`` object of ``response.created`` and ``response.done``."""
    return {
        "object": "realtime.response",
        "id": response.id,
        "status": status,
        "status_details": None,
        "output": [],
        "conversation_id": None,
        "output_modalities": ["audio"],
        "max_output_tokens": "inf",
        "audio": {"output": {"format": dict(AUDIO_FORMAT), "voice": response.voice}},
        "usage": None,
        "metadata": response.metadata,
    }


def item_object(item_id: str, status: str, transcript: str | None) -> dict[str, Any]:
    """The assistant message item a response adds, with its transcript once known."""
    content = [] if transcript is None else [{"type": "output_audio", "transcript": transcript}]
    return {
        "id": item_id,
        "object": "realtime.item",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def response_usage(response: RealtimeResponse, transcript: str) -> dict[str, Any]:
    """The fake's rule (not OpenAI's): a text token per 4 characters of the instructions
    and the sentence in, and of the transcript out; an audio token per 50 ms of audio
    actually sent."""
    text_in = _text_tokens((response.instructions or "") + response.text)
    text_out = _text_tokens(transcript)
    audio_ms = response.bytes_sent / 2 / SPEECH_SAMPLE_RATE * 1000
    audio_out = math.ceil(audio_ms / AUDIO_TOKEN_MS)
    return {
        "total_tokens": text_in + text_out + audio_out,
        "input_tokens": text_in,
        "output_tokens": text_out + audio_out,
        "input_token_details": {
            "text_tokens": text_in,
            "audio_tokens": 0,
            "image_tokens": 0,
            "cached_tokens": 0,
            "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0, "image_tokens": 0},
        },
        "output_token_details": {"text_tokens": text_out, "audio_tokens": audio_out},
    }
