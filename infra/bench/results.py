"""The figures of a run: per conversation (voice-to-voice and its floors), over both (the chunk
path's calls and CPU, imports, S3), the bill's headline and the targets."""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import sys
from collections import Counter
from typing import Any

from . import config
from .config import AWS_USD_PER_HOUR_TARGET, CHUNK_MS, FLOOR_SLACK_MS, SPECULATIVE_SLACK_MS
from .conversation import Turn
from .costs import cost_figures
from .floors import STAGES, overhead_breakdown
from .observers import Invocation
from .stats import mean, pct, per_call, rnd


def _profile_dict(profile: Any) -> dict[str, float | None]:
    return {
        k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in vars(profile).items()
    }


def _mode_figures(run: dict[str, Any], profile: Any, silence_ms: int) -> dict[str, Any]:
    """Voice-to-voice and its floors, for the turns of one conversation."""
    turns: list[Turn] = run["turns"]
    ok = [t for t in turns if t.voice_to_voice_ms is not None]
    for t in turns:
        if not t.speculative:
            t.breakdown = overhead_breakdown(t.timeline, profile, t.reply, silence_ms)
    v2v = [t.voice_to_voice_ms for t in ok if t.voice_to_voice_ms is not None]
    over = [v - t.floor_ms for t, v in zip(ok, v2v, strict=True)]
    spec_floor = [t.speculative_floor_ms or t.floor_ms for t in ok]
    spec_over = [v - f for v, f in zip(v2v, spec_floor, strict=True)]
    release = [
        t.timeline["response.output_audio.delta"] - t.timeline["input_audio_buffer.speech_stopped"]
        for t in ok
        if "input_audio_buffer.speech_stopped" in t.timeline
    ]
    plain = [t for t in ok if not t.speculative]
    breakdown = {
        name: rnd(pct([t.breakdown[name] for t in plain if name in t.breakdown], 50))
        for name, *_rest in STAGES
    }
    discarded = [i for t in turns for i in t.discarded]
    return {
        "turns": len(turns),
        "turns_answered": len(ok),
        "speculative_fraction": run["speculative_fraction"],
        "speculative_turns": sum(1 for t in turns if t.speculative),
        "voice_to_voice_p50_ms": rnd(pct(v2v, 50)),
        "voice_to_voice_p95_ms": rnd(pct(v2v, 95)),
        "floor_p50_ms": rnd(pct([t.floor_ms for t in ok], 50)),
        "floor_p95_ms": rnd(pct([t.floor_ms for t in ok], 95)),
        "overhead_p50_ms": rnd(pct(over, 50)),
        "overhead_p95_ms": rnd(pct(over, 95)),
        "speculative_floor_p50_ms": rnd(pct(spec_floor, 50)),
        "overhead_over_speculative_floor_p50_ms": rnd(pct(spec_over, 50)),
        "release_to_first_audio_p50_ms": rnd(pct(release, 50)),
        "overhead_breakdown_p50_ms": breakdown,
        "aws_calls_per_turn_mean": mean([sum(t.calls.values()) for t in ok], 1),
        "aws_calls_per_turn_max": max((sum(t.calls.values()) for t in ok), default=None),
        "aws_calls_per_turn_by_call": per_call([t.calls for t in ok]),
        "discarded_speculations": len(discarded),
        "provider_requests_per_turn": {
            k: round(v / max(1, len(turns)), 2) for k, v in sorted(run["provider_requests"].items())
        },
        "aws_calls_per_discarded_speculation": mean([i.n_calls for i in discarded], 1),
        "provider_lateness_p50_ms": {
            k: rnd(pct(v, 50), 2) for k, v in sorted(run["provider_lateness_ms"].items())
        },
    }


def figures(
    args: argparse.Namespace,
    profile: Any,
    runs: dict[str, dict[str, Any]],
    sequential: list[float],
    imports: dict[str, Any],
) -> dict[str, Any]:
    """Every figure of the run, in the order the JSON output lists them."""
    turns: list[Turn] = [t for run in runs.values() for t in run["turns"]]
    # First: the modes' figures fill in each turn's overhead breakdown, which per_turn reads.
    modes = {mode: _mode_figures(run, profile, args.silence_ms) for mode, run in runs.items()}
    invocations: list[Invocation] = [i for run in runs.values() for i in run["invocations"]]
    speculative_target = args.silence_ms + profile.speech_first_byte_ms + SPECULATIVE_SLACK_MS
    out: dict[str, Any] = {
        **_run_figures(args, profile, runs, turns, invocations),
        **_latency_figures(modes, turns, sequential, speculative_target),
        **_chunk_path_figures(runs, invocations, modes),
        **_import_figures(imports),
        **_conversation_figures(runs, invocations, modes),
        "per_turn": [_turn_figures(t) for t in turns],
        "sequential_ms": [rnd(v) for v in sequential],
        **_bill_figures(runs),
    }
    out["targets"] = _targets(out)
    return out


