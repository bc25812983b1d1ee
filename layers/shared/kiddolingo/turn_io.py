"""The turn's adapters to the outside: posting its events, asking whether its response may
still post, and the gate that holds a speculative turn until its verdict.

``kiddolingo.turn`` depends only on the small ``Poster`` / ``ResponseControl`` protocols; these
are their implementations over the Messenger and the SessionStore.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .messenger import Messenger
from .post_joining import next_post
from .protocol import OUTPUT_RATE, server_event
from .store import SessionStore


class StoreResponseControl:
    """``active``, ``cancelled`` or ``gone``: asked before every sentence and posted batch."""

    def __init__(
        self,
        store: SessionStore,
        connection_id: str,
        response_id: str,
        gate: SpeculationGate | None = None,
    ) -> None:
        self.store = store
        self.connection_id = connection_id
        self.response_id = response_id
        self.gate = gate

    async def state(self) -> str:
        gate = self.gate
        if gate is not None and not gate.claimed:
            # Before its verdict a speculation posts nothing: it only asks whether the child
            # went on speaking (then it stops paying for chat and speech).
            if not gate.decided:
                await gate.poll()
            return "cancelled" if gate.decided and not gate.released else "active"
        return await asyncio.to_thread(
            self.store.response_state, self.connection_id, self.response_id
        )


class MessengerPoster:
    """Posts a turn's events in order without making the turn wait for them.

    ``post`` queues the event and returns; one worker posts the queue in order, audio deltas
    queued back to back joined into as few messages as carry them (``next_post``). A failure
    (``ConnectionGoneError``: the child's connection is gone) is raised by the next ``post``
    or by ``flush``, which waits until everything queued is posted."""

    def __init__(self, messenger: Messenger) -> None:
        self.messenger = messenger
        self._pending: deque[dict[str, Any]] = deque()
        self._wake: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        #: The response of the last ``response.created`` posted and not yet ended by its
        #: ``response.done``: what a turn that fails unexpectedly must still end.
        self.open_response: dict[str, Any] | None = None

    async def post(self, event: dict[str, Any]) -> None:
        self._raise_error()
        if event["type"] == "response.created":
            self.open_response = event.get("response")
        elif event["type"] == "response.done":
            self.open_response = None
        if self._wake is None or self._idle is None:
            self._wake, self._idle = asyncio.Event(), asyncio.Event()
            self._worker = asyncio.create_task(self._run(self._wake, self._idle))
        self._pending.append(event)
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        if self._idle is not None:
            await self._idle.wait()
        self._raise_error()

    async def aclose(self) -> None:
        """Stop the worker (what is still queued is dropped)."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(BaseException):
                await self._worker

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    async def _run(self, wake: asyncio.Event, idle: asyncio.Event) -> None:
        pending = self._pending
        while True:
            if not pending:
                idle.set()
                wake.clear()
                await wake.wait()
                continue
            if self._error is not None:  # after a failure nothing more is posted
                pending.clear()
                continue
            # Taken only now, when the last post is done: whatever audio queued up meanwhile
            # goes out in the fewest messages.
            event = next_post(pending)
            try:
                await asyncio.to_thread(self.messenger.post, event)
            except Exception as exc:
                self._error = exc


class WriteLost(Exception):
    """The append's write that would commit this turn lost its race: the turn stops, silently."""


class WriteVerdict:
    """Whether the append's write that commits a turn landed, for a turn started before it.

    The append that ends an utterance starts the turn's audio read and transcription while its
    conditional write is on its way (that write takes as long as a DynamoDB round trip), and
    tells the turn from its own thread how the write went. Until then the turn posts nothing and
    claims nothing: on ``landed`` it posts the append's events first (``speech_stopped``,
    ``committed``) and goes on; on ``lost`` it stops (``WriteLost``), and the append's retry
    commits the utterance anew."""

    def __init__(self) -> None:
        # A thread-safe one-shot: set from the append's thread, awaited on the process loop.
        self._outcome: concurrent.futures.Future[tuple[dict[str, Any], ...] | None] = (
            concurrent.futures.Future()
        )
        #: Set by the turn once it has posted the events that came with the verdict.
        self.announced = False

    def landed(self, announce: tuple[dict[str, Any], ...]) -> None:
        self._outcome.set_result(announce)

    def lost(self) -> None:
        if not self._outcome.done():
            self._outcome.set_result(None)

    async def wait(self) -> tuple[dict[str, Any], ...]:
        """The events to post first, once the write landed; raises ``WriteLost`` if it lost."""
        announce = await asyncio.wrap_future(self._outcome)
        if announce is None:
            raise WriteLost
        return announce


#: How often a speculation asks whether it was released or discarded, once the verdict is due.
SPEC_POLL_S = 0.02


class SpeculationGate:
    """Waits for the verdict on a speculative turn: released (the silence reached the full
    window and the append that saw it set ``spec_rel``) or discarded (speech resumed and the
    ``spec`` marker is gone or belongs to a newer speculation).

    ``due_in_s``: when the verdict can first be expected (the rest of the silence window);
    the gate sleeps until then instead of polling DynamoDB through the whole pause."""

    def __init__(
        self,
        store: SessionStore,
        connection_id: str,
        spec_id: str,
        silence_ms: int,
        due_in_s: float = 0.0,
    ) -> None:
        self.store = store
        self.connection_id = connection_id
        self.spec_id = spec_id
        self.due_at = time.monotonic() + max(0.0, due_in_s)
        # The verdict is due once the silence window has passed; past this, withdraw.
        self.timeout_s = silence_ms / 1000 + 5.0
        self.released = False
        self.decided = False
        #: Set once a released speculation holds the connection's response slot.
        self.claimed = False
        self._created = time.monotonic()
        self._due = asyncio.Event()

    def call_off(self) -> None:
        """Discard this speculation here and now (its marker was never written)."""
        self.released, self.decided = False, True
        self._due.set()

    def ask_now(self) -> None:
        """Stop sleeping until the verdict is due: the turn has audio ready to post."""
        self._due.set()

    def _verdict_of(self, item: dict[str, Any] | None) -> bool | None:
        if item is None:
            return False  # the connection is gone
        if item.get("spec_rel") == self.spec_id:
            return True
        if (item.get("spec") or {}).get("id") != self.spec_id:
            return False  # the child went on speaking (or a newer pause took over)
        return None

    async def poll(self) -> bool | None:
        """One look now, before the verdict is due: ``False`` once the child went on speaking
        (the turn stops paying for chat and speech), ``True`` released, ``None`` not yet."""
        if self.decided:
            return self.released
        item = await asyncio.to_thread(self.store.speculation_state, self.connection_id)
        verdict = self._verdict_of(item)
        if verdict is not None and not self.decided:  # the first look to see it decides
            self.released, self.decided = verdict, True
            self._due.set()
        return self.released if self.decided else None

    async def wait(self) -> bool:
        if self.decided:
            return self.released
        store, conn_id = self.store, self.connection_id
        deadline = self._created + self.timeout_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._due.wait(), max(0.0, self.due_at - time.monotonic()))
        while await self.poll() is None:
            if time.monotonic() > deadline:
                # No verdict: withdraw, unless the release lands at this very moment.
                self.released = not await asyncio.to_thread(
                    store.withdraw_speculation, conn_id, self.spec_id
                )
                break
            await asyncio.sleep(SPEC_POLL_S)
        self.decided = True
        return self.released


