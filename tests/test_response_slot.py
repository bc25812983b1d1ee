"""Issue 21 §8 and §13: the connection's response slot cannot stay taken, every turn ends with
``response.done`` whatever went wrong, and a released speculation holds the slot from the very
write that releases it (so a barge-in finds it). Through the real handlers under moto."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError

from kiddolingo.settings import Settings
from tests.support.aws_stack import TABLE
from tests.test_faults import (
    REPLY_1,
    REPLY_3,
    Client,
    _management_client,
    assert_completed_turn,
    configure,
    done,
    errors,
    types,
)


def fail_once(stack: Any, conn: str, event_type: str) -> dict[str, int]:
    """The first post of ``event_type`` to ``conn`` fails with a 500 (not a 410)."""
    from infra.containers import CapturedPost

    state = {"failed": 0}

    def hook(params: dict[str, Any], **_: Any) -> Any:
        if state["failed"] or json.loads(params["body"]).get("type") != event_type:
            return None
        state["failed"] += 1
        return CapturedPost(500), {
            "Error": {"Code": "InternalServerErrorException", "Message": "injected"},
            "ResponseMetadata": {"HTTPStatusCode": 500},
        }

    _management_client(conn).meta.events.register_first(
        "before-call.apigatewaymanagementapi.PostToConnection", hook
    )
    return state


def assert_turn_failed(events: list[dict[str, Any]]) -> None:
    seq = types(events)
    assert seq.count("response.created") == 1 and seq[-1] == "response.done", seq
    response = done(events)
    assert response["status"] == "failed"
    assert response["status_details"]["error"]["code"] == "turn_failed"


def test_a_post_failing_mid_turn_still_ends_the_response(stack, fake_openai) -> None:
    fake_openai.script_transcripts("Hola", "Otra vez")
    fake_openai.script_replies(REPLY_1, REPLY_3)
    child = Client(stack, conn="conn-post=")
    failure = fail_once(stack, child.conn, "response.output_audio.delta")
    events = child.turn()
    assert failure["failed"] == 1
    assert_turn_failed(events)
    assert "resp" not in stack.connection_item(child.conn)  # the slot is free at once
    assert stack.audio_keys() == []
    # the session goes on
    assert_completed_turn(child.turn(), REPLY_3)


def test_a_dynamodb_timeout_mid_turn_still_ends_the_response(stack, fake_openai) -> None:
    from kiddolingo import aws

    fake_openai.script_transcripts("Hola", "Otra vez")
    fake_openai.script_replies(REPLY_1, REPLY_3)
    child = Client(stack, conn="conn-ddb=")
    state = {"raised": 0}

    def time_out_the_history_read(params: dict[str, Any], **_: Any) -> None:
        body = json.loads(params["body"])
        if state["raised"] or not body["Key"]["pk"]["S"].startswith("session#"):
            return
        state["raised"] += 1
        raise ReadTimeoutError(endpoint_url="https://dynamodb.us-east-1.amazonaws.com")

    client = aws._client("dynamodb")
    client.meta.events.register_first("before-call.dynamodb.GetItem", time_out_the_history_read)
    try:
        events = child.turn()
    finally:
        client.meta.events.unregister("before-call.dynamodb.GetItem", time_out_the_history_read)
    assert state["raised"] == 1
    assert types(events)[0] == "input_audio_buffer.committed"
    assert_turn_failed(events)
    assert "resp" not in stack.connection_item(child.conn)
    assert_completed_turn(child.turn(), REPLY_1)  # (the failed turn never reached the chat)


def test_a_turn_that_hangs_ends_at_its_lease(monkeypatch, stack, fake_openai) -> None:
    """Something hangs past every timeout (here a DynamoDB read): the turn is ended at the
    slot's lease, with response.done failed, long before Lambda's own timeout would cut it off
    silently."""
    from kiddolingo import aws

    configure(
        monkeypatch,
        RESPONSE_LEASE_S="1",
        TURN_DEADLINE_S="1",
        PROVIDER_TIMEOUT_S="0.5",
        PROVIDER_MAX_RETRIES="0",
    )
    lease = Settings.from_env().lease_s
    assert lease < 10
    fake_openai.script_transcripts("Hola")
    child = Client(stack, conn="conn-hang=")
    hung = threading.Event()

    def hang(params: dict[str, Any], **_: Any) -> None:
        body = json.loads(params["body"])
        if hung.is_set() or not body["Key"]["pk"]["S"].startswith("session#"):
            return
        hung.set()
        time.sleep(lease + 2)

    client = aws._client("dynamodb")
    client.meta.events.register_first("before-call.dynamodb.GetItem", hang)
    t0 = time.monotonic()
    try:
        events = child.turn()
    finally:
        client.meta.events.unregister("before-call.dynamodb.GetItem", hang)
    assert hung.is_set() and time.monotonic() - t0 < lease + 1
    assert_turn_failed(events)


def _hold_the_slot(stack: Any, conn: str, expires_in_s: float) -> None:
    """A response slot left as a turn that died would leave it (no response.done ever came)."""
    stack.ddb.update_item(
        TableName=TABLE,
        Key={"pk": {"S": f"conn#{conn}"}},
        UpdateExpression="SET resp = :r, rexp = :x ADD cver :one",
        ExpressionAttributeValues={
            ":r": {"S": "resp_dead"},
            ":x": {"N": str(int(time.time() + expires_in_s))},
            ":one": {"N": "1"},
        },
    )


def test_a_slot_left_behind_expires_with_its_lease(stack, fake_openai) -> None:
    fake_openai.script_replies(REPLY_1)
    child = Client(stack, conn="conn-lease=")
    _hold_the_slot(stack, child.conn, expires_in_s=30)
    assert errors(child.send({"type": "response.create"})) == [
        "conversation_already_has_active_response"
    ]
    _hold_the_slot(stack, child.conn, expires_in_s=-1)  # the lease ran out
    events = child.send({"type": "response.create"})
    # the dead response is ended for the client (its page may still show it speaking) ...
    first = events[0]
    assert first["type"] == "response.done" and first["response"]["id"] == "resp_dead"
    assert first["response"]["status"] == "failed"
    # ... and the new one is answered
    assert_completed_turn(events[1:], REPLY_1)


def test_the_lease_outlasts_a_turn() -> None:
    settings = Settings.from_env({"TURN_DEADLINE_S": "20", "RESPONSE_LEASE_S": "5"})
    assert settings.lease_s > 20 + 10 * 3  # the deadline and every transcription attempt
    assert Settings.from_env({"RESPONSE_LEASE_S": "300"}).lease_s == 300


@pytest.fixture
def speculative(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_SPECULATIVE_FRACTION", "0.15")


def test_a_barge_in_right_after_a_release_cancels_the_speculation(
    speculative, stack, fake_openai
) -> None:
    """The child speaks again just after the pause released the prepared answer, before that
    answer recorded itself as the response in flight: the barge-in still finds it (the release
    took the response slot in the same write) and stops it."""
    from kiddolingo import aws
    from tests.support.speech import chunks, speak
    from tests.test_server_vad import CONN, SILENCE, start_vad
    from tests.test_speculative import deliver_in_real_time

    Client(stack, conn="conn-warm=").turn()  # the provider SDK loaded, as in a warm container
    fake_openai.reset()
    fake_openai.script_transcripts("I like cats.", "And dogs.")
    start_vad(stack)
    held = threading.Event()

    def records_the_response(body: dict[str, Any]) -> bool:
        key = body["Key"]["pk"]["S"]
        expr = body["UpdateExpression"]
        names = (body.get("ExpressionAttributeNames") or {}).values()
        if key.startswith("conn#"):
            return expr.startswith("SET resp = :r")  # (how the claim was written before)
        return key.startswith("session#") and "resp" in names and "hist" not in names

    def hold_until_the_child_speaks_again(params: dict[str, Any], **_: Any) -> None:
        if held.is_set() or not records_the_response(json.loads(params["body"])):
            return
        held.set()
        deadline = time.monotonic() + 5
        while stack.recorder.types(CONN).count("input_audio_buffer.speech_started") < 2:
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)

    aws._client("dynamodb").meta.events.register_first(
        "before-call.dynamodb.UpdateItem", hold_until_the_child_speaks_again
    )
    speech = chunks(speak("I like cats."))
    deliver_in_real_time(stack, [SILENCE] * 3 + speech + [SILENCE] * 13 + speech + [SILENCE] * 16)

    assert held.is_set()
    events = stack.recorder.events(CONN)
    finished = [e["response"] for e in events if e["type"] == "response.done"]
    assert finished and finished[0]["status"] == "cancelled", [r["status"] for r in finished]


# --------------------------------------------------------------------------- storage races


def test_audio_written_before_a_commit_that_finds_the_connection_gone_is_deleted(
    stack, fake_openai
) -> None:
    """The child's connection closes while an append writes its audio to S3: $disconnect
    deleted the audio the item listed, before this object existed, and the append's commit
    then finds no connection. The append deletes what it wrote."""
    from kiddolingo import aws
    from tests.test_faults import tone

    child = Client(stack, conn="conn-vanish=")
    gone = threading.Event()

    def disconnect_during_the_write(**_: Any) -> None:
        if not gone.is_set():
            gone.set()
            child.disconnect()

    client = aws._client("s3")
    client.meta.events.register_first("before-call.s3.PutObject", disconnect_during_the_write)
    try:
        child.stream(tone(1500))
    finally:
        client.meta.events.unregister("before-call.s3.PutObject", disconnect_during_the_write)
    assert gone.is_set() and stack.connection_item(child.conn) is None
    assert stack.audio_keys() == []


def test_an_utterance_committed_while_response_create_takes_the_waiting_ones_is_kept(
    stack, fake_openai
) -> None:
    """``response.create`` takes the utterances waiting for it; one more is committed between
    its read and its write. Its words reach the turn with the others (they were dropped, and
    their audio left behind, when the list was removed whatever it held)."""
    from kiddolingo import aws
    from kiddolingo.ingest import Utterance
    from tests.support.aws_stack import BUCKET
    from tests.test_faults import tone

    fake_openai.script_transcripts("Hola, me llamo Ana")
    fake_openai.script_replies(REPLY_1)
    child = Client(stack, conn="conn-ready=")
    audio = [tone(300, freq=200.0), tone(300, freq=300.0)]
    waiting = []
    for i, pcm in enumerate(audio):
        uid = f"u{i:010d}"
        key = f"audio/{child.sid}/{uid}/000000001-x.pcm"
        stack.s3.put_object(Bucket=BUCKET, Key=key, Body=pcm)
        utt = Utterance(uid, f"item_{uid}", i * 1000, (key,), len(pcm), end_ms=i * 1000 + 300)
        waiting.append(utt.to_item())

    def set_ready(items: list[dict[str, Any]]) -> None:
        from kiddolingo.store import to_attr

        stack.ddb.update_item(
            TableName=TABLE,
            Key={"pk": {"S": f"conn#{child.conn}"}},
            UpdateExpression="SET ready = :r ADD cver :one",
            ExpressionAttributeValues={":r": to_attr(items), ":one": {"N": "1"}},
        )

    set_ready(waiting[:1])
    raced = threading.Event()

    def commit_one_more_meanwhile(params: dict[str, Any], **_: Any) -> None:
        body = json.loads(params["body"])
        if not raced.is_set() and body["UpdateExpression"].startswith("REMOVE ready"):
            raced.set()
            set_ready(waiting)

    client = aws._client("dynamodb")
    client.meta.events.register_first("before-call.dynamodb.UpdateItem", commit_one_more_meanwhile)
    try:
        events = child.send({"type": "response.create"})
    finally:
        client.meta.events.unregister("before-call.dynamodb.UpdateItem", commit_one_more_meanwhile)
    assert raced.is_set()
    assert_completed_turn(events, REPLY_1)
    (request,) = fake_openai.requests("audio/transcriptions")
    assert request.pcm == b"".join(audio)  # both utterances, in order
    assert "ready" not in stack.connection_item(child.conn)
    assert stack.audio_keys() == []
