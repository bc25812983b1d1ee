"""Issue 6 §3: limits, each with a clear ``error`` event and the session going on.

Appends per second, turns per minute, the longest utterance (a forced commit), the history kept
in the chat context and in the DynamoDB item, the largest event. Through the real handlers.
"""

from __future__ import annotations

import base64
import json
import time

from kiddolingo.conversation import load_history
from kiddolingo.protocol import MAX_EVENT_BYTES
from tests.support.aws_stack import TABLE
from tests.support.speech import speak
from tests.test_faults import (
    Client,
    assert_completed_turn,
    chat_context,
    configure,
    done,
    errors,
    tone,
    types,
)

DYNAMODB_ITEM_LIMIT = 400 * 1024


def _size(value: object) -> int:
    """DynamoDB's item size rules, rounded up: UTF-8 strings, raw binary, numbers up to 21
    bytes, 3 bytes per list or map plus 1 per element (and the map keys)."""
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, bool) or value is None:
        return 1
    if isinstance(value, int | float):
        return 21
    if isinstance(value, dict):
        return 3 + sum(1 + len(str(k).encode()) + _size(v) for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return 3 + sum(1 + _size(v) for v in value)
    raise TypeError(type(value))


def item_bytes(item: dict) -> int:
    """The size DynamoDB counts against its 400 KB item limit (an upper bound)."""
    return sum(len(k.encode()) + _size(v) for k, v in item.items())


def next_second() -> None:
    time.sleep(1.05 - time.time() % 1)


# --------------------------------------------------------------------------- appends / second


def test_appends_per_second(monkeypatch, stack, fake_openai) -> None:
    configure(monkeypatch, MAX_APPENDS_PER_SECOND="3")
    fake_openai.script_transcripts("Hola", "Otra vez")
    fake_openai.script_replies("¡Hola! (Hello!)", "¡Muy bien! (Very good!)")
    child = Client(stack)
    chunk = tone(100)
    next_second()
    results = [child.append(chunk) for _ in range(6)]
    limited = [r for r in results if errors(r)]
    assert limited, "a burst over the limit is refused"
    for events in limited:
        (error,) = [e["error"] for e in events]
        assert error["code"] == "rate_limited" and error["type"] == "rate_limit_error"
        assert error["event_id"].startswith("audio#")
    accepted = len(results) - len(limited)

    # the session goes on: the accepted audio makes a turn ...
    next_second()
    events = child.send({"type": "input_audio_buffer.commit"})
    assert_completed_turn(events, "¡Hola! (Hello!)")
    assert len(fake_openai.requests("audio/transcriptions")[-1].pcm) == accepted * len(chunk)
    # ... and the next utterance, numbered on from where the client was, is heard whole
    # (a refused append must not leave a gap that parks every later chunk)
    events = []
    for _ in range(3):
        events += child.append(chunk)
    events += child.send({"type": "input_audio_buffer.commit"})
    assert errors(events) == []
    assert_completed_turn(events, "¡Muy bien! (Very good!)")
    assert fake_openai.requests("audio/transcriptions")[-1].pcm == chunk * 3


# --------------------------------------------------------------------------- turns / minute


def in_one_minute(seconds: float) -> None:
    """Wait, if need be, until the next ``seconds`` stay inside one clock minute: turns per
    minute are counted per clock minute, and a count that starts again halfway through a test
    would let its last turn in."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.05)


def test_turns_per_minute(monkeypatch, stack, fake_openai) -> None:
    configure(monkeypatch, MAX_TURNS_PER_MINUTE="2")
    fake_openai.script_transcripts("Uno", "Dos", "Tres")
    child = Client(stack)
    in_one_minute(15)
    for _ in range(2):
        assert done(child.turn())["status"] == "completed"

    events = child.turn()
    assert types(events) == ["input_audio_buffer.committed", "error"]
    (error,) = [e["error"] for e in events if e["type"] == "error"]
    assert error["code"] == "rate_limited" and error["type"] == "rate_limit_error"
    assert len(fake_openai.requests("audio/transcriptions")) == 2  # no turn at all
    assert stack.audio_keys() == []  # the refused turn's audio is not kept either
    # response.create is a turn too
    assert errors(child.send({"type": "response.create"})) == ["rate_limited"]
    assert len(fake_openai.requests("chat/completions")) == 2
    assert [r for r, _ in child.history()] == ["user", "assistant"] * 2

    # the session goes on
    assert types(child.send({"type": "session.update", "session": {}})) == ["session.updated"]
    configure(monkeypatch, MAX_TURNS_PER_MINUTE="3")
    assert done(child.turn())["status"] == "completed"


def test_the_turn_limit_starts_again_each_minute(monkeypatch, stack, fake_openai) -> None:
    configure(monkeypatch, MAX_TURNS_PER_MINUTE="1")
    child = Client(stack)
    in_one_minute(10)
    assert done(child.turn())["status"] == "completed"
    assert errors(child.turn()) == ["rate_limited"]
    # the count belongs to a minute that has passed
    minute = int(time.time() // 60)
    key = {"pk": {"S": f"turns#{child.sid}#{minute}"}}
    count = stack.ddb.get_item(TableName=TABLE, Key=key)["Item"]
    assert count["count"] == {"N": "1"}
    stack.ddb.delete_item(TableName=TABLE, Key=key)
    count["pk"] = {"S": f"turns#{child.sid}#{minute - 1}"}
    stack.ddb.put_item(TableName=TABLE, Item=count)
    assert done(child.turn())["status"] == "completed"


def test_the_turn_limit_is_the_sessions_whatever_the_connection(
    monkeypatch, stack, fake_openai
) -> None:
    """A reconnect or a second connection to the same session shares the session's count."""
    configure(monkeypatch, MAX_TURNS_PER_MINUTE="2")
    first = Client(stack, conn="conn-first=")
    in_one_minute(15)
    assert done(first.turn())["status"] == "completed"
    second = Client(stack, conn="conn-second=", session_id=first.sid)  # both open at once
    assert done(second.turn())["status"] == "completed"
    assert errors(second.turn()) == ["rate_limited"]
    assert errors(first.turn()) == ["rate_limited"]
    first.disconnect()
    second.disconnect()
    again = Client(stack, conn="conn-again=", session_id=first.sid)
    assert errors(again.send({"type": "response.create"})) == ["rate_limited"]
    assert len(fake_openai.requests("audio/transcriptions")) == 2
    assert len(fake_openai.requests("chat/completions")) == 2


def test_concurrent_turns_of_one_session_are_counted_atomically(
    monkeypatch, stack, fake_openai
) -> None:
    """Six connections of one session ask for a response at the same moment: exactly the
    limit's worth reach the chat model; every other one is told."""
    from concurrent.futures import ThreadPoolExecutor

    configure(monkeypatch, MAX_TURNS_PER_MINUTE="2")
    first = Client(stack, conn="conn-c0=")
    children = [first] + [
        Client(stack, conn=f"conn-c{i}=", session_id=first.sid) for i in range(1, 6)
    ]
    in_one_minute(15)
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda c: c.send({"type": "response.create"}), children))
    refused = [r for r in results if errors(r) == ["rate_limited"]]
    assert len(refused) == 4
    assert len(fake_openai.requests("chat/completions")) == 2


