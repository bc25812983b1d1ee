"""The schema of the client events: one declarative :class:`Field` tree per event type, and
the check that walks a payload through it."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..vad import limits as vad
from . import limits as wire
from .errors import ProtocolError, shown


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


def _str(lo: int = 0, hi: int = wire.MAX_EVENT_BYTES, **kw: Any) -> Field:
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


_ID = _str(1, wire.MAX_ID_CHARS)

#: What ``session.audio.input.turn_detection`` may hold (null means manual commits).
TURN_DETECTION = _obj(
    nullable=True,
    type=_choice("server_vad"),
    threshold=_num(*vad.THRESHOLD_RANGE),
    prefix_padding_ms=_int(*vad.PREFIX_PADDING_MS_RANGE),
    silence_duration_ms=_int(*vad.SILENCE_DURATION_MS_RANGE),
    idle_timeout_ms=_int(*vad.IDLE_TIMEOUT_MS_RANGE, nullable=True),
    create_response=_bool(),
    interrupt_response=_bool(),
)

_SESSION = _obj(
    required=True,
    type=_choice("realtime"),
    # Who may set it is decided where the connection is known (kiddolingo.session).
    instructions=_str(0, wire.MAX_INSTRUCTIONS_CHARS, nullable=True),
    audio=_obj(
        input=_obj(
            format=_obj(type=_choice("audio/pcm"), rate=_choice(*wire.SUPPORTED_INPUT_RATES)),
            turn_detection=TURN_DETECTION,
        ),
        output=_obj(
            format=_obj(type=_choice("audio/pcm"), rate=_choice(wire.OUTPUT_RATE)),
            voice=_choice(*wire.VOICES),
        ),
    ),
    tutor=_obj(
        target_language=_choice(*wire.TARGET_LANGUAGES, ignore_case=True),
        learner_age=_int(*wire.LEARNER_AGE_RANGE),
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
            item_id=Field("str", lo=1, hi=wire.MAX_ID_CHARS, required=True),
            content_index=_int(0, 0),
            audio_end_ms=_num(0, wire.MAX_AUDIO_END_MS, required=True),
        ),
    ),
    # ``response.response`` (per-response settings) is not supported and ignored, as unknown
    # fields are: its instructions never reach the tutor.
    "response.create": ("invalid_event", _obj()),
    "response.cancel": ("invalid_event", _obj(response_id=_ID)),
}

CLIENT_EVENT_TYPES = frozenset(CLIENT_EVENT_SCHEMAS)


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


def check(spec: Field, value: Any, path: str, code: str, event_id: str | None) -> None:
    """Raise :class:`ProtocolError` (with ``code``) at the first part of ``value`` at ``path``
    that ``spec`` does not allow."""
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
        check(sub, value[name], f"{path}.{name}" if path else name, code, event_id)
