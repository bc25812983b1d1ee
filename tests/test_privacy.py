"""Issue 6 §5: children's voices are not kept, and their words stay out of the logs.

Through the real handlers: every way an utterance can end (a turn, a failed turn, a refused
turn, ``input_audio_buffer.clear``, a disconnect mid-utterance) leaves no audio in S3; silence
never reaches S3; a turn logs no transcript at any log level unless ``LOG_TRANSCRIPTS=true``.
The storage settings of ``template.yaml`` (encryption, public access block, the one-day
lifecycle, the TTL, least-privilege IAM) are pinned in ``tests/test_template.py``; what this
file adds about the template is what the privacy story needs beyond those.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from infra import template as tpl
from kiddolingo import chunks
from tests.support.aws_stack import BUCKET
from tests.test_faults import Client, configure, done, errors, tone, types
from tests.test_limits import in_one_minute

WORDS = "Mi tortuga se llama Zanahoria"
REPLY = "¡Zanahoria es un nombre genial! 🥕 (Carrot is a great name!)"


def s3_writes(stack: Any) -> list[str]:
    """Record the key of every object the handlers put into the audio bucket."""
    from kiddolingo import aws

    keys: list[str] = []

    def hook(params: dict[str, Any], **_: Any) -> None:
        keys.append(params["url_path"])

    aws._client("s3").meta.events.register("before-call.s3.PutObject", hook)
    return keys


# --------------------------------------------------------------------------- audio


def kept_in_memory(child: Client) -> list[str]:
    """The keys of this child's audio the (one, in-process) container keeps in memory."""
    return sorted(k for k in chunks.RECENT.stored() if k.startswith(f"audio/{child.sid}/"))


def test_a_turns_audio_is_deleted_once_the_turn_is_done(stack, fake_openai) -> None:
    fake_openai.script_transcripts(WORDS)
    fake_openai.script_replies(REPLY)
    writes = s3_writes(stack)
    child = Client(stack)
    child.stream(tone(500))
    held = stack.audio_keys()
    assert held and all(k.startswith(f"audio/{child.sid}/") for k in held)
    assert writes  # the audio really went through S3 ...
    assert kept_in_memory(child) == held  # (and the container that wrote it keeps a copy)
    events = child.send({"type": "input_audio_buffer.commit"})
    assert done(events)["status"] == "completed"
    assert stack.audio_keys() == []  # ... and is gone once its turn is done
    assert kept_in_memory(child) == []  # from the container's memory too


def test_audio_is_deleted_however_the_utterance_ends(monkeypatch, stack, fake_openai) -> None:
    """A failed turn, a refused turn, clear, a disconnect and a 410, each on its own connection:
    no audio is left behind by any of them."""
    configure(monkeypatch, MAX_TURNS_PER_MINUTE="1")
    for how in ["failed-turn", "refused-turn", "clear", "disconnect", "410"]:
        child = Client(stack, conn=f"conn-{how}=")
        if how == "refused-turn":
            in_one_minute(10)
            child.turn()  # uses up this session's one turn a minute
        child.stream(tone(1000))  # more than the newest audio the connection item holds
        assert stack.audio_keys(), how
        if how == "failed-turn":
            injected = fake_openai.fail("transcriptions", status=400, times=None)
            events = child.send({"type": "input_audio_buffer.commit"})
            injected.times = 0
            assert done(events)["status"] == "failed"
        elif how == "refused-turn":
            assert errors(child.send({"type": "input_audio_buffer.commit"})) == ["rate_limited"]
        elif how == "clear":
            assert types(child.send({"type": "input_audio_buffer.clear"})) == [
                "input_audio_buffer.cleared"
            ]
        elif how == "disconnect":
            child.disconnect()
        elif how == "410":
            stack.recorder.gone.add(child.conn)
            child.send({"type": "input_audio_buffer.commit"})
            assert stack.connection_item(child.conn) is None
        assert stack.audio_keys() == [], how
        if how != "disconnect":
            # The audio function forgets what it kept; $disconnect runs in containers of its
            # own, so there the copy is bounded by RECENT_TTL_S (chunks.RecentChunks).
            assert kept_in_memory(child) == [], how


def test_silence_never_reaches_s3(stack, fake_openai) -> None:
    """Server VAD: only speech (and its prefix padding) is stored, never the silence."""
    writes = s3_writes(stack)
    child = Client(stack, vad={"type": "server_vad"})
    rng = __import__("numpy").random.default_rng(7)
    hiss = (rng.normal(0, 30, 24000 * 2)).astype("<i2").tobytes()  # 2 s of quiet room noise
    events = child.stream(hiss)
    assert errors(events) == [] and "input_audio_buffer.speech_started" not in types(events)
    assert writes == []
    assert stack.audio_keys() == []


def test_the_bucket_is_encrypted_and_private_as_created(stack) -> None:
    """The bucket the tests run against is built from template.yaml: check it as AWS holds it."""
    enc = stack.s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]
    (rule,) = enc["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    block = stack.s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"]
    assert all(block.values()) and len(block) == 4
    (life,) = stack.s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert life["Status"] == "Enabled" and life["Expiration"]["Days"] == 1
    assert stack.s3.get_bucket_versioning(Bucket=BUCKET).get("Status") in (None, "Suspended")


# --------------------------------------------------------------------------- sessions expire


