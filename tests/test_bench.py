"""Issue 5: the per-turn EMF metrics (``kiddolingo.metrics``) and ``make bench`` (``infra.bench``).

Nothing here asserts a latency: the benchmark is run once, quickly, to prove it runs end to end
and reports every figure; the metrics are checked value by value.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from kiddolingo.metrics import UNITS, emit_turn_metrics, parse_emf, turn_figures
from kiddolingo.providers.errors import ProviderError
from kiddolingo.turn import TurnOutcome

ROOT = Path(__file__).resolve().parents[1]


def outcome(status: str = "completed", reason: str | None = None, **timings: float) -> TurnOutcome:
    out = TurnOutcome("resp_1", "item_1", status, reason=reason)
    for name, value in timings.items():
        setattr(out.timings, name, value)
    return out


# ---------------------------------------------------------------------------- turn_figures


def test_figures_of_a_completed_turn() -> None:
    figures = turn_figures(
        outcome(transcription_ms=612.5, chat_first_token_ms=455.0, speech_first_byte_ms=903.25)
    )
    assert figures == {
        "TranscriptionMs": 612.5,
        "ChatFirstTokenMs": 455.0,
        "SpeechFirstByteMs": 903.25,
        "Interruptions": 0.0,
        "ProviderErrors": 0.0,
    }
    assert set(figures) <= set(UNITS)


def test_unmeasured_timings_are_left_out() -> None:
    figures = turn_figures(outcome())  # a reply to response.create: no transcription at all
    assert "TranscriptionMs" not in figures and "VoiceToVoiceMs" not in figures
    assert figures["Interruptions"] == 0.0


@pytest.mark.parametrize(
    ("status", "reason", "interrupted"),
    [
        ("cancelled", "turn_detected", 1.0),  # barge-in: the child spoke over the tutor
        ("cancelled", "client_cancelled", 0.0),  # response.cancel is not an interruption
        ("cancelled", "connection_gone", 0.0),
        ("completed", None, 0.0),
    ],
)
def test_interruptions(status: str, reason: str | None, interrupted: float) -> None:
    assert turn_figures(outcome(status, reason))["Interruptions"] == interrupted


def test_provider_errors() -> None:
    failed = outcome("failed")
    failed.error = ProviderError("chat", "timeout", retryable=False, status=None, message="late")
    assert turn_figures(failed)["ProviderErrors"] == 1.0


def test_speculative_hits_and_misses() -> None:
    assert turn_figures(outcome(), speculative="hit") == {
        **turn_figures(outcome()),
        "SpeculativeHits": 1.0,
        "SpeculativeMisses": 0.0,
    }
    miss = turn_figures(outcome(), speculative="miss")
    assert (miss["SpeculativeHits"], miss["SpeculativeMisses"]) == (0.0, 1.0)
    assert "SpeculativeHits" not in turn_figures(outcome())
    with pytest.raises(ValueError):
        turn_figures(outcome(), speculative="maybe")


def test_voice_to_voice_when_the_timings_carry_it() -> None:
    direct = SimpleNamespace(timings=SimpleNamespace(voice_to_voice_ms=2_345.6), status="completed")
    assert turn_figures(direct)["VoiceToVoiceMs"] == 2_345.6
    # the end of speech as a monotonic time, and the first audio relative to the reply start
    derived = SimpleNamespace(
        timings=SimpleNamespace(started=100.5, speech_end_at=99.0, first_audio_ms=700.0),
        status="completed",
    )
    assert turn_figures(derived)["VoiceToVoiceMs"] == pytest.approx(2_200.0)


# ---------------------------------------------------------------------------- EMF


def test_emit_prints_one_emf_record_with_the_same_numbers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "KiddoLingoTest")
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", "kiddolingo-voice")
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    turn = outcome("cancelled", "turn_detected", transcription_ms=600.0, chat_first_token_ms=451.5)
    figures = emit_turn_metrics(turn, speculative="hit")

    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1
    record = json.loads(lines[0])
    (directive,) = record["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "KiddoLingoTest"
    assert directive["Dimensions"] == [["service"]]
    assert record["service"] == "kiddolingo-voice"
    assert record["response_id"] == "resp_1"
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        name: UNITS[name] for name in figures
    }
    # what CloudWatch extracts is exactly what turn_figures computed (the benchmark's numbers)
    assert parse_emf(out) == [figures]
    assert figures == turn_figures(turn, speculative="hit")
    assert figures["Interruptions"] == 1.0 and figures["SpeculativeHits"] == 1.0


def test_emit_can_be_disabled(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
    assert emit_turn_metrics(outcome(transcription_ms=1.0))["TranscriptionMs"] == 1.0
    assert capsys.readouterr().out == ""


def test_emit_never_raises(capsys: pytest.CaptureFixture[str]) -> None:
    assert emit_turn_metrics(object()) == {"Interruptions": 0.0, "ProviderErrors": 0.0}
    assert emit_turn_metrics(outcome(), speculative="bogus") == {}  # logged, not raised
    capsys.readouterr()


def test_concurrent_turns_do_not_mix_their_records(capsys: pytest.CaptureFixture[str]) -> None:
    def emit(n: int) -> None:
        emit_turn_metrics(outcome(transcription_ms=float(n)))

    threads = [threading.Thread(target=emit, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = parse_emf(capsys.readouterr().out)
    assert sorted(r["TranscriptionMs"] for r in records) == [float(n) for n in range(1, 9)]
    assert all(len(r) == 3 for r in records)


def test_importing_metrics_loads_neither_powertools_nor_openai() -> None:
    code = (
        "import sys, kiddolingo.metrics\n"
        "assert 'aws_lambda_powertools' not in sys.modules\n"
        "assert 'openai' not in sys.modules\n"
        "from kiddolingo.turn import TurnOutcome\n"
        "kiddolingo.metrics.emit_turn_metrics(TurnOutcome('r', 'i', 'completed'))\n"
        "assert 'openai' not in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_turn_observers_see_every_outcome_the_metrics_emit_while_registered(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``kiddolingo.observe``: the benchmark's hook into the turns, instead of patching them."""
    from kiddolingo import observe

    started: list[str] = []
    seen: list[TurnOutcome] = []
    turn = outcome(transcription_ms=1.0)
    with observe.observing(start=lambda: started.append("turn"), outcome=seen.append):
        observe.turn_started()
        emit_turn_metrics(turn, speculative="hit")
    assert started == ["turn"] and seen == [turn]
    assert observe.on_turn_start == [] and observe.on_turn_outcome == []
    emit_turn_metrics(turn)  # no observer any more
    assert seen == [turn]
    with pytest.raises(RuntimeError), observe.observing(outcome=seen.append):
        raise RuntimeError("the benchmark failed")
    assert observe.on_turn_outcome == []  # removed on the way out, whatever happened
    capsys.readouterr()


