"""The turn's adapters: posts queued in order off the turn's path, and a failed post (410)
surfacing to the turn; the speculation gate that waits for its verdict without polling the
whole pause; a lost conditional write that brings the item along (no second read)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from kiddolingo.messenger import ConnectionGoneError
from kiddolingo.turn_io import GatedPoster, MessengerPoster, SpeculationGate


class SlowMessenger:
    connection_id = "c1"

    def __init__(self, gone_after: int | None = None, delay_s: float = 0.02) -> None:
        self.posted: list[str] = []
        self.gone_after = gone_after
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def post(self, event: dict[str, Any]) -> None:
        time.sleep(self.delay_s)
        with self.lock:
            if self.gone_after is not None and len(self.posted) >= self.gone_after:
                raise ConnectionGoneError(self.connection_id)
            self.posted.append(event["type"])


def test_posts_are_queued_in_order_without_waiting_for_them() -> None:
    async def main() -> tuple[float, list[str]]:
        messenger = SlowMessenger(delay_s=0.05)
        poster = MessengerPoster(messenger)
        t0 = time.monotonic()
        for n in range(5):
            await poster.post({"type": f"e{n}"})
        queued_in = time.monotonic() - t0
        await poster.flush()
        await poster.aclose()
        return queued_in, messenger.posted

    queued_in, posted = asyncio.run(main())
    assert queued_in < 0.05  # the turn went on while the posts went out
    assert posted == [f"e{n}" for n in range(5)]


def test_a_gone_connection_stops_the_posts_and_reaches_the_turn() -> None:
    async def main() -> tuple[list[str], list[str]]:
        messenger = SlowMessenger(gone_after=2, delay_s=0.0)
        poster = MessengerPoster(messenger)
        raised: list[str] = []
        for n in range(4):
            await poster.post({"type": f"e{n}"})
        with pytest.raises(ConnectionGoneError):
            await poster.flush()
        raised.append("flush")
        with pytest.raises(ConnectionGoneError):
            await poster.post({"type": "later"})
        raised.append("post")
        await poster.aclose()
        return messenger.posted, raised

    posted, raised = asyncio.run(main())
    assert posted == ["e0", "e1"] and raised == ["flush", "post"]


class FakeSpecStore:
    """The two reads and one write a SpeculationGate makes, over a dict."""

    def __init__(self, spec_id: str, release_at: float | None) -> None:
        self.item: dict[str, Any] = {"spec": {"id": spec_id}}
        self.spec_id = spec_id
        self.release_at = release_at
        self.reads = 0

    def speculation_state(self, _connection_id: str) -> dict[str, Any] | None:
        self.reads += 1
        if self.release_at is not None and time.monotonic() >= self.release_at:
            self.item["spec_rel"] = self.spec_id
        return dict(self.item)

    def withdraw_speculation(self, _connection_id: str, _spec_id: str) -> bool:
        return True


def test_the_gate_sleeps_until_its_verdict_is_due_then_releases_the_held_posts() -> None:
    async def main() -> tuple[FakeSpecStore, list[str], list[str]]:
        store = FakeSpecStore("spec1", release_at=time.monotonic() + 0.3)
        gate = SpeculationGate(store, "c1", "spec1", 1200, due_in_s=0.25)  # type: ignore[arg-type]
        messenger = SlowMessenger(delay_s=0.0)
        poster = GatedPoster(messenger, gate)
        claims: list[str] = []
        poster.on_release = lambda: claims.append("claimed")
        await poster.post({"type": "conversation.item.input_audio_transcription.completed"})
        await poster.post({"type": "response.created"})
        await asyncio.sleep(0.2)
        assert messenger.posted == [] and store.reads == 0  # held, and no polling yet
        await asyncio.sleep(0.25)
        # released in the background: the held posts went out without waiting for audio
        await poster.flush()
        await poster.post({"type": "response.output_audio.delta"})
        await poster.flush()
        await poster.aclose()
        return store, messenger.posted, claims

    store, posted, claims = asyncio.run(main())
    assert claims == ["claimed"]
    assert posted == [
        "conversation.item.input_audio_transcription.completed",
        "response.created",
        "response.output_audio.delta",
    ]
    assert store.reads <= 6  # polled from when the verdict was due, not through the pause


def test_a_discarded_speculation_posts_nothing_and_stops_at_its_first_audio() -> None:
    from kiddolingo.turn import Cancelled

    async def main() -> list[str]:
        store = FakeSpecStore("spec1", release_at=None)
        store.item = {"spec": {"id": "spec2"}}  # a newer pause took over: discarded
        gate = SpeculationGate(store, "c1", "spec1", 1200)  # type: ignore[arg-type]
        messenger = SlowMessenger(delay_s=0.0)
        poster = GatedPoster(messenger, gate)
        await poster.post({"type": "response.created"})
        with pytest.raises(Cancelled):
            await poster.post({"type": "response.output_audio.delta"})
        await poster.post({"type": "response.done"})
        await poster.flush()
        await poster.aclose()
        return messenger.posted

    assert asyncio.run(main()) == []


def test_a_lost_conditional_write_brings_the_item_along(stack) -> None:
    from kiddolingo import aws
    from kiddolingo.store import ConflictError

    store = aws.session_store()
    store.bind_connection("c-race", "sess_x", "ana", {}, 0)
    store.update_connection("c-race", "SET seq = :s", {":s": 7})
    with pytest.raises(ConflictError) as info:
        store.update_connection(
            "c-race",
            "SET seq = :n",
            {":n": 9, ":v": 3},
            condition="seq = :v",
            item_on_conflict=True,
        )
    assert info.value.item is not None and info.value.item["seq"] == 7
    store.delete_connection("c-race")
    with pytest.raises(ConflictError) as gone:
        store.update_connection("c-race", "SET seq = :n", {":n": 1}, item_on_conflict=True)
    assert gone.value.item is None  # the connection is gone


def test_a_called_off_speculation_is_discarded_at_once_without_a_read() -> None:
    async def main() -> tuple[float, FakeSpecStore, list[str]]:
        store = FakeSpecStore("spec1", release_at=None)  # the marker says "still pausing"
        gate = SpeculationGate(store, "c1", "spec1", 1200, due_in_s=5.0)  # type: ignore[arg-type]
        messenger = SlowMessenger(delay_s=0.0)
        poster = GatedPoster(messenger, gate)
        await poster.post({"type": "response.created"})  # the verdict task sleeps until due
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        gate.call_off()
        assert await poster.settle() is False
        waited = time.monotonic() - t0
        await poster.flush()
        await poster.aclose()
        return waited, store, messenger.posted

    waited, store, posted = asyncio.run(main())
    assert waited < 0.5 and store.reads == 0 and posted == []
