"""The pure core loads without the AWS SDK or the OpenAI SDK: it can be read, tested and
reasoned about with no adapter behind it, and the audio-chunk path stays light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CORE = (
    "protocol",
    "vad",
    "ingest",
    "sequencing",
    "session",
    "turn",
    "turn.runner",
    "turn.speech",
    "speech_text",
    "conversation",
    "chunk_keys",
)
SDKS = ("boto3", "botocore", "openai")

_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module("kiddolingo." + name)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {sdks!r})))
"""


def _sdks_loaded(*modules: str) -> list[str]:
    """The SDK modules a fresh interpreter holds after importing ``modules`` of the layer (this
    interpreter has loaded every adapter already)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "layers" / "shared")}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(sdks=set(SDKS)), *modules],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_core_imports_no_sdk() -> None:
    assert _sdks_loaded(*CORE) == []


def test_the_probe_sees_an_sdk_when_one_is_imported() -> None:
    """The probe itself can fail: an adapter module is seen pulling in botocore."""
    assert "botocore" in _sdks_loaded("store")