def test_speculative_turns_count_against_the_turn_limit(monkeypatch, stack, fake_openai) -> None:
    """With speculation on (the default), a voice turn reaches the providers while the child
    is still pausing: those turns count too. Whatever reaches the transcription stays within
    the limit, and the child hears why the third answer does not come."""
    from tests.support.speech import chunks, speak
    from tests.test_server_vad import CONN, SILENCE, start_vad
    from tests.test_speculative import deliver_in_real_time

    configure(monkeypatch, MAX_TURNS_PER_MINUTE="2", SPECULATIVE_FRACTION="0.15")
    # The provider SDK is loaded by an earlier turn (of another session), as in a warm
    # container: a first speculation slower than the next utterance is a known gap (README).
    assert done(Client(stack, conn="conn-warm=").turn())["status"] == "completed"
    fake_openai.reset()
    start_vad(stack)
    sentence = chunks(speak("I like cats."))
    frames = [SILENCE] * 3 + (sentence + [SILENCE] * 16) * 3
    in_one_minute(len(frames) / 10 + 10)
    deliver_in_real_time(stack, frames)

    assert len(fake_openai.requests("audio/transcriptions")) <= 2
    events = stack.recorder.events(CONN)
    codes = [e["error"]["code"] for e in events if e["type"] == "error"]
    # Every utterance is answered or told why not. How many are answered depends on the
    # timing (under load the VAD may join two phrases, and a speculation the child talks over
    # counts too), never more than the limit.
    utterances = [e["type"] for e in events].count("input_audio_buffer.speech_stopped")
    answered = [e["type"] for e in events].count("response.created")
    assert 1 <= answered <= 2
    assert codes == ["rate_limited"] * (utterances - answered)
    assert [e["type"] for e in events].count("response.done") == answered
    assert stack.audio_keys() == []


