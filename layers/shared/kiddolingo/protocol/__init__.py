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
