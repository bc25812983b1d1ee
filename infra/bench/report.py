"""The table ``make bench`` prints: the figures against their targets, then the details."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from . import config
from .config import AWS_USD_PER_HOUR_TARGET
from .costs import cost_table
from .stats import fmt, verdict

Row = tuple[str, str, str, str, str]


def table(f: dict[str, Any]) -> str:
    """The figures of :func:`infra.bench.results.figures`, as ``make bench`` prints them."""
    rows: list[Row] = [
        ("figure", "p50", "p95", "target", ""),
        *_voice_to_voice_rows(f),
        *_speculative_rows(f),
        *_aws_rows(f),
        *_import_rows(f),
        *_cost_rows(f),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [_head(f)]
    for n, row in enumerate(rows):
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    extra = [*_overhead_lines(f), *_chunk_path_lines(f), *_server_lines(f), *cost_table(f)]
    return "\n".join([*lines, "", *extra])


def _head(f: dict[str, Any]) -> str:
    """What ran and how: the date, the turns, the setup, the latency profile."""
    p = f["profile"]
    tps = p["chat_tokens_per_s"]
    rt = p["speech_realtime_factor"]
    invocations = (
        f"invocations in {f['containers']} container processes "
        f"(up to {f['containers_busy_max']} busy, {f['routing'] or 'mru'} routing)"
        if f["containers"]
        else "invocations in threads of this process"
    )
    return (
        f"KiddoLingo Voice benchmark · {f['date']} · {f['turns_measured']}/{f['turns']} turns · "
        f"speech: {', '.join(f['speech_source'])} · load {f['load_average_start'][:1]} · "
        f"AWS: moto {'in this process' if f['aws'] == 'inprocess' else 'in its own process'} · "
        f"{invocations} · "
        f"fake OpenAI {'in this process' if f['provider'] == 'inprocess' else 'in its own process'}"
        f" · input {f['input_rate'] // 1000} kHz PCM16"
        f" · tutor's speech: {config.HANDLER_ENV.get('SPEECH_API') or 'realtime'} API"
        f"{''.join(f' · {k}={v}' for k, v in config.HANDLER_ENV.items() if 'SPEECH' not in k)}\n"
        f"profile: transcription {p['transcription_ms']:g} ms, chat first token "
        f"{p['chat_first_token_ms']:g} ms then {('∞' if tps is None else f'{tps:g}')} tok/s, "
        f"speech first byte {p['speech_first_byte_ms']:g} ms "
        f"(Realtime {p.get('realtime_first_byte_ms', 0):g} ms, handshake "
        f"{p.get('realtime_connect_ms', 0):g} ms; "
        f"{'∞' if rt is None else f'{rt:g}'}× real time), moderation {p['moderation_ms']:g} ms; "
        f"silence window {f['silence_ms']} ms; speculative_fraction "
        f"{f['speculative_fraction']}\n"
    )


def _row(
    figure: str, p50: str = "", p95: str = "", target: str = "", ok: bool | None = None
) -> Row:
    """One row of the table; ``ok`` is its target's verdict (``None``: none to meet)."""
    return (figure, p50, p95, target, verdict(ok))


def _p50_p95(f: dict[str, Any], name: str) -> tuple[str, str]:
    """The cells of the figure ``name``: its ``_p50_ms`` and ``_p95_ms``."""
    return fmt(f[f"{name}_p50_ms"]), fmt(f[f"{name}_p95_ms"])


def _voice_to_voice_rows(f: dict[str, Any]) -> list[Row]:
    """speech_stopped, and voice-to-voice with the speculative turn off against its floor."""
    ok = f["targets"]["streaming: voice-to-voice p50 <= floor + 60 ms"]["ok"]
    return [
        _row(
            "speech_stopped after the last speech sample",
            *_p50_p95(f, "speech_stopped_delay"),
            f"≈ silence window ({f['silence_ms']} ms)",
        ),
        _row("voice-to-voice, streaming (speculation off)", *_p50_p95(f, "voice_to_voice")),
        _row("  floor (silence + STT + 1st sentence + TTS TTFB)", *_p50_p95(f, "floor")),
        _row("  overhead over the floor", *_p50_p95(f, "overhead"), "≤ 60 ms", ok),
    ]


