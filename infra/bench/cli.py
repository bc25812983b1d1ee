"""``python -m infra.bench``: the arguments, the latency profile, and the run from probes to
table."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import config
from .baseline import run_sequential
from .driver import run_conversation
from .probes import measure_first_turn, measure_imports, measure_turn_cold_start
from .report import table
from .results import figures


def _profile(args: argparse.Namespace) -> Any:
    from infra.fake_openai import LatencyProfile

    base = LatencyProfile.zero() if args.quick else LatencyProfile.realistic()
    changes = {
        name: value
        for name, value in (
            ("transcription_ms", args.transcription_ms),
            ("chat_first_token_ms", args.chat_first_token_ms),
            ("chat_tokens_per_s", args.tokens_per_s),
            ("speech_first_byte_ms", args.speech_first_byte_ms),
            ("speech_realtime_factor", args.speech_realtime_factor),
            ("moderation_ms", args.moderation_ms),
            # Speech's first byte is the same on both speech paths unless said otherwise.
            ("realtime_first_byte_ms", args.realtime_first_byte_ms or args.speech_first_byte_ms),
            ("realtime_connect_ms", args.realtime_connect_ms),
        )
        if value is not None
    }
    return replace(base, **changes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, with the defaults that depend on ``--quick`` filled in."""
    parser = argparse.ArgumentParser(
        prog="python -m infra.bench",
        description=(sys.modules[__package__].__doc__ or "").split("\n\n")[0],
    )
    _profile_arguments(parser)
    _setup_arguments(parser)
    _input_arguments(parser)
    args = parser.parse_args(argv)
    if args.turns is None:
        args.turns = 2 if args.quick else 6
    if args.import_runs is None:
        args.import_runs = 1 if args.quick else 5
    if args.turns < 1:
        parser.error("--turns must be at least 1")
    if args.containers < 0:
        parser.error("--containers must be 0 or more")
    if args.containers:
        args.aws = "process"
    return args


def _setting(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _profile_arguments(parser: argparse.ArgumentParser) -> None:
    """The conversation: its turns, the fake provider's latency profile, the silence window."""
    parser.add_argument(
        "--turns", type=int, default=None, help="turns per mode (default 6, quick 2)"
    )
    parser.add_argument("--transcription-ms", type=float, default=None)
    parser.add_argument("--chat-first-token-ms", type=float, default=None)
    parser.add_argument("--tokens-per-s", type=float, default=None)
    parser.add_argument("--speech-first-byte-ms", type=float, default=None)
    parser.add_argument("--speech-realtime-factor", type=float, default=None)
    parser.add_argument("--moderation-ms", type=float, default=None)
    parser.add_argument("--realtime-first-byte-ms", type=float, default=None)
    parser.add_argument("--realtime-connect-ms", type=float, default=None)
    parser.add_argument("--silence-ms", type=int, default=1200, help="VAD silence_duration_ms")
    parser.add_argument(
        "--env",
        type=_setting,
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a handler setting over the template's (repeatable), to weigh what one costs: "
        "e.g. MAX_TURNS_PER_MINUTE=0 runs without the turn limit's admission write",
    )
    parser.add_argument(
        "--chunking",
        choices=("page", "fixed"),
        default="page",
        help="page: the child sends as web/chunk-policy.js does (larger appends where nothing "
        "waits on them); fixed: every 100 ms block as an append of its own",
    )
    parser.add_argument(
        "--mode",
        choices=("both", "streaming", "speculative"),
        default="both",
        help="streaming: SPECULATIVE_FRACTION=0; speculative: the deployed setting",
    )


def _setup_arguments(parser: argparse.ArgumentParser) -> None:
    """Where AWS, the handlers and the fake provider run; the import probes."""
    parser.add_argument(
        "--aws",
        choices=("inprocess", "process"),
        default="inprocess",
        help="mock_aws in the benchmark's process (every AWS call costs CPU under its GIL; "
        "the CPU figure subtracts it), or moto in its own process (AWS calls are waits, as "
        "Lambda sees them; the CPU figure then includes botocore's HTTP path)",
    )
    parser.add_argument(
        "--containers",
        type=int,
        default=0,
        metavar="N",
        help="run every invocation in one of N container processes, one invocation at a time "
        "each, as Lambda does (implies --aws process); 0: in threads of this process",
    )
    parser.add_argument(
        "--routing",
        choices=("mru", "random"),
        default="mru",
        help="with --containers: an invocation goes to the most recently used idle container "
        "(as Lambda reuses warm ones) or to any idle one at random (Lambda does not say which)",
    )
    parser.add_argument("--import-runs", type=int, default=None, help="fresh interpreters each")
    parser.add_argument(
        "--provider",
        choices=("process", "inprocess"),
        default="process",
        help="the fake OpenAI server in a process of its own (as a remote provider: its CPU is "
        "not the handlers'), or in the benchmark's process",
    )


def _input_arguments(parser: argparse.ArgumentParser) -> None:
    """What the child sends, what the tutor speaks with; the quick run of the tests."""
    parser.add_argument(
        "--input-rate",
        type=int,
        choices=(16000, 24000),
        default=16000,
        help="the child's audio: 16 kHz as the browser client sends it, or 24 kHz (the "
        "Realtime API's default, also accepted)",
    )
    parser.add_argument(
        "--speech-api",
        choices=("realtime", "http"),
        default="realtime",
        help="the tutor's speech: a Realtime API voice model (the default) or /audio/speech "
        "(tts-1-hd, the old default), both on the fake with the same first byte",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 turns, no provider latency (for the tests)"
    )


def main(argv: list[str] | None = None) -> int:
    """Probes, both conversations, the baseline; the table, and ``BENCH_JSON`` when set."""
    args = parse_args(argv)
    config.set_input_rate(args.input_rate)
    config.PAGE_CHUNKING = args.chunking == "page"
    config.HANDLER_ENV.update(args.env)
    if args.speech_api == "http":
        config.HANDLER_ENV.update(SPEECH_API="http", SPEECH_MODEL="tts-1-hd", SPEECH_VOICE="nova")
    from infra.fake_openai import FakeOpenAI, fake_openai_process

    profile = _profile(args)
    args.load_start = os.getloadavg()
    imports = measure_imports(args.import_runs)
    imports["turn_cold_start"] = measure_turn_cold_start(args.import_runs)
    imports["first_turn"] = measure_first_turn(args.import_runs)
    modes = ("streaming", "speculative") if args.mode == "both" else (args.mode,)
    runs: dict[str, dict[str, Any]] = {}
    provider = (
        fake_openai_process(latency=profile)
        if args.provider == "process"
        else FakeOpenAI(latency=profile)
    )
    with provider as fake:
        for n, mode in enumerate(modes):
            runs[mode] = run_conversation(
                profile,
                args.turns,
                args.silence_ms,
                fake,
                mode=mode,
                first_turn=n * args.turns,
                aws_mode=args.aws,
                containers=args.containers,
                routing=args.routing,
            )
        # The baseline replays the first conversation's utterances and replies.
        first = runs[modes[0]]
        sequential = run_sequential(
            profile, first["utterances"], first["turns"], args.silence_ms, fake
        )
    result = figures(args, profile, runs, sequential, imports)
    print(table(result))
    target = os.environ.get("BENCH_JSON")
    if target:
        Path(target).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return 0 if result["turns_measured"] == result["turns"] else 1