# --------------------------------------------------------------------------- longest utterance


def test_forced_commit_at_the_longest_utterance(monkeypatch, stack, fake_openai) -> None:
    configure(monkeypatch, MAX_UTTERANCE_MS="1000")
    pcm = speak("Yo tengo un perro grande y un gato pequeño", pad_s=1.5)
    assert len(pcm) / 48000 > 2.5
    fake_openai.script_transcripts("Yo tengo un perro grande", "y un gato")
    child = Client(stack, vad={"type": "server_vad", "silence_duration_ms": 1000})
    events = child.stream(pcm, chunk_ms=200)
    assert errors(events) == []
    started = [e for e in events if e["type"] == "input_audio_buffer.speech_started"]
    stopped = [e for e in events if e["type"] == "input_audio_buffer.speech_stopped"]
    committed = [e for e in events if e["type"] == "input_audio_buffer.committed"]
    assert len(committed) >= 2
    # every item the forced commits cut out of the speech was announced by its speech_started
    assert {e["item_id"] for e in committed} <= {e["item_id"] for e in started}
    # the utterance was cut at the limit while the child was still speaking, and again for
    # the speech that went on (each piece a turn of at most the limit's worth of audio)
    assert 1000 <= stopped[0]["audio_end_ms"] - started[0]["audio_start_ms"] <= 1000 + 200
    assert stopped[1]["audio_end_ms"] - stopped[0]["audio_end_ms"] <= 1000 + 200
    for request in fake_openai.requests("audio/transcriptions"):
        assert len(request.pcm) <= (1000 + 300 + 200) * 48
    assert types(events).count("response.done") == len(committed)
    assert child.history()[0] == ("user", "Yo tengo un perro grande")


def test_manual_mode_commits_at_the_longest_utterance(monkeypatch, stack, fake_openai) -> None:
    """A client in manual mode that never commits (a microphone left on): at the longest
    utterance the server commits for it, the child gets an answer to what was said and an
    error says why; nothing grows without bound."""
    configure(monkeypatch, MAX_UTTERANCE_MS="1000")
    fake_openai.script_transcripts("Uno", "Dos", "Tres")
    child = Client(stack)  # manual mode (turn_detection null)
    pcm = tone(2500)
    events = child.stream(pcm)
    assert types(events).count("input_audio_buffer.committed") == 2
    assert errors(events) == ["utterance_too_long"] * 2
    assert "input_audio_buffer.speech_stopped" not in types(events)
    assert types(events).count("response.done") == 2
    heard = [r.pcm for r in fake_openai.requests("audio/transcriptions")]
    assert [len(p) for p in heard] == [48_000, 48_000]  # 1000 ms each, in order
    # the client's own commit takes the rest
    events = child.send({"type": "input_audio_buffer.commit"})
    assert done(events)["status"] == "completed"
    heard = [r.pcm for r in fake_openai.requests("audio/transcriptions")]
    assert b"".join(heard) == pcm
    assert stack.audio_keys() == []


def test_the_audio_waiting_for_response_create_is_bounded(monkeypatch, stack, fake_openai) -> None:
    """create_response false: committed utterances wait for response.create, which answers
    them in one turn. Past the longest utterance's worth the oldest are dropped (audio and
    all), with an error; the newest are answered."""
    # The three utterances are streamed faster than real time: not a test of the append rate.
    configure(monkeypatch, MAX_UTTERANCE_MS="1000", MAX_APPENDS_PER_SECOND="1000")
    fake_openai.script_transcripts("Tres")
    child = Client(
        stack,
        vad={"type": "server_vad", "silence_duration_ms": 500, "create_response": False},
    )
    codes = []
    for word in ("uno", "dos", "tres"):
        events = child.stream(speak(word, pad_s=0.8))
        codes += errors(events)
        assert "input_audio_buffer.committed" in types(events)
    ready = stack.connection_item(child.conn)["ready"]
    assert codes and set(codes) == {"committed_audio_dropped"}
    assert 1 <= len(ready) < 3
    assert sum(int(u["end"]) - int(u["start"]) for u in ready) <= 1000
    kept = {u["id"] for u in ready}
    assert {k.split("/")[2] for k in stack.audio_keys()} == kept  # the dropped audio is gone
    events = child.send({"type": "response.create"})
    assert done(events)["status"] == "completed"
    assert stack.audio_keys() == []


