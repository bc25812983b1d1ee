"""Tracer is opt-in: off, the handler is untouched and Tracer is never imported (cold start);
on, the handler is wrapped by Powertools Tracer and still answers."""

from __future__ import annotations

import subprocess
import sys

from kiddolingo import tracing


def handler(event, context):
    return {"statusCode": 200, "echo": event["x"]}


def test_off_by_default_and_never_imported(monkeypatch) -> None:
    code = (
        "import sys; from kiddolingo import tracing; "
        "h = tracing.traced(lambda e, c: 1, 's'); "
        "assert 'aws_xray_sdk' not in sys.modules; print(h(None, None))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "", "POWERTOOLS_TRACE_DISABLED": "true"},
    )
    assert out.stdout.strip() == "1"
    monkeypatch.delenv("POWERTOOLS_TRACE_DISABLED", raising=False)
    assert not tracing.enabled()
    assert tracing.traced(handler, "svc") is handler


def test_on_wraps_the_handler(monkeypatch) -> None:
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "false")
    monkeypatch.setenv("AWS_XRAY_CONTEXT_MISSING", "IGNORE_ERROR")
    monkeypatch.setenv("AWS_XRAY_SDK_ENABLED", "false")  # no daemon here
    wrapped = tracing.traced(handler, "kiddolingo-test")
    assert wrapped is not handler
    assert wrapped({"x": 3}, None) == {"statusCode": 200, "echo": 3}
