"""The client events the fake's Realtime socket accepts, checked: a refused event raises
:class:`BadEvent`, which the socket answers with an ``error`` event and stays open."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.fake_openai.realtime.response import VOICES
from infra.fake_openai.voices import SPEECH_SAMPLE_RATE

__all__ = ["UNSERVED", "BadEvent", "ResponseRequest", "check_session_update", "response_request"]

#: Client events of the Realtime API the fake knows but does not serve (it speaks, nothing
#: else): they get an ``error`` naming them rather than the error for an unknown type.
UNSERVED = (
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "output_audio_buffer.clear",
)


class BadEvent(Exception):
    """A client event the fake refuses: becomes an ``error`` event."""

    def __init__(self, message: str, *, code: str = "invalid_value", param: str | None = None):
        super().__init__(message)
        self.code = code
        self.param = param


@dataclass(frozen=True)
class ResponseRequest:
    """A ``response.create`` the fake serves: the sentence to read aloud and how."""

    #: The ``response`` object of the event, as sent.
    params: dict[str, Any]
    text: str
    #: The response's own voice and instructions, else the session's.
    voice: str
    instructions: str | None
    metadata: dict[str, Any] | None


def check_session_update(session: Any) -> dict[str, Any]:
    """The ``session`` of a ``session.update``, checked; its output settings are returned."""
    if not isinstance(session, dict):
        raise BadEvent("Missing required parameter: 'session'.", param="session")
    if session.get("type", "realtime") != "realtime":
        raise BadEvent(
            "The fake serves realtime sessions only (session.type 'realtime').",
            param="session.type",
        )
    _check_modalities(session.get("output_modalities"), "session.output_modalities")
    output = ((session.get("audio") or {}).get("output")) or {}
    voice = output.get("voice")
    if voice is not None:
        _check_voice(voice, "session.audio.output.voice")
    if "format" in output:
        _check_format(output["format"], "session.audio.output.format")
    if "instructions" in session and not isinstance(session["instructions"], str):
        raise BadEvent("instructions must be a string.", param="session.instructions")
    return output


def response_request(event: dict[str, Any], session: dict[str, Any]) -> ResponseRequest:
    """The ``response.create`` event checked: an out-of-band response that speaks the
    ``input_text`` of its input, in a voice and format the fake has."""
    params = event.get("response", {})
    if not isinstance(params, dict):
        raise BadEvent("response must be an object.", param="response")
    if params.get("conversation") != "none":
        raise BadEvent(
            "The fake serves out-of-band responses only: set response.conversation "
            "to 'none' and give the sentence in response.input.",
            param="response.conversation",
        )
    _check_modalities(params.get("output_modalities"), "response.output_modalities")
    text = _input_text(params.get("input"))
    output = ((params.get("audio") or {}).get("output")) or {}
    voice = output.get("voice", session["audio"]["output"]["voice"])
    _check_voice(voice, "response.audio.output.voice")
    if "format" in output:
        _check_format(output["format"], "response.audio.output.format")
    metadata = params.get("metadata")
    _check_metadata(metadata)
    instructions = params.get("instructions", session["instructions"])
    return ResponseRequest(params, text, voice, instructions, metadata)


def _check_modalities(modalities: Any, param: str) -> None:
    if modalities is not None and modalities != ["audio"]:
        raise BadEvent("The fake speaks: output_modalities must be ['audio'].", param=param)


def _check_voice(voice: Any, param: str) -> None:
    if voice not in VOICES:
        raise BadEvent(
            f"Invalid value: {voice!r}. Supported values are: {', '.join(VOICES)}.",
            param=param,
        )


def _check_format(fmt: Any, param: str) -> None:
    if not isinstance(fmt, dict) or fmt.get("type") != "audio/pcm":
        raise BadEvent("The fake speaks audio/pcm only.", param=param)
    if fmt.get("rate", SPEECH_SAMPLE_RATE) != SPEECH_SAMPLE_RATE:
        raise BadEvent("audio/pcm is 24000 Hz.", param=param)


def _check_metadata(metadata: Any) -> None:
    if metadata is not None and (
        not isinstance(metadata, dict)
        or len(metadata) > 16
        or not all(
            isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
            for k, v in metadata.items()
        )
    ):
        raise BadEvent(
            "metadata must be at most 16 string keys (64 chars) to string values (512).",
            param="response.metadata",
        )


def _input_text(items: Any) -> str:
    """The sentence to read: the ``input_text`` of the response's user message(s)."""
    texts = []
    if isinstance(items, list):
        for item in items:
            if not isinstance(item, dict) or item.get("type") != "message":
                continue
            for part in item.get("content") or []:
                if isinstance(part, dict) and part.get("type") == "input_text":
                    texts.append(str(part.get("text") or ""))
    text = " ".join(t for t in texts if t)
    if not text.strip():
        raise BadEvent(
            "The fake reads aloud the input_text of response.input: it is missing or empty.",
            code="missing_required_parameter",
            param="response.input",
        )
    return text
