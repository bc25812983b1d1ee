"""The bill of one conversation per child-hour: AWS usage from the measured calls and sizes,
the providers' usage as they reported it, priced by ``infra.cost``; and its lines in the table."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict
from typing import Any

from . import config
from .observers import Invocation
from .stats import fmt, mean


def _route_of(inv: Invocation) -> str:
    return {"connect": "$connect", "disconnect": "$disconnect"}.get(inv.kind, "$default")


def aws_usage(run: dict[str, Any]) -> Any:
    """What one conversation made AWS do, for ``infra.cost``: DynamoDB as the meter saw it,
    S3 and Lambda from every invocation's calls and duration, API Gateway from the messages."""
    from infra.cost import AwsUsage

    seconds = run["audio_ms"] / 1000.0
    invocations: list[Invocation] = run["invocations"]
    calls: Counter[str] = Counter()
    for inv in invocations:
        calls.update(inv.calls)
    calls.update(op for _at, op in run["observer"].orphans)
    memory = run["memory_mb"]
    usage = AwsUsage(
        seconds=seconds,
        dynamodb=list(run["dynamodb_calls"]),
        messages_in=list(run["messages_in"]),
        messages_out=[p.nbytes for p in run["observer"].posts],
        connection_minutes=seconds / 60.0,
        lambda_invocations=[(inv.wall_ms, memory[_route_of(inv)]) for inv in invocations],
        s3_put_class=sum(
            n
            for op, n in calls.items()
            if op in ("s3.PutObject", "s3.DeleteObjects", "s3.ListObjectsV2", "s3.CopyObject")
        ),
        s3_get_class=sum(n for op, n in calls.items() if op in ("s3.GetObject", "s3.HeadObject")),
    )
    return usage


def provider_usage(run: dict[str, Any]) -> Any:
    """What one conversation asked of the providers. As they reported it, when they did: the
    turns' EMF records carry it (``TranscribedSeconds``, ``ChatInputTokens``,
    ``ChatOutputTokens``, ``SpeechAudioTokens``, ``SpeechCharacters``: the usage
    ``kiddolingo.metrics`` emits). What no provider reports is estimated from the fake's request
    log: the characters a ``/audio/speech`` model would have read (the Realtime model's text
    input, about four characters a token) and moderation requests; without any reported usage
    (code before it), all of it: transcribed seconds from the uploaded audio, chat input tokens
    from the request's text, output tokens as streamed."""
    from infra.cost import ProviderUsage, estimate_tokens
    from kiddolingo.speech_text import strip_for_speech

    usage = ProviderUsage(seconds=run["audio_ms"] / 1000.0)
    emf: list[dict[str, float]] = run["emf"]
    reported = any("TranscribedSeconds" in r or "ChatInputTokens" in r for r in emf)
    for r in run["provider_log"]:
        if r.status not in (200, 101, None):
            continue
        body = r.json or {}
        if r.endpoint == "moderations":
            usage.moderation_requests += 1
        if reported:
            continue
        if r.endpoint == "transcriptions" and r.pcm is not None:
            usage.transcription_s += len(r.pcm) / 2 / (r.sample_rate or config.RATE)
        elif r.endpoint == "chat":
            messages = body.get("messages") or []
            text = "".join(str(m.get("content") or "") for m in messages if isinstance(m, dict))
            usage.chat_input_tokens += estimate_tokens(text)
            usage.chat_output_tokens += r.tokens_sent
        elif r.endpoint == "speech":
            usage.speech_audio_s += (r.bytes_total or r.bytes_sent) / 2 / 24_000
    # What the speech stage read out: the answered turns' replies, as the child hears them.
    spoken = "".join(
        strip_for_speech(t.reply) for t in run["turns"] if t.first_delta_at is not None
    )
    usage.speech_characters = len(spoken)
    usage.speech_text_tokens = estimate_tokens(spoken)
    if reported:
        usage.source = "reported by the providers (EMF usage metrics)"
        usage.transcription_s = sum(r.get("TranscribedSeconds", 0.0) for r in emf)
        usage.chat_input_tokens = sum(r.get("ChatInputTokens", 0.0) for r in emf)
        usage.chat_output_tokens = sum(r.get("ChatOutputTokens", 0.0) for r in emf)
        if any("SpeechAudioTokens" in r for r in emf):
            usage.realtime_audio_tokens = sum(r.get("SpeechAudioTokens", 0.0) for r in emf)
        if any("SpeechCharacters" in r for r in emf):
            usage.speech_characters = int(sum(r.get("SpeechCharacters", 0.0) for r in emf))
    else:
        usage.source = "estimated from the fake's request log"
    if usage.realtime_audio_tokens is None and not usage.speech_audio_s:
        # Realtime speech without reported tokens: the seconds the fake would speak the replies.
        from infra.fake_openai import MS_PER_CHAR

        usage.speech_audio_s = usage.speech_characters * MS_PER_CHAR / 1000.0
    return usage