def _run_figures(
    args: argparse.Namespace,
    profile: Any,
    runs: dict[str, dict[str, Any]],
    turns: list[Turn],
    invocations: list[Invocation],
) -> dict[str, Any]:
    """How the run was made (command, machine, setup, profile) and how its turns ended."""
    return {
        "date": dt.date.today().isoformat(),
        "command": "python -m infra.bench " + " ".join(sys.argv[1:]),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in getattr(args, "load_start", ())],
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
        "quick": bool(args.quick),
        "aws": args.aws,
        "containers": args.containers,
        "routing": args.routing if args.containers else None,
        "containers_busy_max": max(run["containers_busy_max"] for run in runs.values()),
        "provider": args.provider,
        "input_rate": config.RATE,
        "profile": _profile_dict(profile),
        "silence_ms": args.silence_ms,
        "speech_source": sorted({t.source for t in turns}),
        "turns": len(turns),
        "turns_measured": sum(1 for t in turns if t.ok),
        "turn_statuses": [t.status for t in turns],
        "errors_posted": [e for t in turns for e in t.errors],
        "failed_invocations": sum(1 for i in invocations if i.error),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def _latency_figures(
    modes: dict[str, dict[str, Any]],
    turns: list[Turn],
    sequential: list[float],
    speculative_target_ms: float,
) -> dict[str, Any]:
    """speech_stopped's delay; voice-to-voice of both modes against their floors; the baseline."""
    streaming = modes.get("streaming", {})
    spec = modes.get("speculative", {})
    stopped = [t.speech_stopped_delay_ms for t in turns if t.speech_stopped_delay_ms is not None]
    seq_p50 = pct(sequential, 50)
    best = spec.get("voice_to_voice_p50_ms") or streaming.get("voice_to_voice_p50_ms")
    stream_p50 = streaming.get("voice_to_voice_p50_ms")
    return {
        "speech_stopped_delay_p50_ms": rnd(pct(stopped, 50)),
        "speech_stopped_delay_p95_ms": rnd(pct(stopped, 95)),
        # streaming: the speculative turn off
        "voice_to_voice_p50_ms": stream_p50,
        "voice_to_voice_p95_ms": streaming.get("voice_to_voice_p95_ms"),
        "floor_p50_ms": streaming.get("floor_p50_ms"),
        "floor_p95_ms": streaming.get("floor_p95_ms"),
        "overhead_p50_ms": streaming.get("overhead_p50_ms"),
        "overhead_p95_ms": streaming.get("overhead_p95_ms"),
        "overhead_breakdown_p50_ms": streaming.get("overhead_breakdown_p50_ms", {}),
        # speculative: as deployed
        "speculative_fraction": spec.get("speculative_fraction"),
        "speculative_turns": spec.get("speculative_turns"),
        "speculative_voice_to_voice_p50_ms": spec.get("voice_to_voice_p50_ms"),
        "speculative_voice_to_voice_p95_ms": spec.get("voice_to_voice_p95_ms"),
        "speculative_target_ms": speculative_target_ms,
        "speculative_floor_p50_ms": spec.get("speculative_floor_p50_ms"),
        "speculative_overhead_p50_ms": spec.get("overhead_over_speculative_floor_p50_ms"),
        "speculative_release_to_first_audio_p50_ms": spec.get("release_to_first_audio_p50_ms"),
        "sequential_p50_ms": rnd(seq_p50),
        "sequential_p95_ms": rnd(pct(sequential, 95)),
        "speedup_vs_sequential": _ratio(seq_p50, best),
        "streaming_speedup_vs_sequential": _ratio(seq_p50, stream_p50),
    }