def test_the_audio_handler_loads_no_turn_machinery_on_a_cold_start() -> None:
    """The chunk path's imports (≤ 300 ms): no provider SDK and no asyncio, which only a turn
    needs (and imports when it runs)."""
    code = (
        "import sys, importlib.util\n"
        "spec = importlib.util.spec_from_file_location('app', 'functions/audio/app.py')\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print(sorted(m for m in ('openai', 'httpx', 'asyncio', 'kiddolingo.turn_io', "
        "'kiddolingo.observe') "
        "if m in sys.modules))\n"
    )
    env = {
        **os.environ,
        "TABLE_NAME": "t",
        "BUCKET_NAME": "b",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- the floor


def test_the_floor_follows_the_first_sentence_of_the_reply() -> None:
    from infra.bench import first_sentence_tokens, floor_ms, overhead_breakdown
    from infra.fake_openai import LatencyProfile

    reply = "¡Hola, Ana! 😊 (Hello, Ana!) ¿Cómo estás hoy? (How are you today?)"
    # "¡" "Hola" "," " Ana" "!" | " 😊" — the character after "!" closes the sentence
    assert first_sentence_tokens(reply) == 5
    # inside brackets, the closing mark decides: "(" "Hello" "!" ")" | " ¿"
    assert first_sentence_tokens("(Hello!) ¿Qué?") == 4
    profile = LatencyProfile()  # 600 / 450 + 40 tok/s / 200
    assert floor_ms(profile, reply, 1200) == pytest.approx(1200 + 600 + 450 + 5 * 25 + 200)
    assert floor_ms(LatencyProfile.zero(), reply, 1200) == 1200

    timeline = {
        "input_audio_buffer.speech_stopped": 1230.0,
        "conversation.item.input_audio_transcription.completed": 1900.0,
        "response.created": 1950.0,
        "response.output_audio_transcript.delta": 2700.0,
        "response.output_audio.delta": 2910.0,
    }
    stages = overhead_breakdown(timeline, profile, reply, 1200)
    assert len(stages) == 5
    overhead = timeline["response.output_audio.delta"] - floor_ms(profile, reply, 1200)
    assert sum(stages.values()) == pytest.approx(overhead)


# ---------------------------------------------------------------------------- make bench


@pytest.mark.slow
@pytest.mark.parametrize(
    ("aws", "provider", "rate", "containers"),
    [
        ("inprocess", "process", 16000, 0),
        ("process", "inprocess", 24000, 0),
        # Lambda's model: every invocation in a container process, reporting over a pipe.
        ("process", "process", 16000, 2),
    ],
)
def test_bench_quick_runs_and_reports_every_figure(
    tmp_path: Path, aws: str, provider: str, rate: int, containers: int
) -> None:
    from infra.bench import FIGURE_KEYS

    out_json = tmp_path / "bench.json"
    env = dict(os.environ, BENCH_JSON=str(out_json))
    for var in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        env.pop(var, None)
    done = subprocess.run(
        [sys.executable, "-m", "infra.bench", "--quick", "--aws", aws, "--provider", provider]
        + ([] if rate == 16000 else ["--input-rate", str(rate)])  # 16 kHz: the client's
        + (["--containers", str(containers)] if containers else []),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=110,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "voice-to-voice" in done.stdout and "AWS calls per append" in done.stdout

    figures = json.loads(out_json.read_text())
    assert figures["aws"] == aws and figures["provider"] == provider
    assert figures["input_rate"] == rate and f"input {rate // 1000} kHz PCM16" in done.stdout
    assert figures["containers"] == containers
    if containers:
        assert f"invocations in {containers} container processes" in done.stdout
        # The append that runs a turn holds its container: another one serves the next ones.
        assert 2 <= figures["containers_busy_max"] <= containers
    else:
        assert figures["containers_busy_max"] == 0
        assert "invocations in threads of this process" in done.stdout
    # Every turn's metrics reached the benchmark (from a container: over its pipe).
    assert figures["emf_records"] >= 4
    # In a pause the item holds the VAD's 300 ms prefix ring, packed: 10 KB of raw room noise
    # at 16 kHz (15 KB at 24 kHz) in about half of that.
    pause_kb = figures["connection_item_kb_silence"]
    assert (2.0 < pause_kb < 7.0) if rate == 16000 else (3.0 < pause_kb < 10.0), pause_kb
    missing = [key for key in FIGURE_KEYS if key not in figures]
    assert not missing, missing
    for key in FIGURE_KEYS:
        assert isinstance(figures[key], int | float) and not isinstance(figures[key], bool), (
            key,
            figures[key],
        )
    # two turns with the speculative turn off (streaming), two as deployed
    assert figures["turns"] == figures["turns_measured"] == 4
    assert figures["turn_statuses"] == ["completed"] * 4
    assert [t["mode"] for t in figures["per_turn"]] == ["streaming"] * 2 + ["speculative"] * 2
    assert figures["aws_calls_per_append_mean"] > 0
    # An append that runs a turn is the turn's, not the chunk path's (in a container all of the
    # turn's ~80 calls are its invocation's): the chunk path's worst append stays small.
    assert figures["aws_calls_per_append_max"] < 20, figures["aws_calls_per_append_max"]
    assert figures["aws_calls_per_turn_mean"] > figures["aws_calls_per_append_mean"]
    assert figures["chunk_path_imports_openai"] is False
    assert figures["voice_to_voice_p50_ms"] >= figures["silence_ms"]
    assert figures["speculative_voice_to_voice_p50_ms"] >= figures["silence_ms"]
    assert figures["sequential_p50_ms"] >= figures["silence_ms"]
    assert all(t["figures"].get("TranscriptionMs") is not None for t in figures["per_turn"])
    assert set(figures["targets"]) and all("ok" in t for t in figures["targets"].values())
    assert figures["audio_objects_left"] == 0  # the children's audio is gone after the turns
    # The fake's lateness over its profile, by endpoint: never early (it paces by deadlines
    # from the moment a request was read), and named in the table.
    for mode in ("streaming", "speculative"):
        late = figures["modes"][mode]["provider_lateness_p50_ms"]
        # (Speech over the Realtime API has no request of its own to time.)
        assert {"transcriptions", "chat", "moderations"} <= set(late), late
        assert all(v >= 0 for v in late.values()), late
    assert "the fake provider's lateness over its profile (p50), speculative:" in done.stdout
    # The bill per child-hour: AWS line by line, both model sets of the providers, dated.
    assert f"AWS $ per child-hour (prices of {figures['prices_date']})" in done.stdout
    for mode in ("streaming", "speculative"):
        bill = figures["cost"][mode]
        assert set(bill["provider"]) == {"old defaults", "successors"}
        assert all(v["usd_per_hour"] > 0 for v in bill["provider"].values())
        assert bill["aws_usd_per_hour"] == pytest.approx(
            sum(line["usd_per_hour"] for line in bill["aws_lines"]), abs=1e-3
        )
        # Every append writes the connection item: the meter saw those writes (in any mode).
        assert bill["dynamodb_by_call"]["UpdateItem conn"]["calls_per_hour"] > 10_000
    # The child sends as the page does: several 100 ms blocks in one append where nothing
    # waits on them.
    assert figures["chunking"] == "page" and figures["audio_ms_per_append"] > 120

    # An append over the 3-call budget is named in the table, with what it cost.
    from infra.bench import table

    heavy = {
        "kind": "silence",
        "seq": 7,
        "calls": {"dynamodb.GetItem": 2, "dynamodb.UpdateItem": 3},
    }
    lines = table({**figures, "appends_over_3_calls": [heavy]}).splitlines()
    assert f"appends over 3 calls: 1 of {figures['appends_measured']} (#7 silence: 5)" in lines


def test_a_setting_given_to_the_bench_reaches_the_handlers_over_the_template(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from infra import template as tpl
    from infra.bench import config
    from infra.bench.cli import parse_args
    from infra.bench.driver import handler_environment

    args = parse_args(["--env", "MAX_TURNS_PER_MINUTE=0", "--env", "LESSON_PLAN=a=b"])
    assert args.env == [("MAX_TURNS_PER_MINUTE", "0"), ("LESSON_PLAN", "a=b")]
    monkeypatch.setattr(config, "HANDLER_ENV", dict(args.env))
    env = handler_environment(tpl.functions(), SimpleNamespace(base_url="http://x/v1"), "both")
    assert env["MAX_TURNS_PER_MINUTE"] == "0" and env["LESSON_PLAN"] == "a=b"
    with pytest.raises(SystemExit):
        parse_args(["--env", "MAX_TURNS_PER_MINUTE"])


def test_a_container_that_dies_fails_its_invocation_and_is_not_reused() -> None:
    """``--containers``: an invocation whose container dies ends with an error (it does not
    hang the benchmark), and the dead container is never handed another invocation."""
    from infra.bench import BUCKET, TABLE, Invocation
    from infra.containers import ContainerPool

    env: dict[str, str | None] = {
        **os.environ,
        "TABLE_NAME": TABLE,
        "BUCKET_NAME": BUCKET,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    with ContainerPool(
        1,
        env,
        on_post=lambda *_: None,
        on_outcome=lambda *_: None,
        warm=False,
        idle_timeout_s=0.5,
    ) as pool:
        # A route the container does not serve: its main loop raises, the process exits.
        error, emf = pool.invoke("$nowhere", {}, Invocation("control"))
        assert error == {"errorMessage": "the container died"} and emf == ""
        pool.containers[0].process.join(timeout=10)
        assert not pool.containers[0].process.is_alive()
        with pytest.raises(RuntimeError, match="no benchmark container"):
            pool.invoke("$default", {}, Invocation("control"))


def test_containers_are_handed_out_most_recently_used_first_or_at_random() -> None:
    import queue

    from infra.containers import _Idle

    mru = _Idle("mru")
    for c in ("a", "b", "c"):
        mru.put(c)  # type: ignore[arg-type]
    assert [mru.get(0.1) for _ in range(3)] == ["c", "b", "a"]
    with pytest.raises(queue.Empty):
        mru.get(0.01)
    seen = set()
    for _ in range(200):
        anyone = _Idle("random")
        for c in ("a", "b", "c"):
            anyone.put(c)  # type: ignore[arg-type]
        seen.add(anyone.get(0.1))
    assert seen == {"a", "b", "c"}
    with pytest.raises(ValueError):
        _Idle("round-robin")


# ---------------------------------------------------------------------------- the cost model


def test_a_write_bills_the_larger_item_in_started_kilobytes() -> None:
    from infra.cost import write_units

    assert write_units(0, 1) == 1  # the smallest write is one unit
    assert write_units(1024, 1024) == 1
    assert write_units(1024, 1025) == 2
    assert write_units(10_600, 900) == 11  # shrinking an item bills what it was
    assert write_units(0, 0) == 1  # a failed conditional write on a missing item


def test_a_read_bills_started_4_kb_and_half_when_eventually_consistent() -> None:
    from infra.cost import read_units

    assert read_units(100, consistent=True) == 1.0
    assert read_units(100, consistent=False) == 0.5
    assert read_units(4096, consistent=True) == 1.0
    assert read_units(4097, consistent=True) == 2.0
    assert read_units(16_400, consistent=False) == 2.5


def test_messages_bill_in_32_kb_units_and_lambda_in_rounded_ms_gb_seconds() -> None:
    from infra.cost import lambda_gb_seconds, message_units

    assert message_units(0) == message_units(4500) == message_units(32 * 1024) == 1
    assert message_units(32 * 1024 + 1) == 2
    assert lambda_gb_seconds(10.2, 512) == pytest.approx(0.011 * 0.5)
    assert lambda_gb_seconds(1000.0, 1024) == pytest.approx(1.0)


def test_an_hour_of_appends_priced_line_by_line() -> None:
    """The issue's arithmetic, redone by the model: 36,000 appends of a 14 KB item."""
    from infra import prices
    from infra.cost import AwsUsage, DynamoCall, aws_lines, per_hour, total

    appends = 36_000
    usage = AwsUsage(
        seconds=3600.0,
        dynamodb=[DynamoCall("UpdateItem", "conn", before=14_000, after=14_100)] * appends,
        messages_in=[4_400] * appends,
        messages_out=[300] * 9_000,
        connection_minutes=60.0,
        lambda_invocations=[(20.4, 512)] * appends,
        s3_put_class=2_460,
        s3_get_class=300,
    )
    lines = {line.name: line for line in aws_lines(usage)}
    assert lines["DynamoDB writes"].quantity == 14 * appends
    assert lines["DynamoDB writes"].usd == pytest.approx(14 * appends * 0.625e-6)
    assert lines["API Gateway messages in"].usd == pytest.approx(0.036)
    assert lines["API Gateway messages out"].usd == pytest.approx(0.009)
    assert lines["Lambda requests"].usd == pytest.approx(appends * 0.2e-6)
    assert lines["Lambda duration"].quantity == pytest.approx(appends * 0.021 * 0.5)
    assert lines["S3 PUT/POST/LIST"].usd == pytest.approx(2_460 * 0.005e-3)
    assert per_hour(total(lines.values()), usage.seconds) == pytest.approx(total(lines.values()))
    assert per_hour(1.0, 1800.0) == 2.0
    assert prices.PRICES_DATE and prices.REGION == "us-east-1"


def test_both_model_sets_are_priced_and_unconfirmed_prices_say_so() -> None:
    from infra import prices
    from infra.cost import ProviderUsage, provider_lines, total

    usage = ProviderUsage(
        seconds=3600.0,
        transcription_s=600.0,
        chat_input_tokens=1_000_000,
        chat_output_tokens=100_000,
        speech_characters=50_000,
        speech_audio_s=3000.0,
        speech_text_tokens=20_000,
        moderation_requests=2_000,
    )
    old = {line.name: line for line in provider_lines(usage, prices.MODEL_SETS["old defaults"])}
    assert old["transcription whisper-1"].usd == pytest.approx(10 * 0.006)
    assert old["chat gpt-4o input"].usd == pytest.approx(2.50)
    assert old["chat gpt-4o output"].usd == pytest.approx(1.00)
    assert old["speech tts-1-hd"].usd == pytest.approx(1.50)
    assert old["moderation omni-moderation-latest"].usd == 0.0
    # gpt-4o's price was not found in a source: the line says so.
    assert old["chat gpt-4o input"].note == "price unconfirmed"

    new = {line.name: line for line in provider_lines(usage, prices.MODEL_SETS["successors"])}
    assert new["transcription gpt-transcribe"].usd == pytest.approx(10 * 0.0045)
    assert new["chat gpt-6-luna input"].usd == pytest.approx(0.10)
    audio = new["speech gpt-realtime-2.1-mini audio out"]
    assert audio.quantity == 3000.0 * prices.REALTIME_AUDIO_TOKENS_PER_S
    assert audio.usd == pytest.approx(audio.quantity * 20e-6)
    assert "estimated" in audio.note  # not what the provider reported
    reported = provider_lines(
        ProviderUsage(seconds=1.0, realtime_audio_tokens=1000.0), prices.MODEL_SETS["successors"]
    )
    (audio_reported,) = [line for line in reported if line.name.endswith("audio out")]
    assert audio_reported.quantity == 1000.0 and audio_reported.note == ""
    assert total(new.values()) < total(old.values())


def test_the_dynamodb_meter_sees_item_sizes_before_and_after_each_write() -> None:
    """Through moto: a growing item, a shrinking one, a failed condition, reads of both kinds,
    and the benchmark's own read left out."""
    import boto3
    from botocore.exceptions import ClientError
    from moto import mock_aws

    from infra.dynamo_meter import DynamoMeter

    with mock_aws(), DynamoMeter().installed() as meter:
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        ddb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        key = {"pk": {"S": "conn#a"}}
        ddb.put_item(TableName="t", Item={**key, "n": {"N": "1"}})
        ddb.update_item(
            TableName="t",
            Key=key,
            UpdateExpression="SET ring = :r",
            ExpressionAttributeValues={":r": {"B": b"\0" * 5000}},
        )
        ddb.update_item(TableName="t", Key=key, UpdateExpression="REMOVE ring")
        with pytest.raises(ClientError):
            ddb.update_item(
                TableName="t",
                Key=key,
                UpdateExpression="SET n = :two",
                ConditionExpression="n = :zero",
                ExpressionAttributeValues={":two": {"N": "2"}, ":zero": {"N": "0"}},
            )
        ddb.get_item(TableName="t", Key=key, ConsistentRead=True)
        ddb.get_item(TableName="t", Key=key)
        ddb.get_item(TableName="t", Key=key, ReturnConsumedCapacity="TOTAL")  # the bench's own
    put, grow, shrink, failed, strong, eventual = meter.calls
    assert (put.op, put.item, put.before) == ("PutItem", "conn", 0)
    assert put.after == len("pk") + len("conn#a") + len("n") + 1
    assert grow.before == put.after and grow.after == put.after + len("ring") + 5000
    assert grow.wru == 5 and shrink.wru == 5  # a write bills the larger of the two (5,014 B)
    assert shrink.after == put.after
    assert failed.failed and failed.wru == 1
    assert strong.consistent and strong.rru == 1.0
    assert not eventual.consistent and eventual.rru == 0.5


def test_quotas_on_paper_bind_in_order_of_children() -> None:
    from infra.cost import AwsUsage, DynamoCall, child_rates, children_per_quota

    usage = AwsUsage(
        seconds=10.0,
        dynamodb=[DynamoCall("UpdateItem", "conn", before=5000, after=5000)] * 100,
        messages_in=[4400] * 100,
        lambda_invocations=[(50.0, 1024)] * 100,
    )
    rates = child_rates(usage)
    assert rates.messages_in_per_s == 10.0 and rates.lambda_concurrency == 0.5
    assert rates.wru_per_s == rates.hot_item_wru_per_s == 50.0
    first, *rest = children_per_quota(rates)
    # 10 messages a second each: the stage's 1,000/s binds at 100 children, before Lambda's
    # 1,000 executions (2,000 children) or the table's 40,000 WRU/s (800).
    assert first[0].uses == "messages_in_per_s" and first[1] == 100.0
    assert [n for _q, n in rest] == sorted(n for _q, n in rest)
    hot = {q.uses: n for q, n in rest}["hot_item_wru_per_s"]
    assert hot == float("inf")  # 50 WRU/s on one item is far from a partition's 1,000
