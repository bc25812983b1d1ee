"""What a container loads once is loaded with the collector off, and frozen in Lambda."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from kiddolingo.coldstart import long_lived

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def collector() -> Iterator[None]:
    """Leave the process's collector as the test found it."""
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


@pytest.fixture
def container(collector: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process is one Lambda container (as Lambda says: ``AWS_LAMBDA_FUNCTION_NAME``)."""
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "kiddolingo-audio")
    gc.unfreeze()
    gc.enable()


def test_a_container_loads_with_no_collections_and_freezes_what_it_loaded(
    container: None,
) -> None:
    with long_lived():
        assert not gc.isenabled()
        kept = [[i] for i in range(1000)]  # lists: objects the collector tracks
    assert gc.isenabled()
    assert gc.get_freeze_count() >= len(kept)
    with pytest.raises(RuntimeError), long_lived():
        raise RuntimeError("an import failed")
    assert gc.isenabled()


def test_a_collector_turned_off_by_someone_else_stays_off(container: None) -> None:
    gc.disable()
    with long_lived():
        pass
    assert not gc.isenabled()
    gc.enable()
    with long_lived():
        with long_lived():  # nested: the inner one found it off
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_threads_of_one_process_change_nothing(
    collector: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The local stack, the tests, the in-process benchmark: nothing frozen, no pause."""
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    gc.unfreeze()
    gc.enable()
    with long_lived():
        assert gc.isenabled()
        kept = [[i] for i in range(1000)]  # lists: objects the collector tracks
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()
    del kept


_PROBE = r"""
import gc, json, sys, importlib.util
sys.path.append("functions/audio")
spec = importlib.util.spec_from_file_location("app", "functions/audio/app.py")
spec.loader.exec_module(importlib.util.module_from_spec(spec))
after_handler = gc.get_freeze_count()
from kiddolingo import aws
aws._client("dynamodb")
after_client = gc.get_freeze_count()
from kiddolingo.providers import build_providers
build_providers()
print(json.dumps({"enabled": gc.isenabled(), "handler": after_handler,
                  "client": after_client, "sdk": gc.get_freeze_count()}))
"""


def _probe(**env: str) -> dict[str, int]:
    environ = {
        **os.environ,
        "TABLE_NAME": "t",
        "BUCKET_NAME": "b",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "OPENAI_API_KEY": "sk-probe",
    }
    environ.pop("AWS_LAMBDA_FUNCTION_NAME", None)  # only ``env`` says whether it is a container
    environ.update(env)
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, cwd=ROOT, env=environ
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_lambda_container_freezes_its_handler_clients_and_sdk() -> None:
    seen = _probe(AWS_LAMBDA_FUNCTION_NAME="kiddolingo-audio")
    assert seen["enabled"]
    # The handler's modules, then a client's service model, then the provider SDK: each step
    # leaves more objects out of every later full collection.
    assert seen["handler"] > 10_000
    assert seen["client"] > seen["handler"] + 5_000
    assert seen["sdk"] > seen["client"] + 50_000


def test_the_local_stack_freezes_nothing() -> None:
    seen = _probe()
    assert seen["enabled"]
    assert seen["handler"] == seen["client"] == seen["sdk"] == 0
