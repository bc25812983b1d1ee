"""One scripted conversation, set up and run: the handlers' environment, AWS (moto in this
process or its own), the handlers (loaded here, or in container processes), the turns, and
what each turn's window saw."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any, cast

import numpy as np

from infra.containers import apply_environment, warm_providers

from . import config
from .child import speech_chunks
from .config import BUCKET, CHILD_PHRASES, TABLE, TUTOR_REPLIES
from .conversation import Conversation, Turn
from .floors import floor_ms, speculative_floor_ms
from .observers import Invocation, Observer, mark_turn, serialized_moto

#: What the handlers' environment holds over the template's, for the benchmark (``None``: unset).
BENCH_ENV: dict[str, str | None] = {
    "TABLE_NAME": TABLE,
    "BUCKET_NAME": BUCKET,
    "OPENAI_API_KEY": "sk-bench-fake",
    "AUTH_REQUIRED": "false",
    "POWERTOOLS_METRICS_NAMESPACE": "KiddoLingoBench",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_LOG_LEVEL": "WARNING",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": None,
    "AWS_PROFILE": None,
    "AWS_ENDPOINT_URL": None,
    "OPENAI_API_KEY_PARAMETER": None,
    "AUTH_SECRET_PARAMETER": None,
}


@contextlib.contextmanager
def _environment(values: dict[str, str | None]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    apply_environment(values)
    try:
        yield
    finally:
        apply_environment(saved)


def _reset_process_caches() -> None:
    from infra.lambda_runtime import reset_shared_caches

    reset_shared_caches()


@contextlib.contextmanager
def _warming(fake: Any, profile: Any) -> Iterator[None]:
    """The providers' warm-up: without the profile's latency, and left out of the request log."""
    from infra.fake_openai import LatencyProfile

    fake.set_latency(LatencyProfile.zero())
    try:
        yield
    finally:
        fake.reset()
        fake.set_latency(profile)


def handler_environment(specs: dict[str, Any], fake: Any, mode: str) -> dict[str, str | None]:
    """The template's environment of every function, the benchmark's over it: the fake provider
    for every stage, no secrets, and ``SPECULATIVE_FRACTION=0`` for ``streaming``."""
    env: dict[str, str | None] = {}
    for spec in specs.values():
        env.update({k: v for k, v in spec.environment.items() if isinstance(v, str)})
    env.update(BENCH_ENV)
    env["OPENAI_BASE_URL"] = fake.base_url
    env.update(config.HANDLER_ENV)
    if mode == "streaming":
        env["SPECULATIVE_FRACTION"] = "0"
    for stage in ("TRANSCRIPTION", "CHAT", "SPEECH", "MODERATION"):
        for suffix in ("BASE_URL", "API_KEY", "API_KEY_PARAMETER"):
            env[f"{stage}_{suffix}"] = None
    return env


def script_turns(
    profile: Any, n_turns: int, first_turn: int, silence_ms: int, mode: str
) -> list[Turn]:
    """The turns ``first_turn`` on of the script: the child's phrase, the tutor's reply."""
    turns = []
    for i in range(first_turn, first_turn + n_turns):
        reply = TUTOR_REPLIES[i % len(TUTOR_REPLIES)]
        turns.append(
            Turn(
                i + 1,
                CHILD_PHRASES[i % len(CHILD_PHRASES)],
                reply,
                floor_ms(profile, reply, silence_ms),
                mode=mode,
            )
        )
    return turns


class _Run:
    """One conversation's run, step by step: AWS, the handlers, the conversation, its records."""

    def __init__(self, fake: Any, profile: Any, aws_mode: str) -> None:
        from infra.dynamo_meter import DynamoMeter

        self.fake, self.profile, self.aws_mode = fake, profile, aws_mode
        #: What lives as long as the run: the meter's file, moto, the containers.
        self.stack = contextlib.ExitStack()
        self.meter = DynamoMeter()
        self.meter_file = ""
        #: (when, status, turn_figures) of every turn's outcome.
        self.outcomes: list[tuple[float, str, dict[str, float]]] = []
        self.emf_out = io.StringIO()
        self.observer = Observer()
        self.pool: Any = None

    def start_aws(self, env: dict[str, str | None]) -> None:
        """moto in its own process (its endpoint into ``env``), or ``mock_aws`` in this one."""
        from moto import mock_aws

        meter_dir = self.stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-meter-"))
        self.meter_file = os.path.join(meter_dir, "dynamodb.jsonl")
        if self.aws_mode == "process":
            from infra.moto_process import moto_process

            env["AWS_ENDPOINT_URL"] = self.stack.enter_context(moto_process(self.meter_file))
        else:
            self.stack.enter_context(mock_aws())
            self.stack.enter_context(serialized_moto())
            self.stack.enter_context(self.meter.installed())

    def on_outcome(self, at: float, status: str, figures: dict[str, float]) -> None:
        self.outcomes.append((at, status, figures))

    def open_conversation(
        self, specs: dict[str, Any], silence_ms: int, containers: int, routing: str
    ) -> tuple[Conversation, Any]:
        """The table and bucket created, the handlers loaded and warm: a conversation ready to
        start, and the benchmark's own S3 client."""
        import boto3

        from infra import template as tpl
        from kiddolingo import aws

        _reset_process_caches()
        # The handlers' clients are built from this session after the hooks are on it (a
        # client copies the session's hooks when it is created).
        self.observer.install(aws._session().events)
        s3, ddb = boto3.client("s3"), boto3.client("dynamodb")  # not the handlers' session
        tpl.create_resources(ddb, s3, TABLE, BUCKET)
        functions = self.load_handlers(specs, containers, routing)
        conversation = Conversation(
            functions, self.observer, silence_ms, ddb, containers=self.pool, emf=self.emf_out
        )
        return conversation, s3

    def load_handlers(self, specs: dict[str, Any], containers: int, routing: str) -> Any:
        """The handlers, warm: in ``containers`` processes (the pool), or here (by route)."""
        from infra.lambda_runtime import LambdaFunction
        from kiddolingo import runtime

        if containers:
            from infra.containers import ContainerPool

            # Warm containers: each one's SDK loaded and connections open by one request per
            # endpoint.
            with _warming(self.fake, self.profile):
                self.pool = self.stack.enter_context(
                    ContainerPool(
                        containers,
                        dict(os.environ),
                        on_post=self.observer.record,
                        on_outcome=self.on_outcome,
                        routing=routing,
                    )
                )
            return {}
        functions = {route: LambdaFunction(cast(Any, spec)) for route, spec in specs.items()}
        for fn in functions.values():
            fn.load()  # the INIT phase is measured in a fresh process, below
        # A warm container, one that has served a turn before: the provider SDK is loaded
        # and its connections open. What the first turn of a fresh container pays on top
        # is measured on its own (turn_cold_start_ms).
        with _warming(self.fake, self.profile):
            runtime.run(warm_providers(config.RATE))
        return functions

    def converse(
        self, conversation: Conversation, turns: list[Turn], audio: list[tuple[Any, ...]]
    ) -> None:
        """The conversation, every turn's outcome and start seen by the layer's observers."""
        from kiddolingo.metrics import turn_figures
        from kiddolingo.observe import observing

        def seen(outcome: Any) -> None:
            self.on_outcome(time.perf_counter(), outcome.status, turn_figures(outcome))

        with observing(start=mark_turn, outcome=seen), contextlib.redirect_stdout(self.emf_out):
            conversation.start()
            for turn, (chunks, _pcm, source) in zip(turns, audio, strict=True):
                turn.source = source
                conversation.turn(turn, chunks, self.fake)
            conversation.finish()

    def dynamodb_calls(self) -> list[Any]:
        from infra.dynamo_meter import read_records

        # (moto's process writes its records as it goes: all there once the run is over.)
        return self.meter.calls if self.aws_mode != "process" else read_records(self.meter_file)

    def record(self, conversation: Conversation, log: list[Any]) -> dict[str, Any]:
        """What the conversation saw, for the figures (with the fake provider's request log)."""
        from kiddolingo.metrics import parse_emf

        return {
            "invocations": conversation.invocations,
            "observer": self.observer,
            "audio_ms": conversation.audio_ms,
            "emf": parse_emf(self.emf_out.getvalue()),
            "provider_requests": dict(Counter(r.endpoint for r in log)),
            "provider_lateness_ms": provider_lateness(log, self.profile),
            "connection_item_sizes": conversation.item_sizes,
            "connection_item_sizes_silence": conversation.item_sizes_silence,
            "containers_busy_max": self.pool.busy_max if self.pool is not None else 0,
            "messages_in": list(conversation.events.sizes),
            "provider_log": log,
        }

    def assign_to_turns(self, turns: list[Turn], invocations: list[Invocation]) -> None:
        """Each turn's figures, invocations and AWS calls: what fell in its window."""
        for turn in turns:
            lo, hi = turn.window
            for at, status, figures in self.outcomes:
                if lo <= at <= hi and status != "cancelled":
                    turn.figures = figures
            mine = [i for i in invocations if lo <= i.sent_at <= hi]
            turn.turn_invocations = [i for i in mine if i.ran_turn or i.ended_utterance]
            turn.discarded = [i for i in mine if i.ran_turn and not i.answered]
            for inv in turn.turn_invocations:
                turn.calls.update(inv.calls)
            turn.calls.update(op for at, op in self.observer.orphans if lo <= at <= hi)


