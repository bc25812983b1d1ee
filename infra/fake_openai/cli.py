"""``python -m infra.fake_openai``: serve the fake until interrupted, printing its base URL."""

from __future__ import annotations

import argparse
import signal
import threading
from dataclasses import replace
from typing import Any

from infra.fake_openai.process import _serve_manager
from infra.fake_openai.profile import LatencyProfile
from infra.fake_openai.server import FakeOpenAI
from infra.fake_openai.voices import SPEECH_MODES

__all__ = ["main"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m infra.fake_openai",
        description="A local fake of the OpenAI API (HTTP endpoints and the Realtime socket).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--profile", choices=("zero", "realistic"), default="realistic")
    for name in LatencyProfile.__dataclass_fields__:
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=None)
    parser.add_argument("--transcript", default=None, help="the default transcript")
    parser.add_argument(
        "--speech", choices=SPEECH_MODES, default="tones", help="tones, or espeak-ng's words"
    )
    parser.add_argument("--manager", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.manager:
        _serve_manager()
        return
    profile = LatencyProfile.named(args.profile)
    overrides = {
        name: getattr(args, name)
        for name in LatencyProfile.__dataclass_fields__
        if getattr(args, name) is not None
    }
    profile = replace(profile, **overrides)
    kwargs: dict[str, Any] = {
        "latency": profile,
        "host": args.host,
        "port": args.port,
        "speech": args.speech,
    }
    if args.transcript is not None:
        kwargs["default_transcript"] = args.transcript
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with FakeOpenAI(**kwargs) as fake:
        print(fake.base_url, flush=True)
        while not stop.wait(0.5):
            pass
