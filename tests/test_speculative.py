"""Issue 5: an answer prepared during the child's pause — released when the pause turns out to
be the end of the turn, discarded (never posted, never stored, streams closed) when the child
goes on speaking. Appends are delivered concurrently and in real time, as API Gateway does."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kiddolingo.conversation import load_history
from tests.support.speech import chunks, speak
from tests.test_server_vad import CONN, SILENCE, append, send, start_vad


@pytest.fixture
def speculative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SPECULATIVE_FRACTION", "0.15")


def trimmed(pcm: bytes) -> bytes:
    """espeak-ng pads its speech with silence: cut it, so a pause is exactly what we add."""
    import numpy as np

    x = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(x) > 300)
    return x[loud[0] : loud[-1] + 1].tobytes() if loud.size else b""


def deliver_in_real_time(stack, frames: list[bytes]) -> None:
    """One invocation per append, 100 ms apart, concurrently like API Gateway."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = []
        for n, frame in enumerate(frames, start=1):
            futures.append(pool.submit(send, stack, append(n, frame)))
            time.sleep(0.1)
        for f in futures:
            f.result(timeout=30)


def test_a_released_speculation_answers_the_turn(speculative, stack, fake_openai) -> None:
    start_vad(stack)
    deliver_in_real_time(stack, [SILENCE] * 3 + chunks(speak("I like cats.")) + [SILENCE] * 16)

    events = stack.recorder.events(CONN)
    types = [e["type"] for e in events]
    stopped = types.index("input_audio_buffer.speech_stopped")
    # nothing of the prepared answer went out before the end of the turn
    assert "response.created" not in types[:stopped]
    assert types[stopped : stopped + 4] == [
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.created",
    ]
    assert types[-1] == "response.done"
    assert events[-1]["response"]["status"] == "completed"
    # one answer reached the child, prepared during the pause (a short pause inside the
    # sentence may have been speculated on and discarded too: never posted)
    assert types.count("response.created") == 1
    assert types.count("conversation.item.input_audio_transcription.completed") == 1
    sid = stack.connection_item(CONN)["sid"]
    hist = load_history(stack.session_item(sid)["hist"])
    assert [h["role"] for h in hist] == ["user", "assistant"]
    assert stack.audio_keys() == []


def test_a_speculation_is_discarded_when_the_child_goes_on(speculative, stack, fake_openai) -> None:
    # the transcript depends on how much audio was sent: speculation sees only the first half
    fake_openai.transcriber = lambda rec: (
        "I like cats and dogs" if len(rec.wav or b"") > 48_000 * 2.2 else "I like"
    )
    start_vad(stack)
    pause = [SILENCE] * 6  # 0.6 s: past the speculation point, short of the 1.2 s window
    frames = (
        [SILENCE] * 3
        + chunks(trimmed(speak("I like")) + b"".join(pause) + trimmed(speak("cats and dogs.")))
        + [SILENCE] * 16
    )
    deliver_in_real_time(stack, frames)

    events = stack.recorder.events(CONN)
    transcripts = [
        e["transcript"]
        for e in events
        if e["type"] == "conversation.item.input_audio_transcription.completed"
    ]
    # the speculation ran (a transcription of the first half) but never reached the child
    assert "I like" in [r.response_text for r in fake_openai.requests("audio/transcriptions")]
    assert transcripts == ["I like cats and dogs"]
    assert [e["type"] for e in events].count("response.created") == 1
    sid = stack.connection_item(CONN)["sid"]
    hist = load_history(stack.session_item(sid)["hist"])
    assert next((h["role"], h["text"]) for h in hist) == ("user", "I like cats and dogs")
    assert len(hist) == 2
    # the discarded speculation stopped paying: at most its first sentence was synthesized
    speech = fake_openai.realtime_responses()
    finished = [s for s in speech if s.finished]
    assert len(speech) - len(finished) <= 2