class GatedPoster(MessengerPoster):
    """Holds a speculative turn's posts until its gate decides. The verdict is awaited in the
    background from the first post on: on release the held posts go out at once, in order, and
    the turn streams on; on discard nothing is ever posted and the turn stops at its first
    audio at the latest (so it never pays for more than the first sentence's speech)."""

    def __init__(self, messenger: Messenger, gate: SpeculationGate) -> None:
        super().__init__(messenger)
        self.gate = gate
        self.buffer: list[dict[str, Any]] = []
        self.discarded = False
        #: Claims the connection's response slot; called once, on release, before any post.
        self.on_release: Callable[[], None] | None = None
        self._open = False
        self._verdict: asyncio.Task[bool] | None = None

    async def post(self, event: dict[str, Any]) -> None:
        if self.discarded:
            return
        if self._open:
            await super().post(event)
            return
        self.buffer.append(event)
        self._decision()
        if event["type"] != "response.output_audio.delta":
            return
        self.gate.ask_now()
        if not await self.settle():
            from .turn import Cancelled

            raise Cancelled("speculation_discarded")

    async def settle(self) -> bool:
        """Wait for the verdict (and, if released, for the held posts to be queued)."""
        if self.discarded:
            return False
        return await asyncio.shield(self._decision())

    def _decision(self) -> asyncio.Task[bool]:
        """The background wait for the verdict, started by the first post."""
        if self._verdict is None:
            self._verdict = asyncio.create_task(self._decide())
        return self._verdict

    async def _decide(self) -> bool:
        if not await self.gate.wait():
            self.discarded = True
            self.buffer.clear()
            return False
        if self.on_release is not None:
            claim, self.on_release = self.on_release, None
            await asyncio.to_thread(claim)
        self.gate.claimed = True
        # Queued in one go (no await in between): later posts cannot overtake them.
        held, self.buffer = self.buffer, []
        for event in held:
            await MessengerPoster.post(self, event)
        self._open = True
        return True


#: ``status_details`` of a turn that ended on an error it did not expect.
TURN_FAILED = {
    "type": "failed",
    "error": {
        "type": "server_error",
        "code": "turn_failed",
        "message": "Something went wrong; please try again.",
    },
}


def failed_response_events(
    open_response: dict[str, Any] | None, response_id: str, voice: str
) -> list[dict[str, Any]]:
    """What ends a turn that failed unexpectedly: ``response.done`` ``failed`` for the
    response the client saw created, or, when it never got that far, for ``response_id``
    with its ``response.created`` first (so the client's wait for an answer ends too)."""
    events = []
    response = open_response
    if response is None:
        response = {
            "object": "realtime.response",
            "id": response_id,
            "status": "in_progress",
            "output": [],
            "output_modalities": ["audio"],
            "audio": {
                "output": {"format": {"type": "audio/pcm", "rate": OUTPUT_RATE}, "voice": voice}
            },
        }
        events.append(server_event("response.created", response=response))
    done = {**response, "status": "failed", "status_details": TURN_FAILED}
    events.append(server_event("response.done", response=done))
    return events