def cost_figures(run: dict[str, Any]) -> dict[str, Any]:
    """The conversation's bill per child-hour: AWS line by line, and the providers' for each
    model set of ``infra.prices.MODEL_SETS``."""
    from infra import cost, prices

    aws = aws_usage(run)
    provider = provider_usage(run)

    def hourly(lines: list[Any], seconds: float) -> list[dict[str, Any]]:
        return [
            {
                "name": line.name,
                "per_hour": round(line.quantity * 3600.0 / seconds, 2) if seconds else None,
                "unit": line.unit,
                "usd_per_hour": round(cost.per_hour(line.usd, seconds), 5),
                **({"note": line.note} if line.note else {}),
            }
            for line in lines
        ]

    aws_lines = cost.aws_lines(aws)
    conn_writes = [c for c in aws.dynamodb if c.is_write and c.item == "conn"]
    out: dict[str, Any] = {
        "prices_date": prices.PRICES_DATE,
        "region": prices.REGION,
        "conversation_s": round(aws.seconds, 1),
        "aws_usd_per_hour": round(cost.per_hour(cost.total(aws_lines), aws.seconds), 4),
        "aws_lines": hourly(aws_lines, aws.seconds),
        "dynamodb_by_call": _dynamodb_breakdown(aws.dynamodb, aws.seconds),
        "connection_item_write_wru_mean": mean([c.wru for c in conn_writes]),
        "connection_item_write_kb_mean": mean(
            [max(c.before, c.after) / 1024.0 for c in conn_writes]
        ),
        "provider_usage_source": provider.source,
        "provider": {},
        "child_rates": {k: round(v, 3) for k, v in asdict(cost.child_rates(aws)).items()},
        "quotas": [
            {
                "quota": q.name,
                "limit": q.limit,
                "unit": q.unit,
                "children": None if math.isinf(n) else math.floor(n),
            }
            for q, n in cost.children_per_quota(cost.child_rates(aws))
        ],
    }
    for label, models in prices.MODEL_SETS.items():
        lines = cost.provider_lines(provider, models)
        out["provider"][label] = {
            "models": list(models),
            "usd_per_hour": round(cost.per_hour(cost.total(lines), provider.seconds), 3),
            "lines": hourly(lines, provider.seconds),
        }
    return out


def _dynamodb_breakdown(calls: list[Any], seconds: float) -> dict[str, dict[str, float]]:
    """Per operation and kind of item: calls, request units and dollars per hour."""
    from infra import prices

    groups: dict[str, list[Any]] = {}
    for c in calls:
        groups.setdefault(f"{c.op} {c.item}".strip(), []).append(c)
    out = {}
    for name, group in sorted(groups.items()):
        wru = sum(c.wru for c in group)
        rru = sum(c.rru for c in group)
        usd = wru * prices.AWS["dynamodb_wru"].usd + rru * prices.AWS["dynamodb_rru"].usd
        out[name] = {
            "calls_per_hour": round(len(group) * 3600.0 / seconds) if seconds else 0,
            "units_per_call": round((wru + rru) / len(group), 2),
            "usd_per_hour": round(usd * 3600.0 / seconds, 4) if seconds else 0.0,
        }
    return out


def cost_table(f: dict[str, Any]) -> list[str]:
    """The bill per child-hour, line by line, of each conversation."""
    out = []
    for mode, c in f.get("cost", {}).items():
        out.append("")
        out.append(
            f"cost per child-hour, {mode} conversation ({c['conversation_s']:g} s scaled to an "
            f"hour; {c['region']} on-demand list prices of {c['prices_date']}, infra/prices.py, "
            "not checked online): "
            f"AWS ${c['aws_usd_per_hour']:.4f}"
        )
        for line in c["aws_lines"]:
            out.append(
                f"  ${line['usd_per_hour']:.4f}  {line['name']}: {line['per_hour']:,.0f} "
                f"{line['unit']}/h"
            )
        out.append(
            "  DynamoDB by call (per hour: calls, units per call, $): "
            + "; ".join(
                f"{name} {v['calls_per_hour']:,}, {v['units_per_call']:g}, ${v['usd_per_hour']:.4f}"
                for name, v in c["dynamodb_by_call"].items()
            )
        )
        out.append(
            f"  connection item writes: {fmt(c['connection_item_write_kb_mean'], ' KB')} "
            f"(the larger of before and after), {fmt(c['connection_item_write_wru_mean'], '')} "
            "WRU each, mean"
        )
        rates = c["child_rates"]
        out.append(
            f"  one child: {rates['messages_in_per_s']:g} messages/s in, "
            f"{rates['lambda_concurrency']:g} Lambda executions at once, "
            f"{rates['wru_per_s']:g} WRU/s ({rates['hot_item_wru_per_s']:g} on its connection "
            f"item), {rates['rru_per_s']:g} RRU/s; quotas on paper, first to bind first: "
            + "; ".join(
                f"{q['quota']} {q['limit']:,.0f} {q['unit']}: "
                + ("never" if q["children"] is None else f"{q['children']:,} children")
                for q in c["quotas"]
            )
        )
        for label, v in c["provider"].items():
            out.append(
                f"  provider, {label} ({', '.join(v['models'])}): ${v['usd_per_hour']:.3f} "
                f"(usage {c['provider_usage_source']})"
            )
            for line in v["lines"]:
                note = f" ({line['note']})" if line.get("note") else ""
                out.append(
                    f"    ${line['usd_per_hour']:.4f}  {line['name']}: "
                    f"{line['per_hour']:,.1f} {line['unit']}/h{note}"
                )
    return out
