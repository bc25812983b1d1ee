"""Probes in fresh interpreters: each handler module's cold-start imports, what the first turn
of a fresh container pays for the SDK, and over a warm one (on-demand INIT or SnapStart)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from .config import BUCKET, ROOT, TABLE

_IMPORT_PROBE = r"""
import json, sys, time, importlib.util
path, code_dir = sys.argv[1], sys.argv[2]
started = time.perf_counter()
sys.path.append(code_dir)
spec = importlib.util.spec_from_file_location("handler_app", path)
module = importlib.util.module_from_spec(spec)
sys.modules["handler_app"] = module
spec.loader.exec_module(module)
elapsed = (time.perf_counter() - started) * 1000.0
print(json.dumps({"ms": elapsed, "openai": "openai" in sys.modules,
                  "tracer": "aws_lambda_powertools.tracing" in sys.modules}))
"""


_TURN_PROBE = r"""
import json, sys, time
started = time.perf_counter()
from kiddolingo.providers import build_providers
from kiddolingo.settings import Settings
providers = build_providers(Settings())
import openai
client = openai.AsyncOpenAI(api_key="sk-probe", base_url="http://127.0.0.1:9/v1")
for resource in (client.audio.transcriptions, client.chat.completions, client.audio.speech,
                 client.moderations):
    pass
import kiddolingo.turn.runner, kiddolingo.tutor.turn_state
import kiddolingo.audio, kiddolingo.conversation
print(json.dumps({"ms": (time.perf_counter() - started) * 1000.0}))
"""


_FIRST_TURN_PROBE = r"""
import asyncio, json, os, sys, time
from kiddolingo.settings import Settings
# What the audio handler's INIT loads either way (the chunk path needs it).
import kiddolingo.service, kiddolingo.audio, kiddolingo.vad
from kiddolingo.audio import pcm16_to_wav
from kiddolingo.providers import build_providers
settings = Settings.from_env()
if sys.argv[1] == "snapstart":  # the INIT of a snapshot (functions/audio/app.py)
    from kiddolingo.providers import preload_providers
    preload_providers(settings)

async def turn():
    # What a turn asks of the providers, to the first byte of speech (no AWS).
    started = time.perf_counter()
    providers = build_providers(settings)
    speech = providers.speech.open(voice=settings.speech_voice)
    await providers.transcriber.transcribe(pcm16_to_wav(bytes(9600), 24000), languages=["es"])
    async for _ in providers.chat.stream([{"role": "user", "content": "hola"}],
                                         temperature=0.7, max_tokens=20):
        break
    async for item in speech.stream("Hola amigo."):
        if isinstance(item, bytes):
            break
    await speech.aclose()
    return (time.perf_counter() - started) * 1000.0

async def main():
    return [await turn() for _ in range(4)]

times = asyncio.run(main())
print(json.dumps({"first_ms": times[0], "warm_ms": min(times[1:])}))
"""


def measure_first_turn(runs: int) -> dict[str, Any]:
    """What the first turn of a fresh container pays over a warm one, on its way to the first
    byte of speech (no AWS, a provider with no latency of its own): with an on-demand INIT
    (the SDK loads in that turn) and from a SnapStart snapshot (its INIT loaded it)."""
    from infra.fake_openai import LatencyProfile, fake_openai_process

    out: dict[str, Any] = {}
    with fake_openai_process(latency=LatencyProfile.zero()) as fake:
        env = {
            **os.environ,
            **_LAMBDA_PROCESS,
            "OPENAI_BASE_URL": fake.base_url,
            "OPENAI_API_KEY": "sk-bench-fake",
        }
        # The fake's own first requests are slower too (it is a process of its own): one run
        # first, not counted, so only the client's first turn is measured.
        subprocess.run(
            [sys.executable, "-c", _FIRST_TURN_PROBE, "snapstart"],
            capture_output=True,
            cwd=ROOT,
            env=env,
            check=False,
        )
        for init in ("on_demand", "snapstart"):
            extra, first, warm = [], [], []
            for _ in range(max(1, runs)):
                done = subprocess.run(
                    [sys.executable, "-c", _FIRST_TURN_PROBE, init],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                    env=env,
                    check=False,
                )
                if done.returncode != 0:
                    raise RuntimeError(f"the first-turn probe failed:\n{done.stderr[-2000:]}")
                got = json.loads(done.stdout.strip().splitlines()[-1])
                first.append(got["first_ms"])
                warm.append(got["warm_ms"])
                extra.append(got["first_ms"] - got["warm_ms"])
            out[init] = {
                "extra_ms": round(float(np.median(extra)), 1),
                "first_ms": round(float(np.median(first)), 1),
                "warm_ms": round(float(np.median(warm)), 1),
            }
    return out


#: A probe's fresh interpreter is one Lambda container, and says so as Lambda does (see
#: ``kiddolingo.coldstart``: what a container loads once is frozen there).
_LAMBDA_PROCESS = {"AWS_LAMBDA_FUNCTION_NAME": "kiddolingo-bench-probe"}


def measure_turn_cold_start(runs: int) -> dict[str, Any]:
    """What the first turn of a fresh container pays before its first request: importing the
    provider SDK and the turn's modules, building the clients (median of ``runs``)."""
    times = []
    for _ in range(max(1, runs)):
        done = subprocess.run(
            [sys.executable, "-c", _TURN_PROBE],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, **_LAMBDA_PROCESS},
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the cold-turn probe failed:\n{done.stderr[-2000:]}")
        times.append(float(json.loads(done.stdout.strip().splitlines()[-1])["ms"]))
    return {
        "ms": min(times),
        "median_ms": round(float(np.median(times)), 1),
        "runs": [round(t, 1) for t in times],
    }