# --------------------------------------------------------------------------- history


def test_history_stays_bounded(monkeypatch, stack, fake_openai) -> None:
    configure(monkeypatch, MAX_HISTORY_MESSAGES="4")
    # long transcripts (a 30 s utterance is a few hundred characters; these are more), short
    # replies (speech is the slow part here; replies are capped at CHAT_MAX_TOKENS anyway)
    n_turns = 6
    fake_openai.script_transcripts(*[f"Frase número {i} " + "bla " * 300 for i in range(n_turns)])
    fake_openai.script_replies(*["¡Muy bien! (Very good!)"] * n_turns)
    child = Client(stack)
    sizes = []
    for i in range(n_turns):
        child.turn()
        context = chat_context(fake_openai)
        # the chat context: at most MAX_HISTORY_MESSAGES earlier messages, then the new one
        assert len(context) <= 4 + 1
        assert context[-1][1].startswith(f"Frase número {i} ")
        item = stack.session_item(child.sid)
        assert len(load_history(item["hist"])) <= 2 * 4
        sizes.append(item_bytes(item))
    assert [h[0] for h in child.history()] == ["user", "assistant"] * 4
    assert child.history()[-2][1].startswith(f"Frase número {n_turns - 1} ")
    # the item stops growing once the history is full, far below DynamoDB's 400 KB
    assert sizes[-1] <= sizes[-2] * 1.05
    assert sizes[-1] < DYNAMODB_ITEM_LIMIT / 10
    # even at the default of 20 messages (40 stored items) it stays far below the limit
    per_item = sizes[-1] / len(child.history())
    assert per_item * 40 < DYNAMODB_ITEM_LIMIT / 4
    connection = stack.connection_item(child.conn)
    assert item_bytes(connection) < DYNAMODB_ITEM_LIMIT / 10


def test_parked_audio_cannot_grow_the_connection_item_past_dynamodb_limits(stack) -> None:
    """Chunks that arrive ahead of a missing one wait in the connection item, within a bound;
    when the bound is reached the missing chunk is given up for lost and the session goes on
    (never a failed DynamoDB write, never a session stuck waiting forever)."""
    child = Client(stack)
    big = tone(490)  # ~23.5 KB of PCM: the largest append that fits a 32 KB frame
    codes = []
    for n in range(2, 30):
        codes += errors(child.append(big, event_id=f"audio#{n}"))
        assert item_bytes(stack.connection_item(child.conn)) < DYNAMODB_ITEM_LIMIT
    assert codes == []
    item = stack.connection_item(child.conn)
    assert item["seq"] > 2 and len(item.get("pend") or {}) < 28  # the gap was skipped
    # the lost chunk turning up late is a duplicate by now: dropped, no error
    assert errors(child.append(tone(100), event_id="audio#1")) == []
    assert types(child.send({"type": "session.update", "session": {}})) == ["session.updated"]


# --------------------------------------------------------------------------- largest event


def _append_of_exactly(size: int) -> str:
    audio = base64.b64encode(tone(400)).decode()
    body = json.dumps({"type": "input_audio_buffer.append", "pad": "", "audio": audio})
    pad = size - len(body.encode())
    assert pad >= 0
    # Padded with a field the schema ignores (an event_id is at most 128 characters).
    return json.dumps({"type": "input_audio_buffer.append", "pad": "p" * pad, "audio": audio})


def test_the_largest_event(stack) -> None:
    child = Client(stack)
    at_limit = _append_of_exactly(MAX_EVENT_BYTES)
    assert len(at_limit.encode()) == MAX_EVENT_BYTES
    assert errors(child.raw(at_limit)) == []
    over = _append_of_exactly(MAX_EVENT_BYTES + 1)
    events = child.raw(over)
    assert errors(events) == ["event_too_large"]
    assert str(MAX_EVENT_BYTES) in events[0]["error"]["message"]
    # the session goes on; the accepted append is in the buffer, the refused one is not
    events = child.send({"type": "input_audio_buffer.commit"})
    assert types(events)[0] == "input_audio_buffer.committed"
    assert len(stack.recorder.sizes) and max(stack.recorder.sizes) <= MAX_EVENT_BYTES