def _speculative_rows(f: dict[str, Any]) -> list[Row]:
    """Voice-to-voice as deployed, against its floor; the sequential baseline."""
    tgt = f["targets"]
    return [
        _row(
            "voice-to-voice, speculative (as deployed)",
            *_p50_p95(f, "speculative_voice_to_voice"),
            f"≤ {fmt(f['speculative_target_ms'])}",
            tgt["speculative: voice-to-voice <= silence + speech first byte + 150 ms"]["ok"],
        ),
        _row("  its physical floor at this fraction", fmt(f["speculative_floor_p50_ms"])),
        _row(
            "  speech_stopped (release) → first audio",
            fmt(f["speculative_release_to_first_audio_p50_ms"]),
        ),
        _row("sequential baseline (the brief's design)", *_p50_p95(f, "sequential")),
        _row(
            "speedup vs sequential (best mode, p50)",
            fmt(f["speedup_vs_sequential"], "x"),
            target="≥ 2×",
            ok=tgt[">= 2x faster than sequential"]["ok"],
        ),
        _row("  streaming alone", fmt(f["streaming_speedup_vs_sequential"], "x")),
    ]


def _aws_rows(f: dict[str, Any]) -> list[Row]:
    """The chunk path's AWS calls and CPU; a turn's calls."""
    tgt = f["targets"]
    return [
        _row(
            "AWS calls per append (not ending a turn)",
            f"{fmt(f['aws_calls_per_append_mean'], '')} mean",
            f"{fmt(f['aws_calls_per_append_p95'], '')} / {fmt(f['aws_calls_per_append_max'], '')}"
            " max",
            "≤ 3",
            tgt["<= 3 AWS calls per append"]["ok"],
        ),
        _row(
            "AWS calls per turn",
            f"{fmt(f['aws_calls_per_turn_mean'], '')} mean",
            f"{fmt(f['aws_calls_per_turn_max'], '')} max",
        ),
        _row(
            "CPU per 100 ms of audio (chunk path, excl. moto)",
            fmt(f["cpu_ms_per_100ms_audio"], "ms2"),
            fmt(f["cpu_ms_per_100ms_audio_p95"], "ms2"),
            "≤ 5 ms",
            tgt["<= 5 ms CPU per 100 ms of audio"]["ok"],
        ),
        _row(
            "  … including moto's AWS emulation", fmt(f["cpu_ms_per_100ms_audio_with_moto"], "ms2")
        ),
    ]


def _import_rows(f: dict[str, Any]) -> list[Row]:
    """Cold starts: the handlers' imports, the first turn of a fresh container."""
    tgt = f["targets"]
    return [
        _row(
            "cold-start imports: audio ($default), best of N",
            fmt(f["import_ms_audio"]),
            f"{fmt(f['import_ms_audio_median'])} median",
            "≤ 300 ms",
            tgt["<= 300 ms of imports (chunk path cold start)"]["ok"],
        ),
        _row(
            "  openai imported on the chunk path",
            fmt(f["chunk_path_imports_openai"]),
            target="no",
            ok=tgt["no openai import on the chunk path"]["ok"],
        ),
        _row("cold-start imports: connect", fmt(f["import_ms_connect"])),
        _row("cold-start imports: disconnect", fmt(f["import_ms_disconnect"])),
        _row("first turn of a fresh container: SDK imports", fmt(f["turn_cold_start_ms"])),
        _row("first turn over a warm one: on-demand INIT", fmt(f["first_turn_extra_ms_on_demand"])),
        _row(
            "  … from a SnapStart snapshot (as deployed)",
            fmt(f["first_turn_extra_ms_snapstart"]),
            target="≈ 0",
        ),
    ]


def _cost_rows(f: dict[str, Any]) -> list[Row]:
    """S3 writes, and the bill per child-hour."""
    successors = f["provider_usd_per_child_hour"].get("successors", 0.0)
    return [
        _row(
            "S3 writes per conversation minute",
            fmt(f["s3_writes_per_minute"], ""),
            target="speech + prefix only",
        ),
        _row(
            f"AWS $ per child-hour (prices of {f['prices_date']})",
            f"${f['aws_usd_per_child_hour']:.4f}",
            target=f"≤ ${AWS_USD_PER_HOUR_TARGET:.2f}",
            ok=f["targets"]["AWS <= $0.05 per child-hour"]["ok"],
        ),
        *(
            _row(f"provider $ per child-hour, {label}", f"${usd:.3f}")
            for label, usd in f["provider_usd_per_child_hour"].items()
        ),
        _row(
            "$ per conversation-minute: AWS + providers (successors)",
            f"${f['aws_usd_per_child_hour'] / 60:.4f} + ${successors / 60:.4f}",
        ),
    ]


