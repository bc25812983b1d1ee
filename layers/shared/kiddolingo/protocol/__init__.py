"""The wire contract: a subset of the OpenAI Realtime API (GA event names).

Where things live: ``limits`` (sizes, rates, voices, languages), ``schema`` (one schema per
client event), ``client`` (reading a client frame), ``server`` (server events and their bytes),
``errors`` (the refusal and its ``error`` event).

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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names as type checkers see them; at run time, __getattr__ below
    from .client import ClientEvent, decode_audio, parse_client_event
    from .errors import ProtocolError, error_event, error_from, shown
    from .limits import (
        DEFAULT_INPUT_RATE,
        LEARNER_AGE_RANGE,
        MAX_AUDIO_END_MS,
        MAX_ERROR_MESSAGE_CHARS,
        MAX_EVENT_BYTES,
        MAX_ID_CHARS,
        MAX_INSTRUCTIONS_CHARS,
        OUTPUT_RATE,
        SUPPORTED_INPUT_RATES,
        TARGET_LANGUAGES,
        VOICES,
    )
    from .schema import CLIENT_EVENT_SCHEMAS, CLIENT_EVENT_TYPES, TURN_DETECTION, Field
    from .server import encode_json, new_id, server_event

__all__ = [
    "CLIENT_EVENT_SCHEMAS",
    "CLIENT_EVENT_TYPES",
    "DEFAULT_INPUT_RATE",
    "LEARNER_AGE_RANGE",
    "MAX_AUDIO_END_MS",
    "MAX_ERROR_MESSAGE_CHARS",
    "MAX_EVENT_BYTES",
    "MAX_ID_CHARS",
    "MAX_INSTRUCTIONS_CHARS",
    "OUTPUT_RATE",
    "SUPPORTED_INPUT_RATES",
    "TARGET_LANGUAGES",
    "TURN_DETECTION",
    "VOICES",
    "ClientEvent",
    "Field",
    "ProtocolError",
    "decode_audio",
    "encode_json",
    "error_event",
    "error_from",
    "new_id",
    "parse_client_event",
    "server_event",
    "shown",
]

#: The submodule that holds each name of the package.
_HOMES = {
    "ClientEvent": "client",
    "decode_audio": "client",
    "parse_client_event": "client",
    "ProtocolError": "errors",
    "error_event": "errors",
    "error_from": "errors",
    "shown": "errors",
    "DEFAULT_INPUT_RATE": "limits",
    "LEARNER_AGE_RANGE": "limits",
    "MAX_AUDIO_END_MS": "limits",
    "MAX_ERROR_MESSAGE_CHARS": "limits",
    "MAX_EVENT_BYTES": "limits",
    "MAX_ID_CHARS": "limits",
    "MAX_INSTRUCTIONS_CHARS": "limits",
    "OUTPUT_RATE": "limits",
    "SUPPORTED_INPUT_RATES": "limits",
    "TARGET_LANGUAGES": "limits",
    "VOICES": "limits",
    "CLIENT_EVENT_SCHEMAS": "schema",
    "CLIENT_EVENT_TYPES": "schema",
    "TURN_DETECTION": "schema",
    "Field": "schema",
    "encode_json": "server",
    "new_id": "server",
    "server_event": "server",
}


def __getattr__(name: str) -> Any:
    """Load a name's submodule when the name is first imported.

    ``schema`` reads the VAD's ranges, and the VAD package loads numpy. The modules that need
    only a constant of the wire (the providers read ``OUTPUT_RATE``) then load ``limits`` alone,
    and stay off numpy; the chunk path imports the parser, and with it the whole of it."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value
