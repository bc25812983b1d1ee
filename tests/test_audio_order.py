"""Issue 21, items 1-5, through the real audio handler under moto: the order of a connection's
events (numbered and not), a gap that never fills, a commit in server-VAD mode, and chunks too
small to carry. The same through the local gateway is in ``test_stream_order_local.py``."""

from __future__ import annotations

import base64
import json
import threading
import time

import numpy as np

from tests.support.events import connect_event, message_event
from tests.support.speech import chunks, speak

SILENCE = b"\x00\x00" * 2400  # 100 ms at 24 kHz


class Child:
    """One connection, driven event by event; each call returns the events it got."""

    def __init__(self, stack, conn: str = "conn-order=") -> None:
        self.stack, self.conn = stack, conn
        assert stack.invoke("$connect", connect_event(connection_id=conn))["statusCode"] == 200

    def send(self, body: dict, stamp: int | None = None) -> list[dict]:
        before = len(self.stack.recorder.events(self.conn))
        self.stack.invoke(
            "$default",
            message_event(json.dumps(body), connection_id=self.conn, request_time_epoch=stamp),
        )
        return self.stack.recorder.events(self.conn)[before:]

    def append(self, pcm: bytes, event_id: str | None = None, stamp: int | None = None) -> list:
        body = {"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm).decode()}
        if event_id is not None:
            body["event_id"] = event_id
        return self.send(body, stamp)

    def types(self) -> list[str]:
        return self.stack.recorder.types(self.conn)


def errors(events: list[dict]) -> list[str]:
    return [e["error"]["code"] for e in events if e["type"] == "error"]


def server_vad(child: Child) -> None:
    child.send(
        {
            "type": "session.update",
            "session": {"audio": {"input": {"turn_detection": {"type": "server_vad"}}}},
        }
    )


# ---------------------------------------------------------------------------- item 4


def test_a_commit_in_server_vad_mode_ends_the_vads_utterance_too(stack, fake_openai) -> None:
    """The page's stop button commits mid-sentence in server-VAD mode. The VAD stayed inside
    the utterance, took the silence after it for more of it, and ended it again 1.2 s later:
    a phantom utterance, and a second, billed turn on silence."""
    child = Child(stack)
    server_vad(child)
    speech = chunks(speak("I like cats and dogs."))
    n = 0
    for c in [SILENCE] * 5 + speech[: len(speech) // 2]:
        n += 1
        child.append(c, f"audio#{n}")
    assert "input_audio_buffer.speech_started" in child.types()
    fake_openai.script_transcripts("I like cats")
    events = child.send({"type": "input_audio_buffer.commit"})
    assert "input_audio_buffer.committed" in [e["type"] for e in events]
    after = len(child.types())
    for c in [SILENCE] * 25:
        n += 1
        child.append(c, f"audio#{n}")
    assert child.types()[after:] == []  # no speech_started, speech_stopped, committed, turn
    assert len(fake_openai.requests("audio/transcriptions")) == 1
    # and the next real speech is an utterance of its own
    for c in speech + [SILENCE] * 16:
        n += 1
        child.append(c, f"audio#{n}")
    assert child.types()[after:].count("input_audio_buffer.speech_started") == 1
    assert len(fake_openai.requests("audio/transcriptions")) == 2


def manual(child: Child, event_id: str | None = None, stamp: int | None = None) -> list[dict]:
    body: dict = {
        "type": "session.update",
        "session": {"audio": {"input": {"turn_detection": None}}},
    }
    if event_id is not None:
        body["event_id"] = event_id
    return child.send(body, stamp)


def tone_chunks(n: int, ms: int = 100) -> list[bytes]:
    """``n`` chunks of ``ms`` at 24 kHz, each a different tone: any reordering shows."""
    t = np.arange(24 * ms) / 24000
    return [
        (np.sin(2 * np.pi * (180.0 + 23 * i) * t) * 8000).astype("<i2").tobytes() for i in range(n)
    ]


# ---------------------------------------------------------------------------- item 1


def test_unnumbered_appends_in_the_same_millisecond_are_told(stack, fake_openai) -> None:
    """Two un-numbered appends stamped in the same millisecond have no order the server can
    know: it used to process them in whatever order the invocations ran, silently."""
    child = Child(stack)
    manual(child, stamp=1_000_000)
    a, b, c = tone_chunks(3)
    assert errors(child.append(a, stamp=1_000_100)) == []
    events = child.append(b, stamp=1_000_100)  # a burst: the same millisecond
    (error,) = [e["error"] for e in events if e["type"] == "error"]
    assert error["code"] == "unordered_events"
    assert "#1, #2, #3" in error["message"] and "event_id" in error["message"]
    # told at most once a second; the audio is kept (in arrival order)
    assert errors(child.append(c, stamp=1_000_100)) == []
    child.send({"type": "input_audio_buffer.commit"}, stamp=1_000_200)
    assert fake_openai.requests("audio/transcriptions")[0].pcm == a + b + c


def test_an_unnumbered_append_processed_after_a_later_one_is_told(stack, fake_openai) -> None:
    child = Child(stack)
    manual(child, stamp=2_000_000)
    a, b = tone_chunks(2)
    assert errors(child.append(b, stamp=2_000_200)) == []
    assert errors(child.append(a, stamp=2_000_100)) == ["unordered_events"]


def test_unnumbered_appends_stamped_in_order_are_taken_silently(stack, fake_openai) -> None:
    child = Child(stack)
    manual(child, stamp=3_000_000)
    parts = tone_chunks(5)
    for i, c in enumerate(parts):
        assert errors(child.append(c, stamp=3_000_100 + i)) == []  # 1 ms apart is enough
    child.send({"type": "input_audio_buffer.commit"}, stamp=3_000_200)
    assert fake_openai.requests("audio/transcriptions")[0].pcm == b"".join(parts)


# ---------------------------------------------------------------------------- item 2


def in_thread(fn, *args) -> threading.Thread:
    thread = threading.Thread(target=fn, args=args)
    thread.start()
    return thread


def test_numbered_events_take_effect_in_the_clients_order_whatever_the_delivery(
    stack, fake_openai
) -> None:
    """One sequence for all of a connection's events: the SDK's session.update, appends and
    commit, numbered #1 … #7, delivered commit first and update last. The commit used to run
    at once (``input_audio_buffer_commit_empty``) and the early appends under the default
    server VAD (``speech_started`` in a manual-commit session)."""
    child = Child(stack)
    parts = tone_chunks(5)
    fake_openai.script_transcripts("Hola")
    commit = in_thread(child.send, {"type": "input_audio_buffer.commit", "event_id": "e#7"})
    time.sleep(0.1)
    for n in (6, 5, 4, 3, 2):
        assert errors(child.append(parts[n - 2], event_id=f"e#{n}")) == []
    manual(child, event_id="e#1")
    commit.join(10)
    types = child.types()
    assert "input_audio_buffer.committed" in types
    assert "input_audio_buffer.speech_started" not in types
    assert not [e for e in stack.recorder.events(child.conn) if e["type"] == "error"]
    assert fake_openai.requests("audio/transcriptions")[0].pcm == b"".join(parts)
    # appends after the commit start the next utterance, and a duplicate changes nothing
    assert child.send({"type": "input_audio_buffer.commit", "event_id": "e#7"}) == []
    child.append(parts[0], event_id="e#8")
    assert stack.connection_item(child.conn)["seq"] == 9


def test_appends_numbered_after_a_commit_wait_for_it(stack, fake_openai) -> None:
    """The commit covers exactly the audio numbered before it: an append numbered after it
    that runs first is parked, and starts the next utterance."""
    child = Child(stack)
    manual(child, event_id="e#1")
    parts = tone_chunks(3)
    child.append(parts[0], event_id="e#2")
    child.append(parts[2], event_id="e#4")  # after the commit, delivered before it
    child.send({"type": "input_audio_buffer.commit", "event_id": "e#3"})
    assert fake_openai.requests("audio/transcriptions")[0].pcm == parts[0]
    child.send({"type": "input_audio_buffer.commit", "event_id": "e#5"})
    assert fake_openai.requests("audio/transcriptions")[1].pcm == parts[2]


def test_an_unnumbered_commit_waits_for_the_appends_sent_before_it(stack, fake_openai) -> None:
    """The SDK as its docs use it sends no event ids: a commit right behind the last append
    often ran first, and lost that append (or all of them)."""
    child = Child(stack)
    now = int(time.time() * 1000)
    manual(child, stamp=now)
    parts = tone_chunks(3)
    child.append(parts[0], stamp=now + 100)
    child.append(parts[1], stamp=now + 200)
    commit = in_thread(child.send, {"type": "input_audio_buffer.commit"}, now + 301)
    time.sleep(0.06)  # the last append's invocation runs late
    child.append(parts[2], stamp=now + 300)
    commit.join(10)
    assert fake_openai.requests("audio/transcriptions")[0].pcm == b"".join(parts)
    assert not [e for e in stack.recorder.events(child.conn) if e["type"] == "error"]


def test_an_unnumbered_append_processed_after_the_commit_it_preceded_is_told(
    stack, fake_openai
) -> None:
    child = Child(stack)
    manual(child, stamp=5_000_000)
    a, b = tone_chunks(2)
    child.append(a, stamp=5_000_100)
    child.send({"type": "input_audio_buffer.commit"}, stamp=5_000_300)
    assert errors(child.append(b, stamp=5_000_200)) == ["unordered_events"]


def test_an_unnumbered_session_update_overtaken_by_audio_is_told(stack, fake_openai) -> None:
    """Appends sent after a session.update ran before it, under the previous settings: the
    server cannot undo that, so it says so."""
    child = Child(stack)
    (a,) = tone_chunks(1)
    child.append(a, stamp=6_000_100)
    events = manual(child, stamp=6_000_050)
    assert [e["type"] for e in events] == ["session.updated", "error"]
    assert errors(events) == ["unordered_events"]


def test_manual_turns_after_audio_under_server_vad_each_get_an_item_and_audio_of_their_own(
    stack, fake_openai
) -> None:
    """The SDK's first appends can run under the default server VAD before its session.update
    lands (told as ``unordered_events``). The VAD's state stayed in the item after the switch to
    manual commits, and the timeline was read from it: frozen where the VAD left it. Every
    manual utterance after that started at the same millisecond, so they shared one item id
    and one S3 folder, and a turn's clean-up deleted the next turn's audio (``audio_missing``
    through the local gateway under load)."""
    child = Child(stack)
    before_update = [SILENCE] * 3 + chunks(speak("I like cats."))[:6]
    for c in before_update:
        child.append(c)
    assert "input_audio_buffer.speech_started" in child.types()  # under the default server VAD
    manual(child)
    tones = tone_chunks(6)
    turns = [tones[2 * t : 2 * t + 2] for t in range(3)]
    committed: list[str] = []
    for n, parts in enumerate(turns):
        for c in parts:
            assert errors(child.append(c)) == []
        fake_openai.script_transcripts(f"turn {n}")
        events = child.send({"type": "input_audio_buffer.commit"})
        committed += [e["item_id"] for e in events if e["type"] == "input_audio_buffer.committed"]
    assert len(committed) == 3 and len(set(committed)) == 3, committed
    heard = [r.pcm for r in fake_openai.requests("audio/transcriptions")]
    assert heard[1:] == [b"".join(parts) for parts in turns[1:]]
    assert heard[0].endswith(b"".join(turns[0]))
    # The timeline goes on with every sample appended (a reconnect resumes it from here).
    sent = sum(len(c) for c in before_update + tones)
    assert stack.connection_item(child.conn)["timeline_ms"] == sent * 1000 // (2 * 24000)


# ---------------------------------------------------------------------------- item 3


def test_a_gap_that_never_fills_is_skipped_on_time(stack, fake_openai) -> None:
    """A chunk is lost right after the child stops talking: the 3.1 s of silence after it
    (fewer chunks than the parking holds) used to wait for it forever: no turn, no answer."""
    child = Child(stack)
    server_vad(child)
    speech = chunks(speak("I like cats and dogs."))
    stream = [SILENCE] * 5 + speech + [SILENCE] * 32
    lost = 5 + len(speech) + 1
    t0 = int(time.time() * 1000)
    fake_openai.script_transcripts("I like cats and dogs.")
    for n, c in enumerate(stream, start=1):
        if n != lost:
            child.append(c, f"audio#{n}", stamp=t0 + 100 * n)
    types = child.types()
    assert "input_audio_buffer.speech_stopped" in types
    assert "input_audio_buffer.committed" in types
    assert len(fake_openai.requests("audio/transcriptions")) == 1
    item = stack.connection_item(child.conn)
    assert item["seq"] == len(stream) + 1 and not item["pend"]


def test_a_numbered_commit_behind_a_gap_that_never_fills_goes_on_without_it(
    stack, fake_openai
) -> None:
    child = Child(stack)
    manual(child, event_id="e#1")
    parts = tone_chunks(3)
    child.append(parts[0], event_id="e#2")
    child.append(parts[2], event_id="e#4")  # e#3 is lost
    started = time.monotonic()
    events = child.send({"type": "input_audio_buffer.commit", "event_id": "e#5"})
    assert time.monotonic() - started < 5
    assert "input_audio_buffer.committed" in [e["type"] for e in events]
    assert fake_openai.requests("audio/transcriptions")[0].pcm == parts[0] + parts[2]
    assert stack.connection_item(child.conn)["seq"] == 6


# ---------------------------------------------------------------------------- item 5


def test_a_stream_of_short_appends_is_refused_and_told_once(stack, fake_openai) -> None:
    """20 ms appends (50 a second) made the local stack fall behind by seconds, silently."""
    from kiddolingo import aws

    child = Child(stack)
    manual(child)
    calls: list[str] = []

    def count(**_: object) -> None:
        calls.append("dynamodb")

    client = aws._client("dynamodb")
    short = tone_chunks(10, ms=20)
    child.append(short[0])  # one short append (the end of a recording) is taken
    client.meta.events.register("before-call.dynamodb", count)
    try:
        told = [errors(child.append(c)) for c in short[1:]]
    finally:
        client.meta.events.unregister("before-call.dynamodb", count)
    assert told[0] == ["input_audio_chunk_too_short"]
    assert all(t == [] for t in told[1:])  # once, not fifty times a second
    assert calls == []  # refused before any AWS call: cheap, so nothing falls behind
    (error,) = [e["error"] for e in stack.recorder.events(child.conn) if e["type"] == "error"]
    assert "100 ms" in error["message"] and "1280 bytes" in error["message"]


def test_a_short_last_append_is_taken(stack, fake_openai) -> None:
    child = Child(stack)
    manual(child)
    parts = tone_chunks(3) + tone_chunks(1, ms=20)
    for c in parts:
        assert errors(child.append(c)) == []
    child.send({"type": "input_audio_buffer.commit"})
    assert fake_openai.requests("audio/transcriptions")[0].pcm == b"".join(parts)