def _chunk_path_figures(
    runs: dict[str, dict[str, Any]], invocations: list[Invocation], modes: dict[str, Any]
) -> dict[str, Any]:
    """AWS calls and CPU of the appends that neither end the utterance nor run a turn; the
    calls of a turn; the size of the connection item they all read and write."""
    streaming = modes.get("streaming", {})
    spec = modes.get("speculative", {})
    chunk = [i for i in invocations if i.chunk_path]
    calls_per_append = [i.n_calls for i in chunk]
    # Per 100 ms of the audio each append carried (the page sends 100-700 ms in one).
    cpu_net = [
        max(0.0, i.cpu_ms - i.moto_cpu_ms) * CHUNK_MS / (i.audio_ms or CHUNK_MS) for i in chunk
    ]

    def largest_kb(sizes: str) -> float | None:
        """The largest connection item sampled into ``sizes`` in any conversation, in KB."""
        return rnd(max((n for run in runs.values() for n in run[sizes]), default=0) / 1024.0)

    return {
        "aws_calls_per_append_mean": mean(calls_per_append),
        "aws_calls_per_append_p95": rnd(pct([float(c) for c in calls_per_append], 95)),
        "aws_calls_per_append_max": max(calls_per_append) if calls_per_append else None,
        "aws_calls_per_append_distribution": {
            str(k): v for k, v in sorted(Counter(calls_per_append).items())
        },
        "aws_calls_per_append_by_call": per_call([i.calls for i in chunk]),
        "appends_over_3_calls": [
            {"kind": i.kind, "seq": i.seq, "calls": dict(i.calls), "posts": i.posts}
            for i in chunk
            if i.n_calls > 3
        ],
        "appends_by_kind": _appends_by_kind(chunk),
        "appends_measured": len(chunk),
        "aws_calls_per_turn_mean": spec.get("aws_calls_per_turn_mean")
        or streaming.get("aws_calls_per_turn_mean"),
        "aws_calls_per_turn_max": spec.get("aws_calls_per_turn_max")
        or streaming.get("aws_calls_per_turn_max"),
        "cpu_ms_per_100ms_audio": mean(cpu_net),
        "cpu_ms_per_100ms_audio_p95": rnd(pct(cpu_net, 95), 2),
        "cpu_ms_per_100ms_audio_with_moto": mean(
            [i.cpu_ms * CHUNK_MS / (i.audio_ms or CHUNK_MS) for i in chunk]
        ),
        "cpu_ms_per_append": mean([max(0.0, i.cpu_ms - i.moto_cpu_ms) for i in chunk]),
        "audio_ms_per_append": mean([i.audio_ms for i in chunk]),
        "chunking": "page" if config.PAGE_CHUNKING else "fixed 100 ms",
        "append_wall_p50_ms": rnd(pct([i.wall_ms for i in chunk], 50)),
        "connection_item_kb_max": largest_kb("connection_item_sizes"),
        # In a pause the item holds the VAD's prefix ring: what most appends read and write.
        "connection_item_kb_silence": largest_kb("connection_item_sizes_silence"),
    }


def _appends_by_kind(chunk: list[Invocation]) -> dict[str, dict[str, float | None]]:
    by_kind: dict[str, dict[str, float | None]] = {}
    for kind in ("speech", "silence"):
        group = [i for i in chunk if i.kind == kind]
        by_kind[kind] = {
            "appends": len(group),
            "calls_mean": mean([i.n_calls for i in group]),
            "cpu_ms_mean": mean([i.cpu_ms - i.moto_cpu_ms for i in group]),
        }
    return by_kind


def _import_figures(imports: dict[str, Any]) -> dict[str, Any]:
    """The cold-start probes (``infra.bench.probes``), the headline of each and all of them."""
    audio = imports.get("audio", {})
    first_turn = imports.get("first_turn", {})
    return {
        "import_ms_audio": rnd(audio.get("ms")),
        "import_ms_audio_median": audio.get("median_ms"),
        "import_ms_connect": rnd(imports.get("connect", {}).get("ms")),
        "import_ms_disconnect": rnd(imports.get("disconnect", {}).get("ms")),
        "chunk_path_imports_openai": audio.get("imports_openai"),
        "turn_cold_start_ms": rnd(imports.get("turn_cold_start", {}).get("ms")),
        "first_turn_extra_ms_on_demand": first_turn.get("on_demand", {}).get("extra_ms"),
        "first_turn_extra_ms_snapstart": first_turn.get("snapstart", {}).get("extra_ms"),
        "imports": imports,
    }