def test_appends_parked_at_once_are_counted_atomically(monkeypatch, stack, fake_openai) -> None:
    """Out-of-order appends parked concurrently (their #1 is late) each count once: a burst
    cannot slip past the per-second limit because parkers wrote their counts over each other."""
    from concurrent.futures import ThreadPoolExecutor

    configure(monkeypatch, MAX_APPENDS_PER_SECOND="4")
    child = Client(stack)
    chunk = tone(100)
    next_second()
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda n: child.append(chunk, f"audio#{n}"), range(2, 10)))
    refused = [r for r in results if "rate_limited" in errors(r)]
    # 8 appends in one second against a limit of 4: at least 4 are told, whatever the race.
    assert len(refused) >= 4, [errors(r) for r in results]


# ---------------------------------------------------------------- turns / minute: asked early


def test_a_voice_turn_is_counted_by_the_append_that_ends_it_while_its_vad_runs(
    monkeypatch, stack, fake_openai
) -> None:
    """Speculation off (the stack's setting): the append whose silence reaches the window asks
    for the turn's count from a thread of its own, started before its VAD runs, so the
    turn's transcription does not wait for the count. Still one count per turn, and before
    any provider hears of it."""
    import threading

    from kiddolingo import aws
    from tests.test_server_vad import CONN, append, send, start_vad, utterance_chunks

    configure(monkeypatch, MAX_TURNS_PER_MINUTE="5")
    in_one_minute(10)
    start_vad(stack)
    counted: list[tuple[str, int]] = []

    def who_counts(params: dict, **_: object) -> None:
        if json.loads(params["body"])["Key"]["pk"]["S"].startswith("turns#"):
            transcriptions = len(fake_openai.requests("audio/transcriptions"))
            counted.append((threading.current_thread().name, transcriptions))

    client = aws._client("dynamodb")
    client.meta.events.register_first("before-call.dynamodb.UpdateItem", who_counts)
    try:
        for n, c in enumerate(utterance_chunks(), start=1):
            send(stack, append(n, c))
    finally:
        client.meta.events.unregister("before-call.dynamodb.UpdateItem", who_counts)
    assert stack.recorder.types(CONN)[-1] == "response.done"
    assert counted == [("turn-admission", 0)]
    minute = int(time.time() // 60)
    key = {"pk": {"S": f"turns#{stack.connection_item(CONN)['sid']}#{minute}"}}
    assert stack.ddb.get_item(TableName=TABLE, Key=key)["Item"]["count"] == {"N": "1"}


def test_which_appends_ask_for_a_count_before_their_vad_runs() -> None:
    from kiddolingo.ingest import AudioState
    from kiddolingo.session import SessionConfig
    from kiddolingo.tutor.appendplan import closes_by_silence
    from kiddolingo.vad import VadState

    cfg = SessionConfig(
        turn_detection={"type": "server_vad", "silence_duration_ms": 1200}, input_rate=16000
    )
    run = ((7, b"\0\0" * 1600),)  # 100 ms at 16 kHz

    def state(in_utterance: bool, silence_ms: int) -> AudioState:
        vad = VadState(sample_rate=16000, in_utterance=in_utterance, silence_ms=silence_ms)
        return AudioState(vad=vad)

    assert closes_by_silence(state(True, 1100), run, cfg, None)
    assert not closes_by_silence(state(True, 1000), run, cfg, None)  # 100 ms short
    assert not closes_by_silence(state(False, 0), run, cfg, None)  # no utterance to end
    # A speculation of this pause answers it: it was counted when it started.
    assert not closes_by_silence(state(True, 1100), run, cfg, {"id": "spec_1"})
    manual = SessionConfig(turn_detection=None, input_rate=16000)
    assert not closes_by_silence(state(True, 1100), run, manual, None)
    quiet = SessionConfig(
        turn_detection={
            "type": "server_vad",
            "silence_duration_ms": 1200,
            "create_response": False,
        },
        input_rate=16000,
    )
    assert not closes_by_silence(state(True, 1100), run, quiet, None)
