"""Issue 4 through the real audio handler under moto: server VAD turns, concurrency-safe
sequencing (burst, duplicate, swapped neighbours), barge-in and truncation."""

from __future__ import annotations

import base64
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kiddolingo.conversation import load_history
from tests.support.events import connect_event, message_event
from tests.support.speech import chunks, speak

CONN = "conn-vad="
SILENCE = b"\x00\x00" * 2400  # 100 ms at 24 kHz
#: How the end of an utterance opens its turn, in this order.
TURN_OPENS = (
    "input_audio_buffer.speech_stopped",
    "input_audio_buffer.committed",
    "conversation.item.input_audio_transcription.completed",
    "response.created",
)


def send(stack, body: dict, conn: str = CONN) -> None:
    stack.invoke("$default", message_event(json.dumps(body), connection_id=conn))


def append(n: int, pcm: bytes) -> dict:
    return {
        "type": "input_audio_buffer.append",
        "event_id": f"audio#{n}",
        "audio": base64.b64encode(pcm).decode(),
    }


def start_vad(stack, conn: str = CONN, **td) -> None:
    assert stack.invoke("$connect", connect_event(connection_id=conn))["statusCode"] == 200
    send(
        stack,
        {
            "type": "session.update",
            "session": {"audio": {"input": {"turn_detection": {"type": "server_vad", **td}}}},
        },
        conn,
    )


def utterance_chunks() -> list[bytes]:
    """0.5 s silence, a real spoken sentence, then 1.6 s of silence: one turn."""
    pcm = speak("I like cats and dogs.")
    return [SILENCE] * 5 + chunks(pcm) + [SILENCE] * 16


def vad_view(stack, fake_openai, conn: str = CONN) -> tuple[list[tuple], bytes | None]:
    events = stack.recorder.events(conn)
    marks = [
        (e["type"], e.get("audio_start_ms", e.get("audio_end_ms")))
        for e in events
        if e["type"].startswith("input_audio_buffer.speech")
    ]
    reqs = fake_openai.requests("audio/transcriptions")
    return marks, (reqs[0].wav if reqs else None)


def test_server_vad_ends_the_turn_and_answers(stack, fake_openai) -> None:
    start_vad(stack)
    for n, c in enumerate(utterance_chunks(), start=1):
        send(stack, append(n, c))
    types = stack.recorder.types(CONN)
    i = types.index("input_audio_buffer.speech_started")
    assert types[i : i + 5] == ["input_audio_buffer.speech_started", *TURN_OPENS]
    assert types[-1] == "response.done"
    started = next(
        e for e in stack.recorder.events(CONN) if e["type"] == "input_audio_buffer.speech_started"
    )
    assert 400 <= started["audio_start_ms"] <= 700  # speech begins after 0.5 s of silence
    # only speech + prefix padding reached S3, and it was deleted after the turn
    wav = fake_openai.requests("audio/transcriptions")[0].wav
    total_ms = len(b"".join(utterance_chunks())) / 48
    assert len(wav) / 48 < total_ms - 300
    assert stack.audio_keys() == []


def commits_a_turn(body: dict) -> bool:
    """The append's write that ends the first utterance and starts its turn (the first to
    record an item id as the last one)."""
    return (
        body["Key"]["pk"]["S"].startswith("conn#")
        and "aver" in body["UpdateExpression"]
        and ":li" in body["ExpressionAttributeValues"]
    )


def turns_left_on_the_loop() -> list[str]:
    """The turns still running on the process loop."""
    import asyncio

    from kiddolingo import runtime

    async def turns() -> list[str]:
        coros = [t.get_coro() for t in asyncio.all_tasks()]
        return [repr(c) for c in coros if getattr(c, "__qualname__", "") == "Turns._turn"]

    return runtime.run(turns())


def test_the_turn_transcribes_while_its_committing_write_is_on_its_way(stack, fake_openai) -> None:
    """The append that ends the utterance starts the transcription before its write lands (a
    DynamoDB round trip off the child's wait), but posts nothing until it has landed."""
    from kiddolingo import aws

    seen: dict[str, object] = {}

    def hold_the_write(params: dict, **_: object) -> None:
        if seen or not commits_a_turn(json.loads(params["body"])):
            return
        deadline = time.monotonic() + 10
        while not fake_openai.requests("audio/transcriptions") and time.monotonic() < deadline:
            time.sleep(0.01)
        seen["transcribing"] = bool(fake_openai.requests("audio/transcriptions"))
        seen["posted"] = stack.recorder.types(CONN)

    aws._client("dynamodb").meta.events.register_first(
        "before-call.dynamodb.UpdateItem", hold_the_write
    )
    start_vad(stack)
    for n, c in enumerate(utterance_chunks(), start=1):
        send(stack, append(n, c))

    assert seen["transcribing"] is True  # the request reached the provider before the write
    posted_before = seen["posted"]
    assert isinstance(posted_before, list)
    assert "input_audio_buffer.speech_started" in posted_before
    assert "input_audio_buffer.speech_stopped" not in posted_before  # nothing before it landed
    types = stack.recorder.types(CONN)
    i = types.index("input_audio_buffer.speech_stopped")
    assert types[i : i + 4] == list(TURN_OPENS)
    assert types.count("response.created") == 1 and types[-1] == "response.done"
    assert stack.audio_keys() == []


