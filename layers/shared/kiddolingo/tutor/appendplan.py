"""The values one ``input_audio_buffer.append`` carries through the passes of the chunk path
(``tutor.chunkpath``), and the pure pieces of its commit plan: the speculation's changes, the
chunk's place among un-numbered events, where an utterance's speech ended.
"""

from __future__ import annotations

import concurrent.futures
import enum
import time
from dataclasses import dataclass, field, replace
from typing import Any

from .. import ingest as ingestlib
from .. import sequencing
from ..protocol import ClientEvent, ProtocolError, new_id
from ..session import SessionConfig
from ..store import lease_until
from .base import StartedTurn
from .responses import speculation_response_id


class Next(enum.Enum):
    """What the loop of ``_process_audio`` does when a pass does not write."""

    DONE = "done"
    RETRY = "retry"
    GONE = "gone"


@dataclass
class Append:
    """One ``_process_audio`` across its passes: what it still has to place, and what it
    gathered for after the last write."""

    conn: dict[str, Any]
    event: ClientEvent | None
    #: Our chunk; ``None`` once it is processed (the loop may go on closing gaps).
    own: bytes | None
    before: int | None
    hurry: bool
    #: ``conn`` is a kept item: the commit made from it must find the item unchanged.
    unverified: bool
    limited: ProtocolError | None = None
    told: ProtocolError | None = None
    to_run: list[tuple[dict[str, Any], SessionConfig, ingestlib.Utterance]] = field(
        default_factory=list
    )
    #: The turn started before the write committing its utterance.
    early: StartedTurn | None = None
    speculation: StartedTurn | None = None
    end_at: dict[str, float] = field(default_factory=dict)
    #: Events held back for the turn to post while it reads the audio (order kept).
    deferred: list[dict[str, Any]] = field(default_factory=list)
    retried: bool = False  # a lost race costs a call: the retry writes no S3 object
    #: Commit without waiting for chunks parked at the new watermark.
    lenient: bool = False
    lost: int = 0  # races lost; passes that commit progress do not count
    #: The turns-per-minute count asked for the turn this append is expected to start
    #: (``closes_by_silence``); the first turn it starts takes it (``take_admission``).
    admission: concurrent.futures.Future[bool] | None = None

    def take_admission(self) -> concurrent.futures.Future[bool] | None:
        admission, self.admission = self.admission, None
        return admission

    @property
    def hinted(self) -> int | None:
        """The client's number for our chunk, if it numbered it."""
        return self.event.sequence if self.event is not None else None


@dataclass
class Pass:
    """One pass's read of the item: the run of chunks to process and our chunk's place."""

    cfg: SessionConfig
    state: ingestlib.AudioState
    #: The append-rate window (epoch second) and the count of appends in it, ours included.
    now_s: int
    count: int
    #: Our chunk's number (0 when the append has no chunk left to place).
    seq: int
    run: tuple[tuple[int, bytes], ...]
    own_in_run: bool


@dataclass
class Plan:
    """What a pass's write commits, and the turns started before it lands."""

    result: ingestlib.IngestResult
    extra_sets: dict[str, Any]
    extra_removes: list[str]
    #: The utterances whose speculation this write releases.
    released: set[str]
    spec_start: str | None
    #: The response a barge-in cancels.
    cancel: str | None
    #: Committed utterances get a turn of their own (else they wait for response.create).
    answers: bool
    turns: list[ingestlib.Utterance]
    #: The loop goes on after the write (our chunk still ahead, or a lenient commit).
    goes_on: bool
    #: The speculative turn started on this run's pause, before the write.
    prestarted: StartedTurn | None = None
    #: The turn of the one utterance this write commits, started before the write.
    precommit: StartedTurn | None = None


def closes_by_silence(
    state: ingestlib.AudioState,
    run: tuple[tuple[int, bytes], ...],
    cfg: SessionConfig,
    spec: dict[str, Any] | None,
) -> bool:
    """Whether a pass over ``run`` is expected to end the utterance under way by its silence
    and start its turn: the server's VAD is inside an utterance, answers it itself, and the
    silence so far plus the run's audio reach the silence window, and no speculation of this
    pause will answer it (a released one was counted when it started). Speech in the run
    proves it wrong; the count asked for it is then spent for nothing, like a speculation the
    child talks over."""
    vad = state.vad
    detection = cfg.turn_detection
    if vad is None or not detection or not vad.in_utterance or spec or not cfg.create_response:
        return False
    window = int(detection.get("silence_duration_ms") or 0)
    run_ms = sum(len(chunk) for _, chunk in run) * 1000 // (2 * cfg.input_rate)
    return window > 0 and vad.silence_ms + run_ms >= window


def speech_end_at(result: ingestlib.IngestResult, utt: ingestlib.Utterance) -> float:
    """Where the child's last speech sample of ``utt`` lies in wall time (the metrics)."""
    return time.monotonic() - (result.state.audio_ms - (utt.end_ms or 0)) / 1000


def placed(
    state: ingestlib.AudioState, stamp: int, unnumbered: bool, event: ClientEvent | None
) -> tuple[ingestlib.AudioState, ProtocolError | None]:
    """An append's chunk joins the stream: the newest stamp applied moves on to its own. An
    un-numbered chunk stamped at or before that stamp may be applied out of order: the error
    that tells the client (at most once a second), or ``None``."""
    told = None
    last_told = state.last_told
    if unnumbered:
        placement = sequencing.place(state.last_stamp, stamp)
        if placement is not sequencing.Placement.IN_ORDER and sequencing.should_tell(
            state.last_told, stamp
        ):
            told = sequencing.unordered_error(
                sequencing.append_placement_message(placement),
                event.event_id if event is not None else None,
            )
            last_told = stamp
    return replace(state, last_stamp=max(state.last_stamp, stamp), last_told=last_told), told


def speculation_changes(
    spec: dict[str, Any], result: ingestlib.IngestResult, create_response: bool, lease_s: float
) -> tuple[dict[str, Any], list[str], set[str], str | None]:
    """What an ingest result does to the speculative turn: (attributes to set, to remove, the
    utterances whose speculation is released, the id of a speculation to start). A release
    takes the connection's response slot for the speculation's response in the same write:
    from then on a barge-in finds it there and cancels it, even before its first post."""
    sets: dict[str, Any] = {}
    removes: list[str] = []
    released: set[str] = set()
    if result.speech_resumed and spec:
        removes.append("spec")  # the child went on: the speculation is void
        spec = {}
    for utt in result.committed:
        if spec.get("utt") == utt.id:
            # The speculative turn for this pause is ready: let it speak.
            sets["spec_rel"] = spec["id"]
            sets["resp"] = speculation_response_id(spec["id"])
            sets["rexp"] = lease_until(lease_s)
            released.add(utt.id)
    start = None
    # The VAD only signals "speculate" when speculation is configured (a fraction > 0).
    if result.speculate is not None and not result.committed and create_response:
        start = new_id("spec")
        sets["spec"] = {"id": start, "utt": result.speculate.id}
        removes = [r for r in removes if r != "spec"] + ["spec_rel"]
    return sets, removes, released, start
