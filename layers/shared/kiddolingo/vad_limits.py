"""The server VAD's defaults and limits, in one place.

The wire schema (``protocol``), the session configuration (``session``), the VAD itself
(``vad``) and the turn read them from here. It imports nothing of the package, so the
``$connect`` path can read the defaults without loading the VAD. The web client keeps a copy
of the defaults (``web/kiddolingo-client.js``) and says so where it does.
"""

from __future__ import annotations

from typing import Any

#: Children speak softly and pause long: a lower threshold and a longer silence than the
#: Realtime API's own defaults (0.5 and 500 ms).
DEFAULT_THRESHOLD = 0.3
DEFAULT_PREFIX_PADDING_MS = 300
DEFAULT_SILENCE_DURATION_MS = 1200
#: How much speech a candidate holds before it counts as ``speech_started`` (an extension the
#: VAD accepts; the wire schema does not offer it to clients).
DEFAULT_MIN_SPEECH_MS = 160

#: The ``turn_detection`` a new session starts with.
CHILD_VAD_DEFAULTS: dict[str, Any] = {
    "type": "server_vad",
    "threshold": DEFAULT_THRESHOLD,
    "prefix_padding_ms": DEFAULT_PREFIX_PADDING_MS,
    "silence_duration_ms": DEFAULT_SILENCE_DURATION_MS,
    "create_response": True,
    "interrupt_response": True,
    "idle_timeout_ms": None,
}

# What a client may set through ``session.update`` (inclusive ranges).
THRESHOLD_RANGE = (0.0, 1.0)
PREFIX_PADDING_MS_RANGE = (0, 2000)
SILENCE_DURATION_MS_RANGE = (200, 6000)
#: Up to the API Gateway idle timeout: an idle connection is closed by the gateway anyway.
IDLE_TIMEOUT_MS_RANGE = (1000, 600_000)

# What the VAD itself accepts. It is also configured directly (tests, the benchmark), so its
# bounds are the ones its state can hold: the prefix ring lives in a DynamoDB item (< 400 KB),
# and a silence past 10 s no longer reads as a pause. The wire range above sits inside them.
MAX_PREFIX_PADDING_MS = PREFIX_PADDING_MS_RANGE[1]
MAX_SILENCE_DURATION_MS = 10_000
MAX_MIN_SPEECH_MS = 1000
MAX_IDLE_TIMEOUT_MS = IDLE_TIMEOUT_MS_RANGE[1]
