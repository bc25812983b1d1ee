"""The connection's event order: a numbered event waits for the ones before it and holds the
stream while it takes effect; an un-numbered commit or clear waits for the appends in flight.
The rules themselves are pure, in ``kiddolingo.sequencing``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from .. import ingest as ingestlib
from .. import sequencing
from ..protocol import ClientEvent, error_from
from ..store import ConflictError
from .base import SETTLE_WAIT_S
from .chunkpath import ChunkPath

log = logging.getLogger(__name__)


class StreamOrder(ChunkPath):
    """Waiting for, holding and passing on the connection's stream."""

    def _take_turn(self, conn: dict[str, Any], number: int) -> dict[str, Any] | None:
        """Wait until the connection's stream reaches a numbered event (the events before it
        took effect), and hold it there: the connection item as it is then, or ``None`` for a
        duplicate delivery (or a connection gone). Once the stream has not moved for
        ``sequencing.GAP_TIMEOUT_MS`` (and no event before is taking effect), the events still
        missing before it are skipped: what is parked before it is processed without them."""
        wait_s = sequencing.GAP_TIMEOUT_MS / 1000
        deadline = time.monotonic() + wait_s
        seen: tuple[int, int] | None = None
        hurry = False
        # Each look is a read of the connection item: the wait backs off from 20 ms to 250 ms,
        # so events waiting in a burst do not crowd out (or pay for) the ones they wait for.
        pause = 0.02
        for _ in range(10_000):  # bounded by the deadline; this only stops a runaway
            state = ingestlib.AudioState.from_connection(conn)
            turn = sequencing.numbered_turn(state.next_seq, number)
            if turn is sequencing.Turn.DUPLICATE:
                return None
            if turn is sequencing.Turn.NOW:
                # Marked as taking effect: the events behind it wait, however long it takes.
                try:
                    conn = (
                        self.store.hold_stream(self.connection_id, number, int(time.time() * 1000))
                        or conn
                    )
                except ConflictError:
                    return None  # the stream went on without it meanwhile
                self._holding = number
                return conn
            progress = (state.next_seq, state.version)
            now_ms = int(time.time() * 1000)
            if not hurry and progress != seen:
                seen, deadline = progress, time.monotonic() + wait_s  # it moves: wait on
            elif sequencing.held(state.hold, state.hold_since, state.next_seq, now_ms):
                deadline = max(deadline, time.monotonic() + 0.1)  # the event before is running
            if time.monotonic() >= deadline:
                hurry = True
                if any(p < number for p in state.pending):
                    self._process_audio(conn, None, None, before=number, hurry=True)
                    latest = self.store.get_connection(self.connection_id)
                    if latest is None:
                        return None
                    state = ingestlib.AudioState.from_connection(latest)
                if state.next_seq < number and not any(p < number for p in state.pending):
                    log.warning("skipping %d lost event(s)", number - state.next_seq)
                    with contextlib.suppress(ConflictError):
                        self.store.skip_to(self.connection_id, number, state.version)
            else:
                time.sleep(pause)
                pause = min(pause * 1.5, 0.25)
            latest = self.store.get_connection(self.connection_id)
            if latest is None:
                return None
            conn = latest
        raise ConflictError("too many concurrent writers")

    def _pass_turn(self) -> None:
        """Let the stream go on past the numbered event that holds it (once it took effect),
        and process the chunks that waited for it."""
        number, self._holding = self._holding, None
        if number is None:
            return
        try:
            item = self.store.pass_stream(self.connection_id, number)
        except ConflictError:
            return  # the stream went on without it (or the connection is gone)
        if item and item.get("pend"):
            self._process_audio(item, None, None)

    def _overtaken(self, state: ingestlib.AudioState, what: str, event: ClientEvent) -> None:
        """Tell the client that events sent after this un-numbered one took effect first."""
        if event.sequence is None and state.last_stamp > self._stamp:
            self.post(
                error_from(
                    sequencing.unordered_error(
                        f"Audio sent after this {what} was processed before it.", event.event_id
                    )
                )
            )

    def _settled_audio(
        self, conn: dict[str, Any], event: ClientEvent
    ) -> tuple[dict[str, Any], ingestlib.AudioState]:
        """Wait (briefly) for appends still in flight. A numbered event holds the stream, so
        every append before it is in. For an un-numbered one, a gap means one is on its way;
        and the appends sent just before it may still be running: it waits until the audio
        processing has been quiet for ``QUIET_MS``, or an event sent after it was processed."""
        deadline = time.monotonic() + SETTLE_WAIT_S
        state = ingestlib.AudioState.from_connection(conn)
        if event.sequence is not None:
            return conn, state
        quiet_s = sequencing.QUIET_MS / 1000
        changed = time.monotonic()
        while time.monotonic() < deadline:
            # With no audio yet, the commit waits for it all the settle time: a commit of
            # nothing is an error, and its appends are likely still on their way.
            quiet = time.monotonic() - changed >= quiet_s and state.utterance is not None
            if not state.pending and (state.last_stamp > self._stamp or quiet):
                break
            time.sleep(0.03)
            latest = self.store.get_connection(self.connection_id) or conn
            newer = ingestlib.AudioState.from_connection(latest)
            if newer.version != state.version:
                changed = time.monotonic()
            conn, state = latest, newer
        return conn, state