def test_a_lost_race_on_the_speculating_write_still_gives_one_answer(
    speculative, stack, fake_openai
) -> None:
    """The speculation starts before its append's write lands; that write loses a race, the
    retry speculates anew: the child gets exactly one answer, prepared in the pause, and the
    first speculation never posts nor reaches the chat model. (That ``call_off`` stops it at
    once, without a read, is tested in ``tests/test_turn_io.py``.)"""
    from tests.test_faults import inject_conflicts

    def marks_speculation(body: dict) -> bool:
        return (
            body["Key"]["pk"]["S"].startswith("conn#")
            and "spec" in (body.get("ExpressionAttributeNames") or {}).values()
        )

    start_vad(stack)
    conflicts = inject_conflicts(marks_speculation, times=1)
    deliver_in_real_time(stack, [SILENCE] * 3 + chunks(speak("I like cats.")) + [SILENCE] * 16)

    assert conflicts.raised == 1
    events = stack.recorder.events(CONN)
    types = [e["type"] for e in events]
    assert types.count("response.created") == 1 and types[-1] == "response.done"
    assert events[-1]["response"]["status"] == "completed"
    assert types.count("conversation.item.input_audio_transcription.completed") == 1
    assert [e for e in events if e["type"] == "error"] == []
    assert stack.audio_keys() == []
    # the called-off speculation went no further than its transcription: one chat request
    assert len(fake_openai.requests("chat")) == 1


def test_a_speculation_refused_before_its_marker_lands_still_tells_the_child(
    speculative, monkeypatch, stack, fake_openai
) -> None:
    """The turn limit refuses a speculation before the write that marks it has landed (the
    speculation starts while that write is on its way). A withdrawal of the marker at that
    moment finds nothing to withdraw; the marker then lands, and the pause's end releases it
    with nobody left to answer: no reply, no error, the response slot taken until its lease
    ran out. The refused speculation waits for its verdict instead, and tells the child."""
    import json
    import threading

    from kiddolingo import aws
    from tests.support.aws_stack import TABLE
    from tests.test_faults import Client, configure
    from tests.test_limits import in_one_minute

    configure(monkeypatch, MAX_TURNS_PER_MINUTE="1")
    # The provider clients are built by an earlier turn (of another session), as in a warm
    # container, so the speculation asks the limit at once.
    assert Client(stack, conn="conn-warm=").turn()[-1]["response"]["status"] == "completed"
    fake_openai.reset()
    start_vad(stack)
    sid = stack.connection_item(CONN)["sid"]
    frames = [SILENCE] * 3 + chunks(speak("I like cats.")) + [SILENCE] * 16
    in_one_minute(len(frames) / 10 + 10)
    # Another connection of the session used this minute's turn.
    stack.ddb.put_item(
        TableName=TABLE,
        Item={
            "pk": {"S": f"turns#{sid}#{int(time.time() // 60)}"},
            "count": {"N": "1"},
        },
    )
    asked, withdrawing = threading.Event(), threading.Event()
    held: list[str] = []

    def marker_lands_after_the_refusal(params: dict, **_: object) -> None:
        body = json.loads(params["body"])
        key = body["Key"]["pk"]["S"]
        if key.startswith("turns#"):
            asked.set()
        elif key.startswith("conn#") and "spec.id = :s" in body.get("ConditionExpression", ""):
            withdrawing.set()  # (the code before this fix withdrew the marker here)
        elif (
            key.startswith("conn#")
            and "spec" in (body.get("ExpressionAttributeNames") or {}).values()
            and not held
        ):
            held.append(key)
            assert asked.wait(10)
            # The refusal is back (and any withdrawal made) before the marker is written.
            withdrawing.wait(2)
            time.sleep(0.2)

    client = aws._client("dynamodb")
    client.meta.events.register_first(
        "before-call.dynamodb.UpdateItem", marker_lands_after_the_refusal
    )
    try:
        deliver_in_real_time(stack, frames)
    finally:
        client.meta.events.unregister(
            "before-call.dynamodb.UpdateItem", marker_lands_after_the_refusal
        )

    events = stack.recorder.events(CONN)
    assert held
    types = [e["type"] for e in events]
    assert [e["error"]["code"] for e in events if e["type"] == "error"] == ["rate_limited"]
    assert types.index("input_audio_buffer.committed") < types.index("error")
    assert "response.created" not in types
    assert fake_openai.requests("audio/transcriptions") == []
    assert "resp" not in stack.connection_item(CONN)  # the response slot is free
