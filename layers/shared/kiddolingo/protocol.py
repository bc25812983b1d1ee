"""The wire contract: a subset of the OpenAI Realtime API (GA event names).

Every field of every client event is checked once, here, against one declarative schema per
event (:data:`CLIENT_EVENT_SCHEMAS`): its JSON type, its range or its allowed values. The code
after this boundary trusts the shapes and never re-checks them.

The schema is a small table of :class:`Field` values rather than Powertools' parser with
Pydantic models. Every audio chunk is parsed on the chunk path, whose budget is at most 300 ms
of imports on a cold start and 5 ms of CPU per 100 ms of audio. Importing ``pydantic`` and the
parser costs about as much as the whole chunk path imports today (measured with
``python -X importtime``; the figures are in docs/threat-model.md), while an append has one
field to check.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .settings import HTTP_VOICES
from .vad.limits import (
    IDLE_TIMEOUT_MS_RANGE,
    PREFIX_PADDING_MS_RANGE,
    SILENCE_DURATION_MS_RANGE,
    THRESHOLD_RANGE,
)

#: API Gateway closes the socket on a client frame over 32 KB; we answer any event over this
#: size with an error instead, and keep every posted message under it too.
MAX_EVENT_BYTES = 32 * 1024
#: Ids a client chooses (``event_id``, ``item_id``, ``response_id``) are echoed back in
#: events: bounded so that an echo can never push an event past 32 KB.
MAX_ID_CHARS = 128
#: An error message never passes this, whatever it quotes.
MAX_ERROR_MESSAGE_CHARS = 1024
#: A client value quoted in an error message is cut to this many characters.
_SHOWN_CHARS = 64

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

#: Every voice of any speech API (a deployment's own may be fewer: ``Settings.speech_voices``,
#: checked where the settings are known).
VOICES = HTTP_VOICES

#: The languages a child may choose to learn. The name goes into the tutor's system prompt, so
#: a learner picks it from this list (matched without regard to case) and never writes it.
TARGET_LANGUAGES = {
    name.casefold(): name
    for name in (
        "Arabic",
        "Catalan",
        "Chinese",
        "Czech",
        "Danish",
        "Dutch",
        "English",
        "Finnish",
        "French",
        "German",
        "Greek",
        "Hebrew",
        "Hindi",
        "Hungarian",
        "Indonesian",
        "Italian",
        "Japanese",
        "Korean",
        "Malay",
        "Mandarin",
        "Norwegian",
        "Polish",
        "Portuguese",
        "Romanian",
        "Russian",
        "Spanish",
        "Swahili",
        "Swedish",
        "Tagalog",
        "Thai",
        "Turkish",
        "Ukrainian",
        "Vietnamese",
        "Welsh",
    )
}

#: The longest lesson plan (``session.instructions``, from a teacher's connection).
MAX_INSTRUCTIONS_CHARS = 4000
#: No assistant item is longer than a connection, which API Gateway caps at two hours.
MAX_AUDIO_END_MS = 2 * 3600 * 1000

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


# --- the schema of the client events --------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """What one field of a client event may hold.

    ``kind`` is the JSON type: ``str``, ``int`` (a whole number), ``num`` (any finite number),
    ``bool``, ``obj`` (with ``fields``; fields it does not name are ignored, as the Realtime API
    ignores them) or ``choice`` (one of ``choices``; a string choice matches without regard to
    case when ``ignore_case``). ``lo``/``hi`` bound a number, or a string's length.

    An optional field that is ``null`` counts as absent, unless ``nullable``: then ``null`` is
    a value of its own (``turn_detection: null`` means manual commits).
    """

    kind: str
    lo: float | None = None
    hi: float | None = None
    choices: frozenset[Any] | None = None
    fields: Mapping[str, Field] | None = None
    required: bool = False
    nullable: bool = False
    ignore_case: bool = False


def _str(lo: int = 0, hi: int = MAX_EVENT_BYTES, **kw: Any) -> Field:
    return Field("str", lo=lo, hi=hi, **kw)


def _int(lo: int, hi: int, **kw: Any) -> Field:
    return Field("int", lo=lo, hi=hi, **kw)


def _num(lo: float, hi: float, **kw: Any) -> Field:
    return Field("num", lo=lo, hi=hi, **kw)


def _bool(**kw: Any) -> Field:
    return Field("bool", **kw)


def _choice(*choices: Any, **kw: Any) -> Field:
    return Field("choice", choices=frozenset(choices), **kw)


def _obj(required: bool = False, nullable: bool = False, **fields: Field) -> Field:
    return Field("obj", fields=fields, required=required, nullable=nullable)


_ID = _str(1, MAX_ID_CHARS)

_SESSION = _obj(
    required=True,
    type=_choice("realtime"),
    # Who may set it is decided where the connection is known (kiddolingo.session).
    instructions=_str(0, MAX_INSTRUCTIONS_CHARS, nullable=True),
    audio=_obj(
        input=_obj(
            format=_obj(type=_choice("audio/pcm"), rate=_choice(*SUPPORTED_INPUT_RATES)),
            turn_detection=_obj(
                nullable=True,
                type=_choice("server_vad"),
                threshold=_num(*THRESHOLD_RANGE),
                prefix_padding_ms=_int(*PREFIX_PADDING_MS_RANGE),
                silence_duration_ms=_int(*SILENCE_DURATION_MS_RANGE),
                idle_timeout_ms=_int(*IDLE_TIMEOUT_MS_RANGE, nullable=True),
                create_response=_bool(),
                interrupt_response=_bool(),
            ),
        ),
        output=_obj(
            format=_obj(type=_choice("audio/pcm"), rate=_choice(OUTPUT_RATE)),
            voice=_choice(*VOICES),
        ),
    ),
    tutor=_obj(
        target_language=_choice(*TARGET_LANGUAGES, ignore_case=True),
        learner_age=_int(3, 17),
    ),
)

#: One schema per client event, and the error code its fields' errors carry.
CLIENT_EVENT_SCHEMAS: dict[str, tuple[str, Field]] = {
    "session.update": ("invalid_session", _obj(session=_SESSION)),
    "input_audio_buffer.append": ("invalid_audio", _obj(audio=_str(1, required=True))),
    "input_audio_buffer.commit": ("invalid_event", _obj()),
    "input_audio_buffer.clear": ("invalid_event", _obj()),
    "conversation.item.truncate": (
        "invalid_truncate",
        _obj(
            item_id=Field("str", lo=1, hi=MAX_ID_CHARS, required=True),
            content_index=_int(0, 0),
            audio_end_ms=_num(0, MAX_AUDIO_END_MS, required=True),
        ),
    ),
    # ``response.response`` (per-response settings) is not supported and ignored, as unknown
    # fields are: its instructions never reach the tutor.
    "response.create": ("invalid_event", _obj()),
    "response.cancel": ("invalid_event", _obj(response_id=_ID)),
}


def shown(value: Any) -> str:
    """A client value quoted in a message: its JSON text, cut short."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "…"