def test_sessions_and_connections_carry_their_expiry(monkeypatch, stack) -> None:
    configure(monkeypatch, SESSION_TTL_HOURS="2")
    child = Client(stack)
    child.send({"type": "session.update", "session": {"tutor": {"learner_age": 9}}})
    now = time.time()
    ttl = tpl.table_ttl_attribute()
    session = stack.session_item(child.sid)
    assert now + 2 * 3600 - 60 < session[ttl] <= now + 2 * 3600 + 5  # renewed on each write
    connection = stack.connection_item(child.conn)
    assert now < connection[ttl] <= now + 3 * 3600 + 5  # API Gateway caps a connection at 2 h
    described = stack.ddb.describe_time_to_live(TableName="kiddolingo-test-sessions")
    assert described["TimeToLiveDescription"]["AttributeName"] == ttl


def test_an_expired_session_cannot_be_resumed(stack) -> None:
    """DynamoDB deletes expired items up to a few days late: the code treats them as gone."""
    from tests.support.events import connect_event

    child = Client(stack)
    stack.ddb.update_item(
        TableName="kiddolingo-test-sessions",
        Key={"pk": {"S": f"session#{child.sid}"}},
        UpdateExpression="SET expires_at = :past",
        ExpressionAttributeValues={":past": {"N": str(int(time.time()) - 10)}},
    )
    out = stack.invoke(
        "$connect", connect_event(query={"session_id": child.sid}, connection_id="conn-late=")
    )
    assert out["statusCode"] == 404


# --------------------------------------------------------------------------- logs


def _run_a_turn(
    stack: Any, fake: Any, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> tuple[str, list[logging.LogRecord]]:
    caplog.set_level(logging.DEBUG)  # the most talkative level there is
    fake.script_transcripts(WORDS, "Y tengo un perro")
    fake.script_replies(REPLY, "¡Qué bien! (Great!)")
    fake.flag("perro", "violence", 0.9)  # a flagged turn logs nothing more either
    for fn in stack.functions.values():
        fn.load()  # from here the package's loggers use the handlers' Powertools Logger,
    # which does not propagate to caplog: listen on each of them too.
    seen: list[logging.LogRecord] = []
    listener = logging.Handler()
    listener.emit = seen.append  # type: ignore[method-assign]
    package = [
        logging.getLogger(name)
        for name in list(logging.root.manager.loggerDict)
        if name.startswith("kiddolingo")
    ]
    for lg in package:
        lg.addHandler(listener)
    try:
        child = Client(stack)
        child.turn()
        child.turn()
        fake.fail("chat", status=500, times=None)  # nor does a failed one
        child.turn()
    finally:
        for lg in package:
            lg.removeHandler(listener)
    out, err = capfd.readouterr()
    return out + err, [*caplog.records, *seen]


def _leaks(text: str, records: list[logging.LogRecord], words: list[str]) -> list[str]:
    found = []
    for record in records:
        blob = f"{record.getMessage()} {record.__dict__!r}"
        found += [f"{record.name}: {w}" for w in words if w in blob]
    found += [f"stdout/stderr: {w}" for w in words if w in text]
    return found


SECRET_WORDS = ["Zanahoria", "tortuga", "nombre genial", "Carrot", "perro"]


def test_no_transcripts_in_the_logs(stack, fake_openai, caplog, capfd) -> None:
    text, records = _run_a_turn(stack, fake_openai, caplog, capfd)
    assert records  # the handlers did log
    assert _leaks(text, records, SECRET_WORDS) == []


def test_transcripts_in_the_logs_only_when_enabled(
    monkeypatch, stack, fake_openai, caplog, capfd
) -> None:
    configure(monkeypatch, LOG_TRANSCRIPTS="true")
    _, records = _run_a_turn(stack, fake_openai, caplog, capfd)
    ours = [r for r in records if r.name.startswith("kiddolingo") and WORDS in r.getMessage()]
    assert ours and ours[0].levelno == logging.INFO
    # formatted by the handler's Powertools Logger as JSON (in Lambda each function is its own
    # process, so the audio function's Logger and its connection/session keys are the ones)
    # (the handler modules give the package logger their Logger's handler)
    line = json.loads(logging.getLogger("kiddolingo").handlers[0].format(ours[0]))
    assert line["level"] == "INFO" and line["name"] == "kiddolingo.tutor.turn_flow"
    # still nothing from the libraries underneath: only our own, deliberate lines
    leaked = {r.name for r in records if WORDS in f"{r.getMessage()} {r.__dict__!r}"}
    assert leaked == {"kiddolingo.tutor.turn_flow"}


# --------------------------------------------------------------------------- template


def test_template_keeps_logs_and_events_lean() -> None:
    """Logs expire too, whole events (audio, tokens) are never logged, transcripts stay out
    unless a deploy asks for them, and nothing keeps conversations past their TTL."""
    template = tpl.load_template()
    resources = template["Resources"]
    functions = {k for k, v in resources.items() if v["Type"] == "AWS::Serverless::Function"}
    groups = [v for v in resources.values() if v["Type"] == "AWS::Logs::LogGroup"]
    named = {str(g["Properties"]["LogGroupName"]) for g in groups}
    for fn in functions:
        assert any(fn in name for name in named), f"{fn} has no log group with a retention"
    assert all(0 < g["Properties"]["RetentionInDays"] <= 30 for g in groups)
    env = template["Globals"]["Function"]["Environment"]["Variables"]
    assert env["POWERTOOLS_LOGGER_LOG_EVENT"] == "false"
    assert env["LOG_TRANSCRIPTS"] == {"Ref": "LogTranscripts"}
    assert template["Parameters"]["LogTranscripts"]["Default"] == "false"
    table = resources["SessionsTable"]["Properties"]
    assert not table.get("PointInTimeRecoverySpecification", {}).get(
        "PointInTimeRecoveryEnabled", False
    )
    assert "StreamSpecification" not in table  # no copy of the conversations elsewhere
