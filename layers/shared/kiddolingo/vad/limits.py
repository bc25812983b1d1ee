"""The server VAD's defaults and limits: the one home of these numbers.

The wire schema (``protocol``), the session configuration (``session``), the VAD's own
configuration (:class:`~kiddolingo.vad.config.VadConfig`) and the turn read them from here, so a
value a client may send is a value the VAD accepts and the other way round. This module imports
nothing. The web client keeps a copy of the defaults (``web/kiddolingo-client.js``), which a test
compares with :data:`CHILD_VAD_DEFAULTS`.
"""

from __future__ import annotations

from typing import Any

#: Analysis frame length. Every frame boundary is a whole millisecond on the timeline.
FRAME_MS = 20
#: The input rates the VAD can analyse; the wire offers a subset (``protocol``).
SAMPLE_RATES = (8000, 16000, 24000)
DEFAULT_SAMPLE_RATE = 24000

#: Children speak softly and pause long: a lower threshold and a longer silence than the
#: Realtime API's own defaults (0.5 and 500 ms).
DEFAULT_THRESHOLD = 0.3
DEFAULT_PREFIX_PADDING_MS = 300
DEFAULT_SILENCE_DURATION_MS = 1200
#: How much speech a candidate holds before it counts as ``speech_started`` (an extension the
#: VAD accepts; the wire schema does not offer it to clients).
DEFAULT_MIN_SPEECH_MS = 160
#: Of every pause inside an utterance (and of the silence that ends it), only the first this
#: many milliseconds become utterance audio. Transcription needs no more, and the child's
#: silence is then neither stored, uploaded nor billed per second.
DEFAULT_MAX_PAUSE_KEPT_MS = 400

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

# The inclusive ranges of each setting. The wire schema offers the first four to clients
# through ``session.update``, and the VAD refuses anything outside them however it is
# configured (tests and the benchmark build a VadConfig directly). The prefix ring lives in a
# DynamoDB item (< 400 KB), which bounds the padding.
THRESHOLD_RANGE = (0.0, 1.0)
PREFIX_PADDING_MS_RANGE = (0, 2000)
SILENCE_DURATION_MS_RANGE = (200, 6000)
#: Up to the API Gateway idle timeout: an idle connection is closed by the gateway anyway.
IDLE_TIMEOUT_MS_RANGE = (1000, 600_000)
#: The VAD's own extension, not on the wire.
MIN_SPEECH_MS_RANGE = (0, 1000)
