"""Shared fixtures: moto AWS built from template.yaml, captured posts, the fake OpenAI server."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest

if importlib.util.find_spec("tests.support.fake_openai_fixtures") is not None:
    pytest_plugins = ["tests.support.fake_openai_fixtures"]

# No test may reach real AWS or a real model provider.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_ACCESS_KEY_ID"] = "testing"
os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("AWS_ENDPOINT_URL", None)


def _reset_process_caches() -> None:
    from infra.lambda_runtime import reset_shared_caches

    reset_shared_caches()


def _serialize_moto(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every moto request atomic, as each real DynamoDB/S3 call is.

    moto's in-process backends are not thread-safe (concurrent UpdateItems on one item can
    raise "dictionary changed size during iteration"); the handlers run concurrently in the
    concurrency tests, exactly as API Gateway invokes them, so the mock must be as atomic per
    call as the real services.
    """
    import threading

    from moto.core.botocore_stubber import BotocoreStubber

    lock = threading.RLock()
    original = BotocoreStubber.__call__

    def atomic(self, *args, **kwargs):
        with lock:
            return original(self, *args, **kwargs)

    monkeypatch.setattr(BotocoreStubber, "__call__", atomic)


@pytest.fixture
def stack(monkeypatch: pytest.MonkeyPatch, fake_openai) -> Iterator:
    """moto S3 + DynamoDB from the template, the real handlers, posts captured per message,
    and the provider stages pointed at the fake OpenAI-compatible server."""
    from moto import mock_aws

    from tests.support import aws_stack

    monkeypatch.setenv("TABLE_NAME", aws_stack.TABLE)
    monkeypatch.setenv("BUCKET_NAME", aws_stack.BUCKET)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-fake")
    monkeypatch.setenv("AUTH_REQUIRED", "false")
    # Tests that send appends one after another (not concurrently, as API Gateway does) would
    # wait out every speculation; the speculative tests turn it on themselves.
    monkeypatch.setenv("SPECULATIVE_FRACTION", os.environ.get("TEST_SPECULATIVE_FRACTION", "0"))
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "KiddoLingoTest")
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    for var in ("AUTH_SECRET_PARAMETER", "OPENAI_API_KEY_PARAMETER"):
        monkeypatch.delenv(var, raising=False)
    _serialize_moto(monkeypatch)
    with mock_aws():
        _reset_process_caches()
        aws_stack.create_resources()
        from kiddolingo import aws

        recorder = aws_stack.PostRecorder()
        aws._session().events.register(
            "before-call.apigatewaymanagementapi.PostToConnection", recorder
        )
        yield aws_stack.Stack(recorder)
    _reset_process_caches()