def _overhead_lines(f: dict[str, Any]) -> list[str]:
    """Where the overhead goes; the speculative turns; the provider's requests and lateness."""
    extra = ["streaming overhead over the floor, by stage (p50):"]
    extra += [
        f"  {value:>6.0f} ms  {name}"
        for name, value in f["overhead_breakdown_p50_ms"].items()
        if value is not None
    ]
    modes = f["modes"]
    extra.append(
        "speculative turns: "
        + ", ".join(
            f"{m}: {v['speculative_turns']}/{v['turns']} prepared in the pause, "
            f"{v['discarded_speculations']} discarded"
            for m, v in modes.items()
        )
    )
    extra += _by_mode(modes, "provider requests per turn, {mode}: ", "provider_requests_per_turn")
    extra += _by_mode(
        modes,
        "the fake provider's lateness over its profile (p50), {mode}: ",
        "provider_lateness_p50_ms",
        lambda n: fmt(n, "ms2"),
    )
    return extra


def _by_mode(
    modes: dict[str, Any], title: str, key: str, cell: Callable[[Any], str] = "{:g}".format
) -> list[str]:
    """A line per mode: ``title`` (with the mode), then each entry of the mode's ``key``."""
    return [
        title.format(mode=mode) + ", ".join(f"{k} {cell(n)}" for k, n in v[key].items())
        for mode, v in modes.items()
    ]


def _chunk_path_lines(f: dict[str, Any]) -> list[str]:
    """The chunk path by kind, its heavy appends, the connection item, calls by kind."""
    extra: list[str] = []
    modes = f["modes"]
    kinds = f["appends_by_kind"]
    extra.append(
        "chunk path by kind: "
        + "; ".join(
            f"{k} {v['appends']} appends, {fmt(v['calls_mean'], '')} calls, "
            f"{fmt(v['cpu_ms_mean'], 'ms2')} CPU"
            for k, v in kinds.items()
        )
    )
    heavy = f["appends_over_3_calls"]
    if heavy:
        # A lost race costs one more call; a closer that falls behind slow writes (the lenient
        # pass of kiddolingo.ingest) takes over the chunks parked meanwhile, an UpdateItem per
        # pass.
        extra.append(
            f"appends over 3 calls: {len(heavy)} of {f['appends_measured']} ("
            + ", ".join(f"#{a['seq']} {a['kind']}: {sum(a['calls'].values())}" for a in heavy)
            + ")"
        )
    size_kb = f["connection_item_kb_max"] or 0.0
    pause_kb = f["connection_item_kb_silence"] or 0.0
    extra.append(
        f"connection item (written by every append, read by those whose container did not "
        f"leave it a moment ago): {pause_kb:.1f} KB in a pause "
        f"({math.ceil(pause_kb / 4)} RCU per strongly consistent read, {math.ceil(pause_kb)} WCU "
        f"per update), up to {size_kb:.1f} KB at the end of a phrase ({math.ceil(size_kb / 4)} "
        f"RCU, {math.ceil(size_kb)} WCU)"
    )
    extra.append(
        "calls per append (mean): "
        + ", ".join(f"{k} {v:g}" for k, v in f["aws_calls_per_append_by_call"].items())
        + f"; distribution {f['aws_calls_per_append_distribution']}"
    )
    extra += _by_mode(modes, "calls per turn, {mode} (mean): ", "aws_calls_per_turn_by_call")
    return extra


def _server_lines(f: dict[str, Any]) -> list[str]:
    """The server's own figures (the EMF metrics), the heaviest imports, what was left."""
    extra: list[str] = []
    if f["server_figures_p50_ms"]:
        extra.append(
            "server figures (turn_figures = the EMF metrics; p50 by mode, ms from the reply "
            "start): "
            + "; ".join(
                f"{name} " + ", ".join(f"{m} {v:g}" for m, v in by_mode.items() if v is not None)
                for name, by_mode in f["server_figures_p50_ms"].items()
            )
        )
    heaviest = f["imports"].get("audio", {}).get("heaviest") or []
    if heaviest:
        extra.append(
            "heaviest imports of the audio handler: "
            + ", ".join(f"{h['module']} {h['ms']:g} ms" for h in heaviest)
        )
    extra.append(
        f"EMF records captured: {f['emf_records']}; audio objects left in S3: "
        f"{f['audio_objects_left']}; errors posted: {f['errors_posted'] or 'none'}"
    )
    return extra