def run_conversation(
    profile: Any,
    n_turns: int,
    silence_ms: int,
    fake: Any,
    *,
    mode: str,
    first_turn: int = 0,
    aws_mode: str = "inprocess",
    containers: int = 0,
    routing: str = "mru",
) -> dict[str, Any]:
    """One scripted conversation; ``mode`` ``streaming`` turns the speculative turn off
    (``SPECULATIVE_FRACTION=0``), ``speculative`` keeps the deployed setting. ``aws_mode``
    ``process``: moto in its own process (``infra.moto_process``); ``inprocess``: ``mock_aws``
    in this one. ``containers``: run every invocation in one of that many container processes
    (``infra.containers``; needs ``aws_mode`` ``process``) instead of threads of this one,
    an idle one chosen by ``routing`` (``mru`` or ``random``)."""
    if containers and aws_mode != "process":
        raise ValueError("containers share AWS through moto's own process: aws_mode='process'")
    from infra import template as tpl

    specs = tpl.functions({"TABLE_NAME": TABLE, "BUCKET_NAME": BUCKET})
    env = handler_environment(specs, fake, mode)
    rng = np.random.default_rng(11 + first_turn)
    turns = script_turns(profile, n_turns, first_turn, silence_ms, mode)
    audio = [speech_chunks(t.phrase, rng) for t in turns]
    fake.reset()
    fake.set_latency(profile)
    run = _Run(fake, profile, aws_mode)
    run.start_aws(env)
    with run.stack, _environment(env):
        fraction = _speculative_floors(turns, profile, silence_ms)
        conversation, s3 = run.open_conversation(specs, silence_ms, containers, routing)
        run.converse(conversation, turns, audio)
        left = s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0)
        _reset_process_caches()
        dynamodb_calls = run.dynamodb_calls()
    fake.wait_idle(5.0)
    log = fake.requests()
    run.assign_to_turns(turns, conversation.invocations)
    return {
        "mode": mode,
        "speculative_fraction": fraction,
        "turns": turns,
        "utterances": [pcm for _chunks, pcm, _source in audio],
        "objects_left": left,
        "dynamodb_calls": dynamodb_calls,
        "memory_mb": {route: spec.memory_mb for route, spec in specs.items()},
        **run.record(conversation, log),
    }


def _speculative_floors(turns: list[Turn], profile: Any, silence_ms: int) -> float | None:
    """Each turn's speculative floor at the fraction the handlers will read (returned)."""
    from kiddolingo.settings import Settings

    fraction = Settings.from_env().speculative_fraction
    for turn in turns:
        turn.speculative_floor_ms = speculative_floor_ms(profile, turn.reply, silence_ms, fraction)
    return fraction


def provider_lateness(log: list[Any], profile: Any) -> dict[str, list[float]]:
    """How late the fake answered, by endpoint: its first byte (the whole answer for the
    unstreamed ones) after the request had been read, minus the profile's latency. The floors
    take the profile as exact, so this part of an overhead is the harness's, not ours."""
    due = {
        "transcriptions": profile.transcription_ms,
        "chat": profile.chat_first_token_ms,
        "speech": profile.speech_first_byte_ms,
        "moderations": profile.moderation_ms,
    }
    late: dict[str, list[float]] = {}
    for r in log:
        answered = r.first_byte_at if r.endpoint in ("chat", "speech") else r.finished_at
        if r.endpoint in due and r.status == 200 and r.read_at is not None and answered:
            late.setdefault(r.endpoint, []).append((answered - r.read_at) * 1000 - due[r.endpoint])
    return late