def test_a_lost_race_on_the_committing_write_still_gives_one_answer(stack, fake_openai) -> None:
    """The write that would commit the turn loses a race after the turn has started: that turn
    stops without a post, a claim or a chat request, and the append's retry commits the
    utterance anew. The child gets exactly one answer, in order, and nothing is left behind."""
    from tests.test_faults import inject_conflicts

    start_vad(stack)
    conflicts = inject_conflicts(commits_a_turn, times=1)
    for n, c in enumerate(utterance_chunks(), start=1):
        send(stack, append(n, c))

    assert conflicts.raised == 1
    assert turns_left_on_the_loop() == []  # the called-off turn ended, it does not hang on
    events = stack.recorder.events(CONN)
    types = [e["type"] for e in events]
    i = types.index("input_audio_buffer.speech_stopped")
    assert types[i : i + 4] == list(TURN_OPENS)
    assert types.count("input_audio_buffer.speech_stopped") == 1
    assert types.count("conversation.item.input_audio_transcription.completed") == 1
    assert types.count("response.created") == 1 and types[-1] == "response.done"
    assert events[-1]["response"]["status"] == "completed"
    assert [e for e in events if e["type"] == "error"] == []
    assert len(fake_openai.requests("chat")) == 1
    sid = stack.connection_item(CONN)["sid"]
    assert [h["role"] for h in load_history(stack.session_item(sid)["hist"])] == [
        "user",
        "assistant",
    ]
    assert stack.audio_keys() == []


@pytest.mark.parametrize("delivery", ["burst", "duplicate", "swap"])
def test_out_of_order_delivery_gives_the_in_order_result(stack, fake_openai, delivery) -> None:
    frames = utterance_chunks()
    # reference: in order, on one connection
    start_vad(stack, conn="conn-ref=")
    for n, c in enumerate(frames, start=1):
        send(stack, append(n, c), conn="conn-ref=")
    ref_marks, ref_wav = vad_view(stack, fake_openai, "conn-ref=")
    assert ref_wav and ref_marks
    fake_openai.reset()

    start_vad(stack)
    bodies = [append(n, c) for n, c in enumerate(frames, start=1)]
    if delivery == "burst":
        # the first 20 appends land at once, concurrently, in random order
        head, rest = bodies[:20], bodies[20:]
        random.Random(4).shuffle(head)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda b: send(stack, b), head))
        for b in rest:
            send(stack, b)
    elif delivery == "duplicate":
        for b in bodies:
            send(stack, b)
            if int(b["event_id"].split("#")[1]) % 3 == 0:
                send(stack, b)  # delivered twice
    else:
        for i in range(0, len(bodies) - 1, 2):
            send(stack, bodies[i + 1])
            send(stack, bodies[i])
        if len(bodies) % 2:
            send(stack, bodies[-1])
    marks, wav = vad_view(stack, fake_openai)
    assert marks == ref_marks
    assert wav == ref_wav  # same utterance audio: nothing lost, doubled or reordered
    assert len(fake_openai.requests("audio/transcriptions")) == 1


