"""Issue 6 §4: a fault-injection matrix against the real handlers.

Every case runs through ``functions/*/app.py`` under moto, with the real ``openai`` SDK talking
HTTP to the fake provider (``infra.fake_openai``), and pins down three things: what the client
receives, what the stored history holds, and that the *next* turn works with the history
intact. Provider failures are injected in the fake server (HTTP 429/500, a hang past the
client's timeout, a stream broken midway); 410s in the post hook of the Management API client;
DynamoDB conflicts in a ``before-call`` hook of the DynamoDB client; bad input as raw frames.

What the client receives when a provider fails for good (after the SDK's own retries):

* transcription: an ``error`` (``transcription_failed``), then a response whose audio is the
  apology and whose ``response.done`` is ``failed`` (``status_details.error.code``
  ``transcription_failed``); nothing is added to the history (nothing was understood);
* chat, speech, moderation, the turn deadline: ``response.created``, the apology (spoken; on
  screen only when speech itself is down), ``response.done`` ``failed`` with
  ``status_details.error.code`` ``<stage>_failed``; the history keeps the child's words and
  what the child heard (the apology), and the earlier turns.

Helpers here (``Client``, ``configure``, ``tone``) are reused by the other issue-6 test files.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from infra.fake_openai import synth_pcm
from kiddolingo import chunks
from kiddolingo.conversation import apology, load_history
from kiddolingo.session import SessionConfig
from kiddolingo.speech_text import strip_for_speech
from tests.support.aws_stack import BUCKET
from tests.support.events import connect_event, disconnect_event, message_event

APOLOGY = apology("Spanish")
#: Its emoji at the end: the screen shows a sentence's emojis after its spoken words.
REPLY_1 = "¡Hola, Ana! (Hello, Ana!) 😊"
REPLY_3 = "¡Muy bien! (Very good!)"


# --------------------------------------------------------------------------- helpers


def tone(ms: int = 400, rate: int = 24000, freq: float = 220.0) -> bytes:
    """``ms`` of a quiet sine as PCM16 LE mono: stands in for the child's voice in manual mode."""
    t = np.arange(rate * ms // 1000) / rate
    return (0.2 * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def configure(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """Set settings in the environment and drop the process caches that hold the old ones."""
    from kiddolingo.providers import reset_providers
    from kiddolingo.settings import get_settings

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    reset_providers()


class Client:
    """One WebSocket connection as the handlers see it: numbered appends, commits, raw frames."""

    def __init__(
        self,
        stack: Any,
        conn: str = "conn-F=",
        session_id: str | None = None,
        *,
        vad: dict[str, Any] | None = None,
        language: str = "Spanish",
    ) -> None:
        self.stack = stack
        self.conn = conn
        self.n = 0
        query = {"session_id": session_id} if session_id else None
        out = stack.invoke("$connect", connect_event(query=query, connection_id=conn))
        assert out["statusCode"] == 200, out
        self.sid: str = stack.connection_item(conn)["sid"]
        self.send(
            {
                "type": "session.update",
                "session": {
                    "audio": {
                        "input": {
                            "format": {"type": "audio/pcm", "rate": 24000},
                            "turn_detection": vad,
                        }
                    },
                    "tutor": {"target_language": language, "learner_age": 7},
                },
            }
        )

    # raw ------------------------------------------------------------------------------
    def raw(self, body: str) -> list[dict[str, Any]]:
        """Send one frame as-is; the events posted while it was handled."""
        before = len(self.stack.recorder.events(self.conn))
        self.stack.invoke("$default", message_event(body, connection_id=self.conn))
        return self.stack.recorder.events(self.conn)[before:]

    def send(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        return self.raw(json.dumps(event))

    # audio ------------------------------------------------------------------------------
    def append(self, pcm: bytes, event_id: str | None = None) -> list[dict[str, Any]]:
        if event_id is None:
            self.n += 1
            event_id = f"audio#{self.n}"
        return self.send(
            {
                "type": "input_audio_buffer.append",
                "event_id": event_id,
                "audio": base64.b64encode(pcm).decode(),
            }
        )

    def stream(self, pcm: bytes, chunk_ms: int = 100) -> list[dict[str, Any]]:
        step = 24000 * 2 * chunk_ms // 1000
        out: list[dict[str, Any]] = []
        for i in range(0, len(pcm), step):
            out += self.append(pcm[i : i + step])
        return out

    def turn(self, pcm: bytes | None = None) -> list[dict[str, Any]]:
        """Speak ``pcm`` (a short tone by default) and commit: every event of the turn."""
        out = self.stream(pcm if pcm is not None else tone())
        return out + self.send({"type": "input_audio_buffer.commit"})

    def disconnect(self) -> None:
        self.stack.invoke("$disconnect", disconnect_event(connection_id=self.conn))

    # inspection -------------------------------------------------------------------------
    def history(self) -> list[tuple[str, str]]:
        stored = self.stack.session_item(self.sid)["hist"]
        return [(h["role"], h["text"]) for h in load_history(stored)]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def errors(events: list[dict[str, Any]]) -> list[str]:
    return [e["error"]["code"] for e in events if e["type"] == "error"]


def done(events: list[dict[str, Any]]) -> dict[str, Any]:
    (last,) = [e for e in events if e["type"] == "response.done"]
    return last["response"]


def heard(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"] == "response.output_audio.delta"
    )


def shown(events: list[dict[str, Any]]) -> str:
    return "".join(
        e["delta"] for e in events if e["type"] == "response.output_audio_transcript.delta"
    )


def assert_completed_turn(events: list[dict[str, Any]], reply: str) -> None:
    assert types(events)[-1] == "response.done", types(events)
    assert done(events)["status"] == "completed"
    assert done(events)["output"][0]["content"][0]["transcript"] == reply
    assert heard(events), "the child hears the reply"


def assert_apology(events: list[dict[str, Any]], code: str, spoken: bool = True) -> None:
    """A failed turn: the apology reaches the child and response.done says failed."""
    response = done(events)
    assert response["status"] == "failed"
    details = response["status_details"]
    assert details["type"] == "failed" and details["error"]["code"] == code, details
    assert response["output"][0]["content"][0]["transcript"].endswith(APOLOGY)
    assert shown(events).endswith(APOLOGY)
    if spoken:
        assert heard(events).endswith(synth_pcm(strip_for_speech(APOLOGY)))
    seq = types(events)
    assert seq.index("response.created") < seq.index("response.done")
    assert seq[-3:] == [
        "response.output_audio.done",
        "response.output_audio_transcript.done",
        "response.done",
    ]


def answer(fake: Any, replies: dict[str, str]) -> None:
    """The fake's chat replies keyed by the child's last words (a failed request consumes none)."""

    def reply_for(messages: list[dict[str, Any]]) -> str:
        last = [m["content"] for m in messages if m["role"] == "user"][-1]
        return replies[last]

    fake.reply_for = reply_for


def chat_context(fake: Any) -> list[tuple[str, str]]:
    """The (role, content) pairs of the last chat request, without the system prompt."""
    messages = fake.requests("chat/completions")[-1].messages
    return [(m["role"], m["content"]) for m in messages[1:]]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def fast_fail(monkeypatch, stack):
    """A single SDK retry, so a failing provider fails fast."""
    configure(monkeypatch, PROVIDER_MAX_RETRIES="1", PROVIDER_TIMEOUT_S="5")
    return stack


def inject(monkeypatch: pytest.MonkeyPatch, fake: Any, endpoint: str, **failure: Any) -> Any:
    """A failure until further notice; a hang comes with a short client timeout (0.3 s)."""
    if failure.get("kind") == "timeout":
        configure(monkeypatch, PROVIDER_TIMEOUT_S="0.3")
    return fake.fail(endpoint, times=None, **failure)


def recover(monkeypatch: pytest.MonkeyPatch, injected: Any) -> None:
    injected.times = 0  # the provider is back
    configure(monkeypatch, PROVIDER_TIMEOUT_S="5")


# --------------------------------------------------------------------------- provider faults

# (endpoint, failure kwargs, the code in response.done, spoken apology?)
PERSISTENT = [
    pytest.param("chat", {"status": 429}, "chat_failed", True, id="chat-429"),
    pytest.param("chat", {"status": 500}, "chat_failed", True, id="chat-500"),
    pytest.param("chat", {"kind": "timeout", "hang_s": 5}, "chat_failed", True, id="chat-timeout"),
    # Speech over the Realtime API: the handshake refused, or every sentence hanging.
    pytest.param("realtime", {"status": 429}, "speech_failed", False, id="speech-429"),
    pytest.param("realtime", {"status": 503}, "speech_failed", False, id="speech-503"),
    pytest.param(
        "realtime", {"kind": "timeout", "hang_s": 5}, "speech_failed", False, id="speech-timeout"
    ),
    pytest.param("moderations", {"status": 500}, "moderation_failed", True, id="moderation-500"),
]


@pytest.mark.parametrize(("endpoint", "failure", "code", "spoken"), PERSISTENT)
def test_provider_fails_for_good(
    monkeypatch, fast_fail, fake_openai, endpoint, failure, code, spoken
) -> None:
    fake_openai.script_transcripts("Hola", "Tengo un gato", "Me gusta el azul")
    answer(
        fake_openai,
        {"Hola": REPLY_1, "Tengo un gato": "¡Un gato! 🐱 (A cat!)", "Me gusta el azul": REPLY_3},
    )
    child = Client(fast_fail)
    assert_completed_turn(child.turn(), REPLY_1)

    injected = inject(monkeypatch, fake_openai, endpoint, **failure)
    events = child.turn()
    recover(monkeypatch, injected)

    # the SDK retried (PROVIDER_MAX_RETRIES=1) before the turn gave up
    failed = [r for r in fake_openai.requests(endpoint) if r.failure]
    if endpoint == "realtime":  # a sentence that hung is a response of a socket that worked
        failed += [r for r in fake_openai.realtime_responses() if r.failure]
    assert len(failed) >= 2
    assert errors(events) == []
    assert_apology(events, code, spoken)
    # the flagged-or-not reply never reached the child when moderation was down
    if endpoint == "moderations":
        assert "gato" not in shown(events)
    assert child.history() == [
        ("user", "Hola"),
        ("assistant", REPLY_1),
        ("user", "Tengo un gato"),
        ("assistant", APOLOGY),
    ]

    # the next turn works, and its context holds everything the child said and heard
    events = child.turn()
    assert_completed_turn(events, REPLY_3)
    assert chat_context(fake_openai) == [
        ("user", "Hola"),
        ("assistant", REPLY_1),
        ("user", "Tengo un gato"),
        ("assistant", APOLOGY),
        ("user", "Me gusta el azul"),
    ]
    assert fast_fail.audio_keys() == []


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param({"status": 429}, id="429"),
        pytest.param({"status": 500}, id="500"),
        pytest.param({"kind": "timeout", "hang_s": 5}, id="timeout"),
    ],
)
def test_transcription_fails_for_good(monkeypatch, fast_fail, fake_openai, failure) -> None:
    fake_openai.script_transcripts("Hola", "Me gusta el azul")
    fake_openai.script_replies(REPLY_1, REPLY_3)
    child = Client(fast_fail)
    assert_completed_turn(child.turn(), REPLY_1)

    injected = inject(monkeypatch, fake_openai, "transcriptions", **failure)
    events = child.turn()
    recover(monkeypatch, injected)

    assert types(events)[:2] == ["input_audio_buffer.committed", "error"]
    assert errors(events) == ["transcription_failed"]
    assert_apology(events, "transcription_failed")
    assert len(fake_openai.requests("chat/completions")) == 1  # no reply to words never heard
    assert child.history() == [("user", "Hola"), ("assistant", REPLY_1)]
    assert fast_fail.audio_keys() == []  # the audio is gone even though the turn failed

    assert_completed_turn(child.turn(), REPLY_3)
    assert chat_context(fake_openai) == [
        ("user", "Hola"),
        ("assistant", REPLY_1),
        ("user", "Me gusta el azul"),
    ]


TRANSIENT = [
    (endpoint, status)
    for endpoint in ("transcriptions", "chat", "realtime", "moderations")
    for status in (429, 500)
]


def test_a_transient_failure_is_retried_within_the_turn(stack, fake_openai) -> None:
    """One 429 or 500 from any stage: the SDK's retry absorbs it, the child notices nothing."""
    child = Client(stack)
    expected: list[tuple[str, str]] = []
    for n, (endpoint, status) in enumerate(TRANSIENT):
        said, reply = f"Frase {n}", f"¡Respuesta {n}! (Answer {n}!)"
        fake_openai.script_transcripts(said)
        fake_openai.script_replies(reply)
        before = len(fake_openai.requests(endpoint))
        fake_openai.fail(endpoint, status=status, times=1)
        events = child.turn()
        assert errors(events) == [], (endpoint, status)
        assert_completed_turn(events, reply)
        assert [r.failure for r in fake_openai.requests(endpoint)][before : before + 2] == [
            "status",
            None,
        ], (endpoint, status)
        expected += [("user", said), ("assistant", reply)]
    assert child.history() == expected


def test_chat_stream_broken_midway_keeps_what_was_heard(fast_fail, fake_openai) -> None:
    reply = "¡Hola! (Hello!) ¿Te gustan los gatos? (Do you like cats?) ¿Y los perros? (And dogs?)"
    fake_openai.script_transcripts("Hola", "Si")
    fake_openai.script_replies(reply, REPLY_3)
    child = Client(fast_fail)
    # the stream breaks halfway, after the first sentence: a started stream is not retried
    fake_openai.fail("chat", kind="abort", times=1)
    events = child.turn()
    assert_apology(events, "chat_failed")
    hist = child.history()
    assert hist[0] == ("user", "Hola")
    said = hist[1][1]
    assert said.endswith(APOLOGY) and said != APOLOGY, said  # the part heard, then the apology
    assert said.removesuffix(APOLOGY).strip() in reply
    assert_completed_turn(child.turn(), REPLY_3)
    assert chat_context(fake_openai)[:2] == hist[:2]


def test_turn_deadline(monkeypatch, stack, fake_openai) -> None:
    configure(monkeypatch, TURN_DEADLINE_S="0.6")
    fake_openai.script_transcripts("Hola", "Otra vez")
    fake_openai.script_replies(REPLY_1, REPLY_3)
    child = Client(stack)
    fake_openai.set_latency(chat_first_token_ms=1500)  # slow, not failing: the deadline hits
    events = child.turn()
    assert_apology(events, "turn_failed")
    fake_openai.set_latency(chat_first_token_ms=0)
    assert_completed_turn(child.turn(), REPLY_3)
    assert chat_context(fake_openai)[:2] == [("user", "Hola"), ("assistant", APOLOGY)]


# --------------------------------------------------------------------------- 410 mid-turn


def _management_client(conn: str) -> Any:
    from kiddolingo import aws
    from kiddolingo.messenger import endpoint_from_event

    ctx = message_event("{}", connection_id=conn)["requestContext"]
    return aws.management_client(endpoint_from_event(ctx["domainName"], ctx["stage"]))


def gone_after_first_audio(stack: Any, conn: str) -> None:
    """From the post after ``conn``'s first audio delta on, ``conn`` answers 410."""
    seen = {"audio": False}

    def hook(params: dict[str, Any], **_: Any) -> None:
        target = params["url_path"].rsplit("/", 1)[-1]
        from urllib.parse import unquote

        if unquote(target) != conn:
            return None
        if seen["audio"]:
            stack.recorder.gone.add(conn)
        elif json.loads(params["body"]).get("type") == "response.output_audio.delta":
            seen["audio"] = True
        return None  # the recorder answers (200, or 410 once gone)

    _management_client(conn).meta.events.register_first(
        "before-call.apigatewaymanagementapi.PostToConnection", hook
    )


def test_410_mid_turn_stops_the_turn_and_cleans_up_that_connection_only(stack, fake_openai) -> None:
    long_reply = (
        "¡Hola, Ana! (Hello, Ana!) ¿Te gustan los gatos? (Do you like cats?) "
        "¿Y los perros? (And dogs?)"
    )
    fake_openai.script_transcripts("Hola", "Tengo un gato", "Hola de nuevo", "Si")
    fake_openai.script_replies(REPLY_1, long_reply, "¡Hola, Ben! (Hello, Ben!)", REPLY_3)
    ana = Client(stack, conn="conn-ana=")
    assert_completed_turn(ana.turn(), REPLY_1)
    ben = Client(stack, conn="conn-ben=")

    gone_after_first_audio(stack, "conn-ana=")
    events = ana.turn()
    # one audio delta got through; after the 410 nothing more was posted, no response.done
    assert types(events).count("response.output_audio.delta") == 1
    assert "response.done" not in types(events)
    # the reply stopped: not every sentence was synthesized
    fake_openai.wait_idle()
    assert types(events).count("response.output_audio_transcript.delta") == 1
    # that connection is cleaned up; the other child and the session are untouched
    assert stack.connection_item("conn-ana=") is None
    assert stack.connection_item("conn-ben=") is not None
    session = stack.session_item(ana.sid)
    assert session is not None and "resp" not in session
    assert ana.history()[:3] == [
        ("user", "Hola"),
        ("assistant", REPLY_1),
        ("user", "Tengo un gato"),
    ]
    assert stack.audio_keys() == []

    assert_completed_turn(ben.turn(), "¡Hola, Ben! (Hello, Ben!)")
    # Ana comes back: the session resumes with its history
    again = Client(stack, conn="conn-ana2=", session_id=ana.sid)
    assert_completed_turn(again.turn(), REPLY_3)
    assert chat_context(fake_openai)[:3] == [
        ("user", "Hola"),
        ("assistant", REPLY_1),
        ("user", "Tengo un gato"),
    ]


def test_connection_gone_before_the_reply_is_claimed_ends_the_turn_quietly(
    stack, fake_openai
) -> None:
    """The child's connection closes while their words are transcribed: the response slot's
    write finds no connection. The turn stops (no reply, nothing in the history), that
    connection is cleaned up, and the session stays for a resume."""
    fake_openai.script_transcripts("Hola", "Hola otra vez")
    fake_openai.script_replies(REPLY_1)
    child = Client(stack, conn="conn-gone=")
    conflicts = inject_conflicts(
        lambda body: (
            body["Key"]["pk"]["S"] == "conn#conn-gone="
            and body["UpdateExpression"].startswith("SET resp = :r,")
        ),
        times=1,
    )
    events = child.turn()
    assert conflicts.raised == 1
    assert "response.created" not in types(events) and not errors(events)
    assert stack.connection_item("conn-gone=") is None
    session = stack.session_item(child.sid)
    assert session is not None and "resp" not in session and not load_history(session.get("hist"))
    assert not fake_openai.requests("chat")
    assert stack.audio_keys() == []

    again = Client(stack, conn="conn-back=", session_id=child.sid)
    assert_completed_turn(again.turn(), REPLY_1)


def test_410_on_a_plain_reply_removes_the_connection(stack, fake_openai) -> None:
    child = Client(stack, conn="conn-g=")
    stack.recorder.gone.add("conn-g=")
    child.send({"type": "session.update", "session": {"tutor": {"learner_age": 9}}})
    assert stack.connection_item("conn-g=") is None
    assert SessionConfig.from_item(stack.session_item(child.sid)["cfg"]).learner_age == 9


# --------------------------------------------------------------------------- DynamoDB conflicts


class Conflicts:
    """Answers matching DynamoDB UpdateItem calls with ConditionalCheckFailedException."""

    def __init__(self, match: Callable[[dict[str, Any]], bool], times: int) -> None:
        self.match = match
        self.times = times
        self.raised = 0
        self.lock = threading.Lock()

    def __call__(self, params: dict[str, Any], **_: Any) -> Any:
        body = json.loads(params["body"])
        with self.lock:
            if self.times <= 0 or not self.match(body):
                return None
            self.times -= 1
            self.raised += 1

        from infra.containers import CapturedPost

        return CapturedPost(400), {
            "Error": {
                "Code": "ConditionalCheckFailedException",
                "Message": "The conditional request failed (injected)",
            },
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }


def inject_conflicts(match: Callable[[dict[str, Any]], bool], times: int) -> Conflicts:
    from kiddolingo import aws

    conflicts = Conflicts(match, times)
    aws._client("dynamodb").meta.events.register_first("before-call.dynamodb.UpdateItem", conflicts)
    return conflicts


def on_session(body: dict[str, Any]) -> bool:
    return body["Key"]["pk"]["S"].startswith("session#")


def on_audio_state(body: dict[str, Any]) -> bool:
    return body["Key"]["pk"]["S"].startswith("conn#") and "aver" in body["UpdateExpression"]


def test_a_writer_slower_than_the_chunks_commits_its_progress_and_loses_nothing(
    stack, fake_openai
) -> None:
    """Every time the invocation that closes the gap writes, the next chunk has just been
    parked at its new watermark: writes slower than the chunks arrive, as on a loaded local
    stack. Waiting for those would never end (it gave up after 40 lost races, and the parked
    pile grew until chunks were skipped as lost). It commits what it has, then processes the
    parked chunks itself: every sample arrives, in order."""
    from kiddolingo import aws
    from kiddolingo.service import MAX_APPEND_ATTEMPTS
    from tests.support.aws_stack import TABLE

    child = Client(stack, conn="conn-slow=")
    chunks = [tone(100, freq=200.0 + 7 * i) for i in range(MAX_APPEND_ATTEMPTS + 6)]
    child.append(chunks[0])
    parked: list[int] = []

    def park_at_the_new_watermark(params: dict[str, Any], **_: Any) -> None:
        body = json.loads(params["body"])
        if not on_audio_state(body):
            return
        seq = int(body["ExpressionAttributeValues"][":seq"]["N"])
        if seq <= len(chunks) and seq not in parked:
            parked.append(seq)
            stack.ddb.update_item(
                TableName=TABLE,
                Key={"pk": {"S": "conn#conn-slow="}},
                UpdateExpression="SET pend.#s = :a ADD cver :one",  # as every writer does
                ExpressionAttributeNames={"#s": str(seq)},
                ExpressionAttributeValues={":a": {"B": chunks[seq - 1]}, ":one": {"N": "1"}},
            )

    reads: list[str] = []

    def count_reads(**_: Any) -> None:
        reads.append("GetItem")

    client = aws._client("dynamodb")
    client.meta.events.register_first("before-call.dynamodb.UpdateItem", park_at_the_new_watermark)
    client.meta.events.register("before-call.dynamodb.GetItem", count_reads)
    try:
        assert not errors(child.append(chunks[1]))
    finally:
        client.meta.events.unregister("before-call.dynamodb.UpdateItem", park_at_the_new_watermark)
        client.meta.events.unregister("before-call.dynamodb.GetItem", count_reads)
    assert parked == list(range(3, len(chunks) + 1))
    # No read: the first pass goes on from the item this container's previous append left
    # (store.KnownConnections), each later one from what its write or its lost race returned.
    assert reads == []
    item = stack.connection_item("conn-slow=")
    assert item["seq"] == len(chunks) + 1 and not item["pend"]

    fake_openai.script_transcripts("Hola")
    child.send({"type": "input_audio_buffer.commit"})
    (transcription,) = fake_openai.requests("transcription")
    assert transcription.pcm == b"".join(chunks)


def test_parkers_racing_cannot_grow_the_item_past_its_bound(stack, fake_openai) -> None:
    """Parking is bounded in the write itself: when others filled the parking while this chunk
    was on its way, it does not park a chunk too many (many at once could push the item past
    DynamoDB's 400 KB). It skips the missing chunk instead and processes the parked ones."""
    from kiddolingo import aws, ingest
    from kiddolingo.service import MAX_PARKED_BYTES
    from tests.support.aws_stack import TABLE

    child = Client(stack, conn="conn-park=")
    chunk = tone(100)
    room = min(ingest.MAX_PARKED_CHUNKS, MAX_PARKED_BYTES // len(chunk))
    child.append(chunk, event_id="audio#1")
    filled: list[int] = []

    def others_fill_the_parking(params: dict[str, Any], **_: Any) -> None:
        body = json.loads(params["body"])
        if filled or not body["UpdateExpression"].startswith("SET pend.#s"):
            return
        filled.extend(range(4, 4 + room))
        stack.ddb.update_item(
            TableName=TABLE,
            Key={"pk": {"S": "conn#conn-park="}},
            UpdateExpression="SET "
            + ", ".join(f"pend.#p{n} = :a" for n in filled)
            + " ADD cver :one",
            ExpressionAttributeNames={f"#p{n}": str(n) for n in filled},
            ExpressionAttributeValues={":a": {"B": chunk}, ":one": {"N": "1"}},
        )

    client = aws._client("dynamodb")
    client.meta.events.register_first("before-call.dynamodb.UpdateItem", others_fill_the_parking)
    try:
        events = child.append(chunk, event_id="audio#3")  # #2 never comes
    finally:
        client.meta.events.unregister("before-call.dynamodb.UpdateItem", others_fill_the_parking)
    assert filled and not errors(events)
    item = stack.connection_item("conn-park=")
    assert not item["pend"] and item["seq"] == 4 + room  # #2 skipped; #3 and the rest are in


def test_session_update_conflicts_are_retried(stack) -> None:
    from kiddolingo.store import MAX_CONFLICT_RETRIES

    child = Client(stack)
    conflicts = inject_conflicts(on_session, times=3)
    events = child.send({"type": "session.update", "session": {"tutor": {"learner_age": 8}}})
    assert types(events) == ["session.updated"]
    assert conflicts.raised == 3
    assert SessionConfig.from_item(stack.session_item(child.sid)["cfg"]).learner_age == 8

    # conflicts without end: a clear error, and the session goes on
    inject_conflicts(on_session, times=MAX_CONFLICT_RETRIES)
    events = child.send({"type": "session.update", "session": {"tutor": {"learner_age": 9}}})
    assert errors(events) == ["busy"]
    events = child.send({"type": "session.update", "session": {"tutor": {"learner_age": 10}}})
    assert types(events) == ["session.updated"]
    assert SessionConfig.from_item(stack.session_item(child.sid)["cfg"]).learner_age == 10


def test_audio_state_conflicts_are_retried_without_losing_audio(stack, fake_openai) -> None:
    fake_openai.script_transcripts("Hola")
    fake_openai.script_replies(REPLY_1)
    child = Client(stack)
    pcm = tone(600)
    conflicts = inject_conflicts(on_audio_state, times=4)
    events = child.turn(pcm)
    assert conflicts.raised == 4 and errors(events) == []
    assert_completed_turn(events, REPLY_1)
    (req,) = fake_openai.requests("audio/transcriptions")
    assert req.pcm == pcm  # every chunk exactly once, in order


def test_end_of_turn_conflict_still_records_the_history(stack, fake_openai) -> None:
    fake_openai.script_transcripts("Hola")
    fake_openai.script_replies(REPLY_1)
    child = Client(stack)
    # the history write at the end of the turn loses its first two races
    conflicts = inject_conflicts(
        lambda b: (
            on_session(b)
            and any(v == "hist" for v in b.get("ExpressionAttributeNames", {}).values())
        ),
        times=2,
    )
    assert_completed_turn(child.turn(), REPLY_1)
    assert conflicts.raised == 2
    assert child.history() == [("user", "Hola"), ("assistant", REPLY_1)]


def test_truncate_and_session_update_racing(stack, fake_openai) -> None:
    fake_openai.script_replies(REPLY_1)
    fake_openai.script_transcripts("Hola")
    child = Client(stack)
    events = child.turn()
    item_id = done(events)["output"][0]["id"]
    before = len(stack.recorder.events(child.conn))

    def run(event: dict[str, Any]) -> None:
        child.send(event)

    bodies = [
        {"type": "session.update", "session": {"tutor": {"learner_age": 6 + i}}} for i in range(4)
    ]
    bodies.insert(
        2,
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 400,
        },
    )
    threads = [threading.Thread(target=run, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = sorted(types(stack.recorder.events(child.conn)[before:]))
    assert got == ["conversation.item.truncated"] + ["session.updated"] * 4
    hist = load_history(stack.session_item(child.sid)["hist"])
    assert hist[-1]["truncated_ms"] == 400
    cfg = SessionConfig.from_item(stack.session_item(child.sid)["cfg"])
    assert cfg.learner_age in (6, 7, 8, 9)


def _turns_of(child: Client) -> tuple[Any, Any]:
    """Two real ``Tutor`` objects of the audio handler for ``child``'s connection: the turn the
    child interrupts and the child's next turn, to drive in the order a race takes."""
    from kiddolingo import aws
    from kiddolingo.service import Tutor
    from kiddolingo.settings import get_settings

    settings = get_settings()

    def tutor() -> Tutor:
        messenger = aws.messenger("example.execute-api.test", "prod", child.conn)
        return Tutor(settings, aws.session_store(settings), aws.chunk_store(settings), messenger)

    return tutor(), tutor()


def _truncate(child: Client, item_id: str, ms: int) -> list[dict[str, Any]]:
    return child.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": ms,
        }
    )


def _end_old_turn(child: Client, interrupted: Any) -> None:
    from kiddolingo.conversation import Segment
    from kiddolingo.turn.outcome import TurnOutcome

    said = [Segment("Uno.", 800), Segment("Dos.", 800), Segment("Tres.", 800)]
    interrupted._end_response(
        child.sid, "resp_old", None, TurnOutcome("resp_old", "item_old", "cancelled", segments=said)
    )


def test_a_truncation_of_a_reply_in_flight_outlives_the_next_turn_taking_resp(
    stack, fake_openai
) -> None:
    """The child interrupts a reply: the truncate lands while the reply is in flight and is
    noted on ``resp``. The child's next turn then replaced ``resp`` before the interrupted turn
    ended, and that turn wrote its whole reply into the history (the read-along test saw it
    about one run in seven on a loaded machine). The truncate is the real ``$default`` route."""
    child = Client(stack)
    interrupted, the_next = _turns_of(child)
    interrupted._begin_response(child.sid, "resp_old", "item_old")
    assert types(_truncate(child, "item_old", 1700)) == ["conversation.item.truncated"]
    the_next._begin_response(child.sid, "resp_new", "item_new", slot_taken=True)
    _end_old_turn(child, interrupted)
    assert child.history() == [("assistant", "Uno. Dos.")]  # what the child heard, not "Tres."
    session = stack.session_item(child.sid)
    assert "truncs" not in session  # taken by the turn that wrote it
    assert session["resp"]["id"] == "resp_new"  # the next turn's response stays


def test_a_truncate_arriving_between_the_next_turn_and_the_end_of_the_reply_waits_for_it(
    stack, fake_openai
) -> None:
    """The same race, the other way round: the child's next turn replaced ``resp`` first, so
    the truncate found its item neither in flight nor in the history yet, and was refused
    (``item_not_found``) while the whole reply went into the history."""
    child = Client(stack)
    interrupted, the_next = _turns_of(child)
    interrupted._begin_response(child.sid, "resp_old", "item_old")
    the_next._begin_response(child.sid, "resp_new", "item_new", slot_taken=True)
    told: list[dict[str, Any]] = []
    truncate = threading.Thread(target=lambda: told.extend(_truncate(child, "item_old", 1700)))
    truncate.start()
    time.sleep(0.3)  # the truncate is looking for its item
    _end_old_turn(child, interrupted)
    truncate.join(5)
    assert types(told) == ["conversation.item.truncated"]
    assert child.history() == [("assistant", "Uno. Dos.")]


# --------------------------------------------------------------------------- S3


def test_missing_chunk_is_an_error_event_not_a_crash(stack, fake_openai) -> None:
    fake_openai.script_transcripts("Hola")
    fake_openai.script_replies(REPLY_1)
    child = Client(stack)
    child.stream(tone())
    keys = stack.audio_keys()
    assert keys
    stack.s3.delete_object(Bucket=BUCKET, Key=keys[0])
    # The turn runs in a container that did not write the chunk (the writer's memory is the
    # only other copy: RecentChunks).
    chunks.RECENT.clear()
    events = child.send({"type": "input_audio_buffer.commit"})
    assert types(events) == ["input_audio_buffer.committed", "error"]
    assert errors(events) == ["audio_missing"]
    assert fake_openai.requests("audio/transcriptions") == []
    assert stack.audio_keys() == []
    assert child.history() == []
    # the next turn works
    assert_completed_turn(child.turn(), REPLY_1)
    assert child.history() == [("user", "Hola"), ("assistant", REPLY_1)]


# --------------------------------------------------------------------------- bad input

_ODD = base64.b64encode(b"\x00\x01\x02").decode()
BAD_INPUT = [
    pytest.param("{not json", "invalid_json", None, id="malformed-json"),
    pytest.param("", "empty_event", None, id="empty"),
    pytest.param("[1, 2]", "invalid_event", None, id="not-an-object"),
    pytest.param('{"event_id": "e1"}', "missing_type", "type", id="no-type"),
    pytest.param(
        '{"type": "conversation.item.create", "event_id": "e2"}',
        "unknown_event_type",
        "type",
        id="unknown-type",
    ),
    pytest.param(
        '{"type": "input_audio_buffer.append", "event_id": "e3", "audio": "@@@"}',
        "invalid_audio",
        "audio",
        id="bad-base64",
    ),
    pytest.param(
        json.dumps({"type": "input_audio_buffer.append", "event_id": "e4", "audio": _ODD}),
        "invalid_audio",
        "audio",
        id="odd-byte-count",
    ),
    pytest.param(
        json.dumps(
            {"type": "input_audio_buffer.append", "event_id": "e5", "audio": "A" * (40 * 1024)}
        ),
        "event_too_large",
        None,
        id="oversize",
    ),
    pytest.param(
        '{"type": "session.update", "event_id": "e6", "session": 5}',
        "invalid_session",
        "session",
        id="bad-session",
    ),
    pytest.param(
        '{"type": "conversation.item.truncate", "event_id": "e7", "item_id": "x", '
        '"audio_end_ms": -1}',
        "invalid_truncate",
        "audio_end_ms",
        id="bad-truncate",
    ),
    pytest.param(
        '{"type": "unknown", "event_id": "\\ud800"}', "invalid_json", None, id="lone-surrogate"
    ),
    pytest.param(
        '{"type": "session.update", "session": {"instructions": "hi \\udc00"}}',
        "invalid_json",
        None,
        id="lone-surrogate-in-text",
    ),
]


def test_bad_input_is_an_error_event_and_the_session_goes_on(stack) -> None:
    child = Client(stack)
    for case in BAD_INPUT:
        body, code, param = case.values
        events = child.raw(body)
        assert errors(events) == [code], (case.id, events)
        (error,) = [e["error"] for e in events]
        assert error["type"] == "invalid_request_error"
        assert error["message"]
        if param:
            assert error.get("param") == param, case.id
        try:
            sent = json.loads(body)
        except ValueError:
            sent = None
        sent_id = sent.get("event_id") if isinstance(sent, dict) else None
        if code not in ("event_too_large", "invalid_json") and isinstance(sent_id, str):
            assert error["event_id"] == sent_id, case.id  # the client can tell which one failed
        # the connection is unharmed
        assert types(child.send({"type": "session.update", "session": {}})) == [
            "session.updated"
        ], case.id


def test_bad_input_in_the_middle_of_a_turn_loses_nothing(stack, fake_openai) -> None:
    """Every kind of bad frame, interleaved with an utterance's appends: the turn hears exactly
    the good audio, and the history of the earlier turn is intact."""
    fake_openai.script_transcripts("Hola", "Me gusta el azul")
    fake_openai.script_replies(REPLY_1, REPLY_3)
    child = Client(stack)
    assert_completed_turn(child.turn(), REPLY_1)

    pcm = tone(800)
    step = 4800
    pieces = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    bad = [p.values[0] for p in BAD_INPUT]
    codes = []
    for i, piece in enumerate(pieces):
        assert errors(child.append(piece)) == []
        if i < len(bad):
            codes += errors(child.raw(bad[i]))
    assert codes == [p.values[1] for p in BAD_INPUT][: len(pieces)]
    events = child.send({"type": "input_audio_buffer.commit"})
    assert_completed_turn(events, REPLY_3)
    assert fake_openai.requests("audio/transcriptions")[-1].pcm == pcm
    assert child.history() == [
        ("user", "Hola"),
        ("assistant", REPLY_1),
        ("user", "Me gusta el azul"),
        ("assistant", REPLY_3),
    ]


def test_a_blind_session_write_makes_an_earlier_read_modify_write_retry(stack) -> None:
    """``set_session_fields`` (the response claim) writes without reading; it bumps ``ver``,
    so a read-modify-write that read the session before it retries and keeps both changes."""
    from kiddolingo.store import NotFoundError, SessionStore
    from tests.support.aws_stack import TABLE

    store = SessionStore(TABLE, stack.ddb)
    store.create_session("s1", "learner-1", {"voice": "nova"})
    interleaved: list[int] = []

    def change(item: dict[str, Any]) -> dict[str, Any]:
        if not interleaved:  # between this read and its write, the claim lands
            interleaved.append(item["ver"])
            store.set_session_fields("s1", {"resp": {"id": "resp_1", "segs": []}})
        return {"timeline_ms": 500}

    store.mutate_session("s1", change)
    item = stack.session_item("s1")
    assert item["resp"] == {"id": "resp_1", "segs": []} and item["timeline_ms"] == 500
    assert interleaved == [0] and item["ver"] == 2  # the claim's bump, then the retried write
    with pytest.raises(NotFoundError):
        store.set_session_fields("nobody", {"resp": {"id": "resp_2"}})
    assert stack.session_item("nobody") is None  # refused, not created
