"""The wire contract: a subset of the OpenAI Realtime API (GA event names), DESIGN §2.

Parsing is hand-written over plain dicts rather than Powertools' pydantic parser: every audio
chunk is parsed on the chunk path, whose budget (DESIGN §4: ≤ 5 ms CPU per 100 ms of audio,
≤ 300 ms of imports) has no room for importing and validating through pydantic models.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

#: API Gateway closes the socket on a client frame over 32 KB (DESIGN §3); we answer any
#: event over this size with an error instead, and keep every posted message under it too.
MAX_EVENT_BYTES = 32 * 1024

CLIENT_EVENT_TYPES = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
        "conversation.item.truncate",
        "response.create",
        "response.cancel",
    }
)

SUPPORTED_INPUT_RATES = (24000, 16000)
OUTPUT_RATE = 24000

#: Appends whose ``event_id`` ends in ``#<n>`` are ordered by ``n`` (counting from 1 per
#: WebSocket connection); see ``kiddolingo.ingest`` for why the server needs that.
_SEQ_RE = re.compile(r"#(\d{1,9})$")


class ProtocolError(Exception):
    """A client event we cannot accept; becomes a Realtime ``error`` event."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        event_id: str | None = None,
        param: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.event_id = event_id
        self.param = param
        self.error_type = error_type


@dataclass(frozen=True)
class ClientEvent:
    type: str
    event_id: str | None
    payload: dict[str, Any] = field(default_factory=dict)

    @property
    def sequence(self) -> int | None:
        """The append's position in its connection's stream, when the client numbered it."""
        if self.event_id is None:
            return None
        match = _SEQ_RE.search(self.event_id)
        return int(match.group(1)) if match else None


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def parse_client_event(body: str | bytes | None) -> ClientEvent:
    """Parse and validate one client frame. Raises ``ProtocolError`` with a precise code."""
    if body is None or body == "" or body == b"":
        raise ProtocolError("empty_event", "The event is empty; send one JSON object per frame.")
    try:
        size = len(body.encode("utf-8")) if isinstance(body, str) else len(body)
    except UnicodeEncodeError:
        raise ProtocolError("invalid_json", "The event is not valid UTF-8 text.") from None
    if size > MAX_EVENT_BYTES:
        raise ProtocolError(
            "event_too_large",
            f"The event is {size} bytes; events must stay under {MAX_EVENT_BYTES} bytes. "
            "Send audio in smaller appends (about 100 ms each).",
        )
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("invalid_json", f"The event is not valid JSON: {exc}.") from None
    if (b"\\u" in body if isinstance(body, bytes) else "\\u" in body) and _lone_surrogate(data):
        # json.loads accepts "\ud800" alone; such a string can never be stored or echoed.
        raise ProtocolError(
            "invalid_json", "The event contains an unpaired surrogate escape (\\ud800-\\udfff)."
        )
    if not isinstance(data, dict):
        raise ProtocolError("invalid_event", "The event must be a JSON object.")
    event_id = data.get("event_id")
    if event_id is not None and not isinstance(event_id, str):
        raise ProtocolError("invalid_event", "event_id must be a string.", param="event_id")
    etype = data.get("type")
    if not isinstance(etype, str) or not etype:
        raise ProtocolError(
            "missing_type", "The event has no 'type'.", event_id=event_id, param="type"
        )
    if etype not in CLIENT_EVENT_TYPES:
        raise ProtocolError(
            "unknown_event_type",
            f"Unknown event type {etype!r}. Supported: {', '.join(sorted(CLIENT_EVENT_TYPES))}.",
            event_id=event_id,
            param="type",
        )
    payload = {k: v for k, v in data.items() if k not in ("type", "event_id")}
    event = ClientEvent(etype, event_id, payload)
    _VALIDATORS.get(etype, _no_fields)(event)
    return event


def _lone_surrogate(data: Any) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _no_fields(event: ClientEvent) -> None:
    return None


def _validate_append(event: ClientEvent) -> None:
    audio = event.payload.get("audio")
    if not isinstance(audio, str) or not audio:
        raise ProtocolError(
            "invalid_audio",
            "input_audio_buffer.append needs 'audio': base64 PCM16 mono.",
            event_id=event.event_id,
            param="audio",
        )


def _validate_truncate(event: ClientEvent) -> None:
    p = event.payload
    if not isinstance(p.get("item_id"), str) or not p["item_id"]:
        raise ProtocolError(
            "invalid_truncate",
            "conversation.item.truncate needs 'item_id'.",
            event_id=event.event_id,
            param="item_id",
        )
    end = p.get("audio_end_ms")
    if isinstance(end, bool) or not isinstance(end, int | float) or end < 0:
        raise ProtocolError(
            "invalid_truncate",
            "conversation.item.truncate needs 'audio_end_ms', a number ≥ 0.",
            event_id=event.event_id,
            param="audio_end_ms",
        )
    ci = p.get("content_index", 0)
    if ci != 0:
        raise ProtocolError(
            "invalid_truncate",
            "Only content_index 0 (the audio part) can be truncated.",
            event_id=event.event_id,
            param="content_index",
        )


def _validate_session_update(event: ClientEvent) -> None:
    if not isinstance(event.payload.get("session"), dict):
        raise ProtocolError(
            "invalid_session",
            "session.update needs a 'session' object.",
            event_id=event.event_id,
            param="session",
        )


_VALIDATORS = {
    "input_audio_buffer.append": _validate_append,
    "conversation.item.truncate": _validate_truncate,
    "session.update": _validate_session_update,
}


def decode_audio(event: ClientEvent) -> bytes:
    """The PCM16 bytes of an append, validated (base64, whole samples)."""
    try:
        pcm = base64.b64decode(event.payload["audio"], validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError(
            "invalid_audio",
            "'audio' is not valid base64.",
            event_id=event.event_id,
            param="audio",
        ) from None
    if len(pcm) % 2:
        raise ProtocolError(
            "invalid_audio",
            f"'audio' decodes to {len(pcm)} bytes, an odd count: PCM16 needs whole 2-byte samples.",
            event_id=event.event_id,
            param="audio",
        )
    return pcm


# --- server events -------------------------------------------------------------------------


def server_event(etype: str, **fields: Any) -> dict[str, Any]:
    return {"type": etype, "event_id": new_id("event"), **fields}


def error_event(
    code: str,
    message: str,
    *,
    event_id: str | None = None,
    error_type: str = "invalid_request_error",
    param: str | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "code": code, "message": message}
    if event_id is not None:
        error["event_id"] = event_id
    if param is not None:
        error["param"] = param
    return server_event("error", error=error)


def error_from(exc: ProtocolError) -> dict[str, Any]:
    return error_event(
        exc.code, exc.message, event_id=exc.event_id, error_type=exc.error_type, param=exc.param
    )


def encode_json(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
