"""An append goes on from the connection item its container's previous append left
(``store.KnownConnections``) instead of reading it: one DynamoDB call per append, and a kept
item that another writer made stale never decides anything."""

from __future__ import annotations

from collections import Counter

from kiddolingo import aws
from kiddolingo.store import KNOWN, KnownConnections, SessionStore
from tests.support.aws_stack import TABLE
from tests.support.speech import chunks, speak
from tests.test_server_vad import CONN, SILENCE, append, send, start_vad


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_kept_item_is_taken_once_and_only_while_it_is_recent() -> None:
    clock = Clock()
    known = KnownConnections(max_items=2, ttl_s=0.5, clock=clock)
    known.keep("a", {"seq": 1})
    assert known.take("a") == {"seq": 1}
    assert known.take("a") is None  # taken: the taker's commit keeps the next one
    known.keep("a", {"seq": 2})
    clock.now += 0.6
    assert known.take("a") is None  # older than a few appends: others wrote it since
    known.keep("a", {"seq": 3})
    known.keep("b", {"seq": 1})
    known.keep("c", {"seq": 1})  # bounded: the oldest goes
    assert len(known) == 2 and known.take("a") is None
    known.forget("b")
    assert known.take("b") is None and known.take("c") == {"seq": 1}


def _dynamodb_calls() -> Counter:
    calls: Counter = Counter()

    def count(model, **_kw) -> None:
        calls[model.name] += 1

    aws._client("dynamodb").meta.events.register("before-call.dynamodb", count)
    return calls


def test_an_append_after_this_containers_own_costs_one_dynamodb_call(stack) -> None:
    start_vad(stack)
    send(stack, append(1, SILENCE))  # reads the item; keeps what its commit left
    calls = _dynamodb_calls()
    for n in range(2, 7):
        send(stack, append(n, SILENCE))
    assert calls == Counter(UpdateItem=5), calls
    item = stack.connection_item(CONN)
    assert item["seq"] == 7 and item["timeline_ms"] == 600


def test_a_kept_item_that_another_container_changed_decides_nothing(stack) -> None:
    """Another container sets the response in flight between two appends of this one. The
    append that hears the child start speaking goes on from its kept item, which has no
    response: its commit must lose, and the retry (from the item as it is) barges in."""
    speech = chunks(speak("Hello, my name is Ana."))
    # Where speech_started comes, found on a connection of its own (the VAD is deterministic).
    other = "conn-probe="
    start_vad(stack, other)
    started_at = None
    for n, pcm in enumerate([SILENCE] * 3 + speech, start=1):
        send(stack, append(n, pcm), other)
        if "input_audio_buffer.speech_started" in stack.recorder.types(other):
            started_at = n
            break
    assert started_at is not None and started_at > 3

    start_vad(stack)
    audio = [SILENCE] * 3 + speech
    for n in range(1, started_at):
        send(stack, append(n, audio[n - 1]))
    assert "input_audio_buffer.speech_started" not in stack.recorder.types(CONN)
    elsewhere = SessionStore(TABLE, stack.ddb, known=KnownConnections())
    elsewhere.update_connection(CONN, "SET resp = :r", {":r": "resp_elsewhere"})
    calls = _dynamodb_calls()
    send(stack, append(started_at, audio[started_at - 1]))
    assert "input_audio_buffer.speech_started" in stack.recorder.types(CONN)
    assert stack.connection_item(CONN).get("cancel") == "resp_elsewhere"  # the child interrupted it
    # The kept item's commit lost and returned the item as it is: no read, one more write.
    assert calls["GetItem"] == 0 and calls["UpdateItem"] == 2, calls


def test_a_kept_item_behind_the_appends_number_is_read_again_not_tried(stack) -> None:
    """This container's last append of the connection was chunk 3; chunk 4 went to another
    container. Chunk 5 then arrives here: its kept item is behind for sure, and a commit from it
    could only lose (a failed write costs more than the read). It reads instead."""
    start_vad(stack)
    for n in range(1, 4):
        send(stack, append(n, SILENCE))
    behind = KNOWN.take(CONN)
    assert behind is not None and behind["seq"] == 4
    send(stack, append(4, SILENCE))  # as another container: it read the item, found nothing kept
    KNOWN.keep(CONN, behind)  # what this container still holds
    calls = _dynamodb_calls()
    send(stack, append(5, SILENCE))
    assert calls == Counter(GetItem=1, UpdateItem=1), calls
    assert stack.connection_item(CONN)["seq"] == 6
