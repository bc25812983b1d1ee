"""Where an append's chunk goes in its connection's stream, as pure code: a duplicate to drop,
a chunk to park ahead of a gap, or a run of chunks to process from the watermark (after
skipping a gap that waited too long). The package's docstring tells why."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass, replace

from .. import sequencing
from .limits import MAX_PARKED_BYTES, MAX_PARKED_CHUNKS
from .state import AudioState

log = logging.getLogger(__name__)


class Verdict(enum.Enum):
    #: The chunk was processed or parked already: a duplicate delivery.
    DUPLICATE = "duplicate"
    #: The chunk is ahead of a gap: it waits in the connection item.
    PARK = "park"
    #: ``RunOrder.run`` is to be processed.
    RUN = "run"
    #: Nothing can be processed now.
    IDLE = "idle"


@dataclass(frozen=True)
class RunOrder:
    """What to do with an append's chunk and the chunks parked after the watermark."""

    verdict: Verdict
    #: The audio state, its watermark moved past a gap that was skipped.
    state: AudioState
    #: The contiguous chunks to process, (number, audio), from the watermark on.
    run: tuple[tuple[int, bytes], ...] = ()
    #: The append's own chunk is in ``run``.
    own_in_run: bool = False


def order_run(
    state: AudioState,
    own: bytes | None,
    seq: int,
    stamp: int,
    *,
    before: int | None = None,
    hurry: bool = False,
) -> RunOrder:
    """Place chunk ``seq`` (``own``; ``None``: the caller has no chunk, it only processes
    what is parked at the watermark) against the watermark, at gateway stamp ``stamp``.

    ``before``: no chunk numbered ``before`` or later joins the run (they come after the
    numbered event that holds the stream). ``hurry``: a gap is skipped now, the event at
    ``before`` waited for it long enough."""
    run: list[tuple[int, bytes]] = []
    own_in_run = False
    if own is not None:
        if seq < state.next_seq or seq in state.pending:
            return RunOrder(Verdict.DUPLICATE, state)
        if (
            seq > state.next_seq
            and not _held(state, stamp)
            and (parking_full(state, own) or sequencing.gap_expired(state.gap_since, stamp))
        ):
            # The missing event is not coming (its invocation failed): skip the gap rather
            # than stall the session, and go on from the oldest parked chunk (or ours, if it
            # is older); ours joins the run when the run reaches it.
            state = _skip_to(state, min([*state.pending, seq]))
        elif seq > state.next_seq:
            return RunOrder(Verdict.PARK, state)
        else:
            run.append((seq, own))
            own_in_run = True
    elif state.pending and state.next_seq not in state.pending:
        # Nothing of our own: a gap at the watermark is skipped once it waited too long.
        behind = [p for p in state.pending if before is None or p < before]
        if (
            behind
            and (hurry or sequencing.gap_expired(state.gap_since, stamp))
            and not _held(state, stamp)
        ):
            state = _skip_to(state, min(behind))
    ahead = state.pending
    if own is not None and not own_in_run:
        ahead = {**ahead, seq: own}  # after a skip: ours joins the run if it reaches it
    nxt = state.next_seq + len(run)
    while nxt in ahead and (before is None or nxt < before):
        run.append((nxt, ahead[nxt]))
        own_in_run = own_in_run or nxt == seq
        nxt += 1
    return RunOrder(Verdict.RUN if run else Verdict.IDLE, state, tuple(run), own_in_run)


def parking_full(state: AudioState, pcm: bytes) -> bool:
    """Whether parking ``pcm`` too would pass the item's bound on parked chunks or bytes."""
    parked = sum(len(v) for v in state.pending.values()) + len(pcm)
    return len(state.pending) >= MAX_PARKED_CHUNKS or parked > MAX_PARKED_BYTES


def _held(state: AudioState, stamp: int) -> bool:
    return sequencing.held(state.hold, state.hold_since, state.next_seq, stamp)


def _skip_to(state: AudioState, first: int) -> AudioState:
    log.warning("skipping %d lost event(s)", first - state.next_seq)
    return replace(state, next_seq=first)