def _expected(spec: Field) -> str:
    """What a valid value is, in words."""
    if spec.kind == "str":
        return f"a string of {int(spec.lo or 0)} to {int(spec.hi or 0)} characters"
    if spec.kind == "int":
        return f"a whole number from {spec.lo:g} to {spec.hi:g}"
    if spec.kind == "num":
        return f"a finite number from {spec.lo:g} to {spec.hi:g}"
    if spec.kind == "bool":
        return "true or false"
    if spec.kind == "obj":
        return "an object"
    values = sorted(spec.choices or (), key=str)
    return "one of " + ", ".join(json.dumps(v) for v in values)


def _valid(spec: Field, value: Any) -> bool:
    kind = spec.kind
    if kind == "str":
        return isinstance(value, str) and (spec.lo or 0) <= len(value) <= (spec.hi or 0)
    if kind == "int":
        # bool is an int in Python but not a JSON number.
        return type(value) is int and (spec.lo or 0) <= value <= (spec.hi or 0)
    if kind == "num":
        return (
            type(value) in (int, float)
            and math.isfinite(value)
            and (spec.lo or 0) <= value <= (spec.hi or 0)
        )
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "obj":
        return isinstance(value, dict)
    choices = spec.choices or frozenset()
    if isinstance(value, str):
        return (value.strip().casefold() if spec.ignore_case else value) in choices
    # 24000.0 == 24000 and True == 1 in Python: only the exact JSON type matches a number.
    return type(value) is int and value in choices


def _check(spec: Field, value: Any, path: str, code: str, event_id: str | None) -> None:
    if not _valid(spec, value):
        raise ProtocolError(
            code,
            f"{path} must be {_expected(spec)}; got {shown(value)}.",
            event_id=event_id,
            param=path,
        )
    for name, sub in (spec.fields or {}).items():
        if name not in value or (value[name] is None and not sub.nullable):
            if sub.required:
                raise ProtocolError(
                    code,
                    f"{path + '.' if path else ''}{name} is required: {_expected(sub)}.",
                    event_id=event_id,
                    param=f"{path}.{name}" if path else name,
                )
            continue
        if value[name] is None:  # nullable: null is a value of its own
            continue
        _check(sub, value[name], f"{path}.{name}" if path else name, code, event_id)


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
    if not isinstance(data, dict):
        raise ProtocolError("invalid_event", "The event must be a JSON object.")
    event_id = data.get("event_id")
    if event_id is not None:
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
    _check(spec, payload, "", code, event_id)
    return ClientEvent(etype, event_id, payload)


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
    # Bounded whatever it quotes: an error must never be the message that passes 32 KB.
    if len(message) > MAX_ERROR_MESSAGE_CHARS:
        message = message[: MAX_ERROR_MESSAGE_CHARS - 1] + "…"
    error: dict[str, Any] = {"type": error_type, "code": code, "message": message}
    if event_id is not None:
        error["event_id"] = event_id[:MAX_ID_CHARS]
    if param is not None:
        error["param"] = param[:MAX_ID_CHARS]
    return server_event("error", error=error)


def error_from(exc: ProtocolError) -> dict[str, Any]:
    return error_event(
        exc.code, exc.message, event_id=exc.event_id, error_type=exc.error_type, param=exc.param
    )


def encode_json(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