def test_barge_in_stops_the_reply_and_history_keeps_what_was_heard(stack, fake_openai) -> None:
    long_reply = " ".join(f"Frase número {i}, muy bonita." for i in range(1, 9))
    fake_openai.script_replies(long_reply, "¡Vale! (Okay!)")
    fake_openai.script_transcripts("I like cats", "stop please")
    fake_openai.set_latency(speech_realtime_factor=1.0)  # speech streams in real time
    start_vad(stack)
    frames = utterance_chunks()
    interrupt = chunks(speak("Stop please."))

    # API Gateway invokes a Lambda per message, concurrently: the turn runs inside the append
    # that ended the utterance while the next appends arrive on other invocations.
    pool = ThreadPoolExecutor(max_workers=16)
    futures = []
    seq = 0

    def child_speaks(frames_: list[bytes]) -> None:
        nonlocal seq
        for c in frames_:
            seq += 1
            futures.append(pool.submit(send, stack, append(seq, c)))
            time.sleep(0.03)  # 3× faster than real time

    child_speaks(frames)
    deadline = time.monotonic() + 10
    while "response.output_audio.delta" not in stack.recorder.types(CONN):
        assert time.monotonic() < deadline, "no audio before the barge-in"
        time.sleep(0.02)
    time.sleep(1.2)  # the child hears about a second of the reply, then talks over it
    child_speaks(interrupt)
    while stack.recorder.types(CONN).count("input_audio_buffer.speech_started") < 2:
        assert time.monotonic() < deadline + 10, [
            (e["type"], e.get("error"))
            for e in stack.recorder.events(CONN)
            if "delta" not in e["type"]
        ]
        time.sleep(0.02)
    # the client stops playback at once and says how much it played: 700 ms
    item_id = next(
        e for e in stack.recorder.events(CONN) if e["type"] == "response.output_audio.delta"
    )["item_id"]
    futures.append(
        pool.submit(
            send,
            stack,
            {
                "type": "conversation.item.truncate",
                "item_id": item_id,
                "content_index": 0,
                "audio_end_ms": 700,
            },
        )
    )
    child_speaks([SILENCE] * 16)
    for f in futures:
        f.result(timeout=30)
    pool.shutdown()

    events = stack.recorder.events(CONN)
    first_created = next(e for e in events if e["type"] == "response.created")
    done = [
        e
        for e in events
        if e["type"] == "response.done" and e["response"]["id"] == first_created["response"]["id"]
    ]
    assert not [e for e in events if e["type"] == "error"]
    assert done[0]["response"]["status"] == "cancelled"
    assert done[0]["response"]["status_details"]["reason"] == "turn_detected"
    # posting stopped: far less audio than the whole reply, and speech was not fully paid for
    first_id = done[0]["response"]["id"]
    posted_ms = sum(
        len(base64.b64decode(e["delta"])) / 48
        for e in events
        if e["type"] == "response.output_audio.delta" and e["response_id"] == first_id
    )
    assert posted_ms < len(long_reply) * 60 / 2
    speech_inputs = [r.text for r in fake_openai.realtime_responses()]
    assert len([s for s in speech_inputs if s.startswith("Frase")]) < 8

    assert done[0]["response"]["output"][0]["id"] == item_id
    truncated = [
        e for e in stack.recorder.events(CONN) if e["type"] == "conversation.item.truncated"
    ]
    assert truncated, stack.recorder.events(CONN)[-1]
    assert truncated[0]["audio_end_ms"] <= 700
    sid = stack.connection_item(CONN)["sid"]
    hist = load_history(stack.session_item(sid)["hist"])
    heard = next(h for h in hist if h["id"] == item_id)
    assert heard["text"] and len(heard["text"]) < len("Frase número 1, muy bonita.")
    # the next chat request shows the trimmed text
    chats = fake_openai.requests("chat/completions")
    assert len(chats) == 2
    assert heard["text"] in [m["content"] for m in chats[-1].messages]
    assert long_reply not in [m["content"] for m in chats[-1].messages]


def test_truncating_an_unknown_item_is_an_error(stack) -> None:
    start_vad(stack)
    send(
        stack,
        {
            "type": "conversation.item.truncate",
            "item_id": "item_nope",
            "content_index": 0,
            "audio_end_ms": 10,
        },
    )
    err = stack.recorder.events(CONN)[-1]
    assert err["type"] == "error" and err["error"]["code"] == "item_not_found"


def test_without_create_response_the_turn_waits_for_response_create(stack, fake_openai) -> None:
    fake_openai.script_transcripts("I like cats and dogs")
    start_vad(stack, create_response=False)
    for n, c in enumerate(utterance_chunks(), start=1):
        send(stack, append(n, c))
    types = stack.recorder.types(CONN)
    assert "input_audio_buffer.committed" in types and "response.created" not in types
    assert stack.audio_keys()  # the committed audio waits in S3 for the reply
    send(stack, {"type": "response.create"})
    events = stack.recorder.events(CONN)
    done = [e for e in events if e["type"] == "response.done"]
    assert done and done[0]["response"]["status"] == "completed"
    transcripts = [
        e["transcript"]
        for e in events
        if e["type"] == "conversation.item.input_audio_transcription.completed"
    ]
    assert transcripts == ["I like cats and dogs"]
    assert stack.audio_keys() == []
    assert stack.connection_item(CONN).get("ready") is None


def test_an_input_rate_change_after_audio_goes_on_at_the_new_rate(stack, fake_openai) -> None:
    """A client whose 16 kHz ``session.update`` lands after its first appends were read at the
    default 24 kHz (API Gateway runs them concurrently): the VAD goes on at 16 kHz from the same
    timeline position, and the turn is heard and transcribed at 16 kHz. No append fails."""
    start_vad(stack)
    for n in range(1, 6):  # 0.5 s read as 24 kHz audio
        send(stack, append(n, SILENCE))
    send(
        stack,
        {
            "type": "session.update",
            "session": {"audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}}}},
        },
    )
    quiet = b"\x00\x00" * 1600  # 100 ms at 16 kHz
    pcm = speak("I like cats and dogs.", rate=16000)
    frames = [quiet] * 3 + chunks(pcm, rate=16000) + [quiet] * 16
    for n, c in enumerate(frames, start=6):
        send(stack, append(n, c))
    events = stack.recorder.events(CONN)
    assert [e for e in events if e["type"] == "error"] == []
    started = next(e for e in events if e["type"] == "input_audio_buffer.speech_started")
    assert 700 <= started["audio_start_ms"] <= 900  # 0.5 s, then 0.3 s of 16 kHz quiet
    assert stack.recorder.types(CONN)[-1] == "response.done"
    (req,) = fake_openai.requests("audio/transcriptions")
    assert req.sample_rate == 16000
    assert len(req.pcm) >= len(pcm) * 0.8  # the speech, at its own rate
