"""Reading a client frame: JSON that is really JSON, within the size limit, of a known type,
whose fields pass the event's schema; and the audio of an append."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import ProtocolError, shown
from .limits import MAX_EVENT_BYTES, MAX_ID_CHARS
from .schema import CLIENT_EVENT_SCHEMAS, CLIENT_EVENT_TYPES, check

#: Appends whose ``event_id`` ends in ``#<n>`` are ordered by ``n`` (counting from 1 per
#: WebSocket connection); see ``kiddolingo.ingest`` for why the server needs that.
_SEQ_RE = re.compile(r"#(\d{1,9})$")


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


def _refuse_constant(name: str) -> Any:
    # Python's json module reads NaN, Infinity and -Infinity, which JSON does not have.
    raise ProtocolError("invalid_json", f"{name} is not a JSON number; send finite numbers.")


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400 reads as infinity
        raise ProtocolError("invalid_json", f"The number {shown(text)} is too large.")
    return value


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def parse_client_event(body: str | bytes | None) -> ClientEvent:
    """Parse and validate one client frame. Raises ``ProtocolError`` with a precise code."""
    data = _read_json(body)
    if not isinstance(data, dict):
        raise ProtocolError("invalid_event", "The event must be a JSON object.")
    event_id = _event_id(data)
    etype = data.get("type")
    if not isinstance(etype, str) or not etype:
        raise ProtocolError(
            "missing_type", "The event has no 'type'.", event_id=event_id, param="type"
        )
    schema = CLIENT_EVENT_SCHEMAS.get(etype)
    if schema is None:
        raise ProtocolError(
            "unknown_event_type",
            f"Unknown event type {shown(etype)}. "
            f"Supported: {', '.join(sorted(CLIENT_EVENT_TYPES))}.",
            event_id=event_id,
            param="type",
        )
    payload = {k: v for k, v in data.items() if k not in ("type", "event_id")}
    code, spec = schema
    check(spec, payload, "", code, event_id)
    return ClientEvent(etype, event_id, payload)


def _read_json(body: str | bytes | None) -> Any:
    """The frame's JSON value: UTF-8 text, under the size limit, with finite numbers and no
    unpaired surrogate."""
    if body is None or body == "" or body == b"":
        raise ProtocolError("empty_event", "The event is empty; send one JSON object per frame.")
    try:
        size = len(body.encode("utf-8")) if isinstance(body, str) else len(body)
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise ProtocolError("invalid_json", "The event is not valid UTF-8 text.") from None
    if size > MAX_EVENT_BYTES:
        raise ProtocolError(
            "event_too_large",
            f"The event is {size} bytes; events must stay under {MAX_EVENT_BYTES} bytes. "
            "Send audio in smaller appends (about 100 ms each).",
        )
    try:
        data = _DECODER.decode(text)
    except ValueError as exc:
        raise ProtocolError("invalid_json", f"The event is not valid JSON: {exc}.") from None
    except RecursionError:
        raise ProtocolError("invalid_json", "The event is nested too deeply.") from None
    if "\\u" in text and _lone_surrogate(data):
        # json.loads accepts "\ud800" alone; such a string can never be stored or echoed.
        raise ProtocolError(
            "invalid_json", "The event contains an unpaired surrogate escape (\\ud800-\\udfff)."
        )
    return data


def _event_id(data: dict[str, Any]) -> str | None:
    """The client's ``event_id``, if it sent one: a string short enough to echo."""
    event_id = data.get("event_id")
    if event_id is None:
        return None
    if not isinstance(event_id, str):
        raise ProtocolError("invalid_event", "event_id must be a string.", param="event_id")
    if len(event_id) > MAX_ID_CHARS:
        raise ProtocolError(
            "invalid_event_id",
            f"event_id is {len(event_id)} characters; at most {MAX_ID_CHARS} are accepted "
            f"(this error quotes its first {MAX_ID_CHARS}).",
            event_id=event_id[:MAX_ID_CHARS],
            param="event_id",
        )
    return event_id


def _lone_surrogate(data: Any) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


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
