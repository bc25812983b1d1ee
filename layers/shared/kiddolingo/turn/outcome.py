"""What a turn is asked to do (:class:`TurnRequest`) and what came of it (:class:`TurnOutcome`),
with the moments it measures on the way (:class:`TurnTimings`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..conversation import Segment, join_segments
from ..providers.base import Usage
from ..providers.errors import ProviderError


def ms_since(t0: float) -> float:
    return (time.monotonic() - t0) * 1000.0


@dataclass
class TurnTimings:
    started: float = field(default_factory=time.monotonic)
    transcription_ms: float | None = None
    chat_first_token_ms: float | None = None
    speech_first_byte_ms: float | None = None
    first_audio_ms: float | None = None
    #: Monotonic time of the child's last speech sample (voice-to-voice in the metrics).
    speech_end_at: float | None = None


@dataclass
class TurnOutcome:
    response_id: str
    item_id: str
    status: str  # completed | cancelled | failed
    reason: str | None = None
    user_text: str | None = None
    user_flagged: bool = False
    segments: list[Segment] = field(default_factory=list)
    timings: TurnTimings = field(default_factory=TurnTimings)
    error: ProviderError | None = None
    #: Sentences the voice model strayed from (reworded past the tolerance): cut short.
    strayed: int = 0
    #: What the providers billed for this turn.
    usage: Usage = field(default_factory=Usage)

    @property
    def text(self) -> str:
        return join_segments([s.text for s in self.segments])


class Cancelled(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class TurnRequest:
    response_id: str
    item_id: str
    messages_for: Callable[[str | None], list[dict[str, str]]]
    voice: str
    target_language: str
    temperature: float
    max_tokens: int
    moderation: bool = True
    #: ``conversation.item.input_audio_transcription.completed`` of the child's words, posted
    #: first, once the words passed moderation (a placeholder in their place if they did not).
    user_event: dict[str, Any] | None = None