def _import_env(spec: Any) -> dict[str, str]:
    env = {**os.environ, **_LAMBDA_PROCESS}
    env.update({k: v for k, v in spec.environment.items() if isinstance(v, str)})
    env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    env["PYTHONDONTWRITEBYTECODE"] = "0"
    return env


def measure_imports(runs: int) -> dict[str, Any]:
    """Cold-start imports of each handler module, in fresh interpreters (median of ``runs``)."""
    from infra import template as tpl

    specs = tpl.functions({"TABLE_NAME": TABLE, "BUCKET_NAME": BUCKET})
    out: dict[str, Any] = {}
    for route, spec in specs.items():
        name = Path(spec.code_dir).name
        module_path = Path(spec.code_dir) / (spec.handler.rpartition(".")[0] + ".py")
        times: list[float] = []
        info: dict[str, Any] = {}
        for _ in range(max(1, runs)):
            done = subprocess.run(
                [sys.executable, "-c", _IMPORT_PROBE, str(module_path), str(spec.code_dir)],
                capture_output=True,
                text=True,
                env=_import_env(spec),
                cwd=ROOT,
                check=False,
            )
            if done.returncode != 0:
                raise RuntimeError(f"importing {module_path} failed:\n{done.stderr[-2000:]}")
            info = json.loads(done.stdout.strip().splitlines()[-1])
            times.append(float(info["ms"]))
        out[name] = {
            "route": route,
            # The best of N fresh interpreters: the code's own import cost, without what other
            # processes on the machine add to some of the runs (the median is kept too).
            "ms": min(times),
            "median_ms": round(float(np.median(times)), 1),
            "runs": [round(t, 1) for t in times],
            "imports_openai": bool(info.get("openai")),
            "imports_tracer": bool(info.get("tracer")),
        }
    audio = specs.get("$default")
    if audio is not None:
        out["audio"]["heaviest"] = _importtime_breakdown(audio)
    return out


def _importtime_breakdown(spec: Any, top: int = 6) -> list[dict[str, Any]]:
    """The heaviest top-level imports of a handler module (``python -X importtime``)."""
    module_path = Path(spec.code_dir) / (spec.handler.rpartition(".")[0] + ".py")
    done = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-c",
            _IMPORT_PROBE,
            str(module_path),
            str(spec.code_dir),
        ],
        capture_output=True,
        text=True,
        env=_import_env(spec),
        cwd=ROOT,
        check=False,
    )
    probe_start = False
    rows: list[dict[str, Any]] = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = line[len("import time:") :].split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue
        name = parts[2].rstrip()
        depth = (len(name) - len(name.lstrip(" "))) // 2
        if name.strip() == "importlib.util":
            probe_start = True  # everything before is the probe's own imports
            continue
        if probe_start and depth == 0:
            rows.append({"module": name.strip(), "ms": int(parts[1]) / 1000.0})
    rows.sort(key=lambda r: r["ms"], reverse=True)
    return [{"module": r["module"], "ms": round(r["ms"], 1)} for r in rows[:top]]
