"""Where a client event falls in its connection's stream, as pure decisions (no I/O).

API Gateway runs a connection's messages as separate Lambda invocations, concurrently and in
any order, so the order in which the handlers see them is not the order the client sent them.
Two things tell the server that order:

* **The client's numbers.** An ``event_id`` ending in ``#<n>`` (``n`` = 1, 2, 3, … per
  connection) places the event at ``n`` in one sequence shared by *all* of the connection's
  events: appends, commits, clears, session updates, truncations, response.create and cancel.
  The sequence is dense, so the server knows when one is missing and waits for it: every
  numbered event takes effect exactly in the client's order (``numbered_turn``).
* **The gateway's stamp.** API Gateway stamps every message with ``requestTimeEpoch`` (ms) when
  it receives it, and one connection's frames reach it in order over one TCP stream, so the
  stamps of un-numbered events are in sending order, to the millisecond. But they are sparse:
  the server cannot know whether an earlier event is still on its way, and two events in the
  same millisecond (a burst) have no order at all. So an un-numbered event is placed against
  the newest stamp already applied (``place``): after it, it is in order; at the same stamp or
  before it, the server may have applied the two in the wrong order, and the client is told
  (``unordered_error``), never left with scrambled audio it does not know about.

A gap in the numbered stream that never fills (the invocation of an event failed) is skipped
once the events after it have waited ``GAP_TIMEOUT_MS`` (``gap_expired``), whether or not the
parking is full, so a lost event cannot stall the session.
"""

from __future__ import annotations

import enum

from .protocol import ProtocolError

#: How long the events behind a gap in the numbered stream wait for it (gateway ms): longer
#: than a Lambda cold start, so a slow invocation is not taken for a lost one.
GAP_TIMEOUT_MS = 3000
#: An un-numbered commit or clear applies once the audio processing has been quiet this long
#: (appends that arrived just before it are then in), unless an event after it was applied.
QUIET_MS = 150
#: How long a numbered event may hold the stream while it takes effect (a session update
#: under load can take seconds) before the events behind it stop waiting for it.
HOLD_LEASE_MS = 10_000
#: The client is told about unordered events at most once in this many ms (of stamps).
TELL_EVERY_MS = 1000

REMEDY = (
    "Number your events to keep their order: give each an event_id ending in #1, #2, #3, … "
    "(one sequence per connection for all events), or send audio no faster than real time."
)


class Placement(enum.Enum):
    #: After everything applied so far: in sending order.
    IN_ORDER = "in_order"
    #: The same millisecond as an event already applied: their order is unknown.
    TIE = "tie"
    #: Sent before an event already applied: applied out of order.
    LATE = "late"


def place(last_stamp: int, stamp: int) -> Placement:
    """Where an un-numbered event stamped ``stamp`` falls against the newest stamp applied."""
    if last_stamp <= 0 or stamp > last_stamp:
        return Placement.IN_ORDER
    return Placement.TIE if stamp == last_stamp else Placement.LATE


def should_tell(last_told: int, stamp: int) -> bool:
    """Whether to tell the client about unordered events now (at most once a second)."""
    return last_told <= 0 or abs(stamp - last_told) >= TELL_EVERY_MS


class Turn(enum.Enum):
    NOW = "now"
    WAIT = "wait"
    DUPLICATE = "duplicate"


def numbered_turn(next_seq: int, n: int) -> Turn:
    """A numbered event against the connection's watermark (the next number to apply)."""
    if n < next_seq:
        return Turn.DUPLICATE
    return Turn.NOW if n == next_seq else Turn.WAIT


def gap_expired(gap_since: int, now: int) -> bool:
    """Whether the gap open since ``gap_since`` (ms; 0: none) has been waited for long enough."""
    return gap_since > 0 and now - gap_since >= GAP_TIMEOUT_MS


def held(hold: int, hold_since: int, next_seq: int, now: int) -> bool:
    """Whether the event at the watermark is taking effect right now (a gap it holds is no
    lost event: nobody skips it, until its lease runs out)."""
    return hold == next_seq and now - hold_since < HOLD_LEASE_MS


def unordered_error(what: str, event_id: str | None = None) -> ProtocolError:
    """The error that tells the client the server could not keep its events' order."""
    return ProtocolError(
        "unordered_events",
        f"{what} {REMEDY}",
        event_id=event_id,
        error_type="invalid_request_error",
    )


def append_placement_message(placement: Placement) -> str:
    if placement is Placement.TIE:
        return (
            "Audio appends reached the server in the same millisecond, so their order is "
            "unknown: this utterance's audio may be out of order."
        )
    return (
        "An audio append was processed after events sent later (a commit, or later audio): "
        "its audio is out of place."
    )
