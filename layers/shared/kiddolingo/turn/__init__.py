"""One tutor turn: the child's audio → transcript → chat (streamed) → speech (streamed) → posts.

The turn is written against small ports (Pipecat style): a ``Transcriber``, a ``ChatModel``, a
``SpeechSynth``, a ``Moderator`` (``kiddolingo.providers``), a ``Poster`` and a
``ResponseControl`` that answers "may this response still post?" (:mod:`.ports`). Nothing here
builds an AWS or OpenAI client or imports an adapter, so the tests drive it with real providers
against the fake server and real stores under moto, or with anything else that fits.

Latency: sentences are cut as tokens arrive; speech for a sentence starts the moment it is
complete, and the next sentence is synthesized while the current one is posted. Barge-in: the
control is asked before every sentence and every posted batch; on cancel the chat and speech
streams are closed, so a cancelled reply stops costing money.

What the child hears is what was moderated: a voice model that reports what it said
(``SpeechSession.reports_transcript``, the Realtime API) is checked as it speaks
(:class:`~kiddolingo.speech_text.SpokenCheck`); a sentence that strays from its text stops being
posted at once, is counted (``outcome.strayed``), and the reply goes on with the next sentence.
The transcript the model reports is also what the child sees and what the history keeps, so the
text on screen is the text spoken.

The modules:

- :mod:`.ports`: ``Poster``, ``ResponseControl`` and ``ConnectionGoneError``;
- :mod:`.outcome`: ``TurnRequest``, ``TurnOutcome``, ``TurnTimings``, ``Cancelled``;
- :mod:`.events`: the reply's ``realtime.response`` and audio-part events;
- :mod:`.speech`: one sentence's speech (``SpeechJob``) and its posts (``SentencePost``);
- :mod:`.runner`: ``TurnRunner``, the reply itself.

Only the ports load with the package: the audio-chunk path reaches them through the messenger
and must not load asyncio or the providers (its cold start). The other names load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .ports import ConnectionGoneError, Poster, ResponseControl

if TYPE_CHECKING:
    from .outcome import Cancelled, TurnOutcome, TurnRequest, TurnTimings
    from .runner import FLAGGED_PLACEHOLDER, TurnRunner
    from .speech import EST_MS_PER_CHAR, MAX_DELTA_PCM, MIN_DELTA_PCM, POST_DELTA_PCM, SpeechJob

__all__ = [
    "EST_MS_PER_CHAR",
    "FLAGGED_PLACEHOLDER",
    "MAX_DELTA_PCM",
    "MIN_DELTA_PCM",
    "POST_DELTA_PCM",
    "Cancelled",
    "ConnectionGoneError",
    "Poster",
    "ResponseControl",
    "SpeechJob",
    "TurnOutcome",
    "TurnRequest",
    "TurnRunner",
    "TurnTimings",
]

#: Where each name that loads on first use lives.
_LAZY = {
    "Cancelled": "outcome",
    "TurnOutcome": "outcome",
    "TurnRequest": "outcome",
    "TurnTimings": "outcome",
    "FLAGGED_PLACEHOLDER": "runner",
    "TurnRunner": "runner",
    "EST_MS_PER_CHAR": "speech",
    "MAX_DELTA_PCM": "speech",
    "MIN_DELTA_PCM": "speech",
    "POST_DELTA_PCM": "speech",
    "SpeechJob": "speech",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
