"""The turn's adapters to the outside: posting its events, asking whether its response may
still post, and the gate that holds a speculative turn until its verdict.

``kiddolingo.turn`` depends only on the small ``Poster`` / ``ResponseControl`` protocols; these
are their implementations over the Messenger and the SessionStore.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from .messenger import Messenger
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
        if self.gate is not None and not self.gate.released:
            # Before its verdict a speculation posts nothing, so there is nothing to stop.
            return "cancelled" if self.gate.decided else "active"
        return await asyncio.to_thread(
            self.store.response_state, self.connection_id, self.response_id
        )


class MessengerPoster:
    """Posts a turn's events from its event loop without blocking it."""

    def __init__(self, messenger: Messenger) -> None:
        self.messenger = messenger

    async def post(self, event: dict[str, Any]) -> None:
        await asyncio.to_thread(self.messenger.post, event)


#: How often a speculation asks whether it was released or discarded.
SPEC_POLL_S = 0.03


class SpeculationGate:
    """Waits for the verdict on a speculative turn: released (the silence reached the full
    window and the append that saw it set ``spec_rel``) or discarded (speech resumed and the
    ``spec`` marker is gone or belongs to a newer speculation)."""

    def __init__(
        self, store: SessionStore, connection_id: str, spec_id: str, silence_ms: int
    ) -> None:
        self.store = store
        self.connection_id = connection_id
        self.spec_id = spec_id
        # The verdict is due once the silence window has passed; past this, withdraw.
        self.timeout_s = silence_ms / 1000 + 5.0
        self.released = False
        self.decided = False

    async def wait(self) -> bool:
        if self.decided:
            return self.released
        store, conn_id = self.store, self.connection_id
        deadline = time.monotonic() + self.timeout_s
        while True:
            item = await asyncio.to_thread(store.speculation_state, conn_id)
            if item is None:
                break
            if item.get("spec_rel") == self.spec_id:
                self.released = True
                break
            if (item.get("spec") or {}).get("id") != self.spec_id:
                break
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
    """Holds a speculative turn's posts until its gate decides: on release they go out in
    order and the turn streams on; on discard nothing is ever posted and the turn stops at
    its first audio (so it never pays for more than the first sentence's speech)."""

    def __init__(self, messenger: Messenger, gate: SpeculationGate) -> None:
        super().__init__(messenger)
        self.gate = gate
        self.buffer: list[dict[str, Any]] = []
        self.discarded = False
        self.on_release: Callable[[], None] | None = None

    async def post(self, event: dict[str, Any]) -> None:
        if self.discarded:
            return
        if not self.gate.decided:
            self.buffer.append(event)
            if event["type"] != "response.output_audio.delta":
                return
            if not await self.settle():
                from .turn import Cancelled

                raise Cancelled("speculation_discarded")
            return
        await super().post(event)

    async def settle(self) -> bool:
        """Wait for the verdict; flush what was held if released."""
        if self.discarded:
            return False
        if not await self.gate.wait():
            self.discarded = True
            self.buffer.clear()
            return False
        if self.on_release is not None:
            claim, self.on_release = self.on_release, None
            await asyncio.to_thread(claim)
        held, self.buffer = self.buffer, []
        for event in held:
            await super().post(event)
        return True