def _conversation_figures(
    runs: dict[str, dict[str, Any]], invocations: list[Invocation], modes: dict[str, Any]
) -> dict[str, Any]:
    """S3 writes, what the conversations left behind, the server's own figures, the modes."""
    s3_puts = sum(i.calls.get("s3.PutObject", 0) for i in invocations)
    s3_puts += sum(
        1 for run in runs.values() for _at, op in run["observer"].orphans if op == "s3.PutObject"
    )
    minutes = sum(run["audio_ms"] for run in runs.values()) / 60_000.0
    server: dict[str, dict[str, float | None]] = {}
    for name in ("TranscriptionMs", "ChatFirstTokenMs", "SpeechFirstByteMs", "VoiceToVoiceMs"):
        for mode, run in runs.items():
            values = [t.figures[name] for t in run["turns"] if name in t.figures]
            if values:
                server.setdefault(name, {})[mode] = rnd(pct(values, 50))
    return {
        "s3_writes": s3_puts,
        "s3_writes_per_minute": rnd(s3_puts / minutes if minutes else None),
        "conversation_minutes": round(minutes, 3),
        "audio_objects_left": sum(run["objects_left"] for run in runs.values()),
        "server_figures_p50_ms": server,
        "emf_records": sum(len(run["emf"]) for run in runs.values()),
        "modes": modes,
    }


def _turn_figures(t: Turn) -> dict[str, Any]:
    return {
        "mode": t.mode,
        "turn": t.index,
        "phrase": t.phrase,
        "status": t.status,
        "speculative": t.speculative,
        "speech_stopped_delay_ms": rnd(t.speech_stopped_delay_ms),
        "voice_to_voice_ms": rnd(t.voice_to_voice_ms),
        "floor_ms": rnd(t.floor_ms),
        "speculative_floor_ms": rnd(t.speculative_floor_ms),
        "aws_calls": sum(t.calls.values()),
        "discarded_speculations": len(t.discarded),
        "figures": t.figures,
        "timeline_ms": t.timeline,
        "overhead_breakdown_ms": t.breakdown,
        "errors": t.errors,
    }


def _bill_figures(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The bill: per conversation, and the headline from the deployed one (speculative)."""
    costs = {mode: cost_figures(run) for mode, run in runs.items()}
    headline = costs.get("speculative") or next(iter(costs.values()))
    provider = {label: v["usd_per_hour"] for label, v in headline["provider"].items()}
    return {
        "cost": costs,
        "prices_date": headline["prices_date"],
        "aws_usd_per_child_hour": headline["aws_usd_per_hour"],
        "provider_usd_per_child_hour": provider,
        "usd_per_conversation_minute": {
            "aws": headline["aws_usd_per_hour"] / 60,
            **{label: usd / 60 for label, usd in provider.items()},
        },
    }


def _targets(f: dict[str, Any]) -> dict[str, dict[str, Any]]:
    def check(value: Any, limit: Any, le: bool = True) -> bool | None:
        if value is None or limit is None:
            return None
        return bool(value <= limit) if le else bool(value >= limit)

    openai_loaded = f["chunk_path_imports_openai"]
    return {
        "streaming: voice-to-voice p50 <= floor + 60 ms": {
            "value": f["overhead_p50_ms"],
            "target": FLOOR_SLACK_MS,
            "ok": check(f["overhead_p50_ms"], FLOOR_SLACK_MS),
        },
        ">= 2x faster than sequential": {
            "value": f["speedup_vs_sequential"],
            "target": 2.0,
            "ok": check(f["speedup_vs_sequential"], 2.0, le=False),
        },
        "speculative: voice-to-voice <= silence + speech first byte + 150 ms": {
            "value": f["speculative_voice_to_voice_p50_ms"],
            "target": f["speculative_target_ms"],
            "ok": check(f["speculative_voice_to_voice_p50_ms"], f["speculative_target_ms"]),
        },
        "<= 3 AWS calls per append": {
            "value": f["aws_calls_per_append_max"],
            "target": 3,
            "ok": check(f["aws_calls_per_append_max"], 3),
        },
        "<= 5 ms CPU per 100 ms of audio": {
            "value": f["cpu_ms_per_100ms_audio"],
            "target": 5.0,
            "ok": check(f["cpu_ms_per_100ms_audio"], 5.0),
        },
        "no openai import on the chunk path": {
            "value": openai_loaded,
            "target": False,
            "ok": None if openai_loaded is None else not openai_loaded,
        },
        "<= 300 ms of imports (chunk path cold start)": {
            "value": f["import_ms_audio"],
            "target": 300.0,
            "ok": check(f["import_ms_audio"], 300.0),
        },
        "AWS <= $0.05 per child-hour": {
            "value": f.get("aws_usd_per_child_hour"),
            "target": AWS_USD_PER_HOUR_TARGET,
            "ok": check(f.get("aws_usd_per_child_hour"), AWS_USD_PER_HOUR_TARGET),
        },
    }
