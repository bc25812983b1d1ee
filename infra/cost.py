"""The cost model of ``make bench``: what was measured, times the price table, per child-hour.

Pure arithmetic over what a benchmark conversation measured (``AwsUsage``, ``ProviderUsage``)
and ``infra.prices``; no I/O. The billing rules it applies:

* DynamoDB: a write costs one write request unit per started KB of the **larger** of the item
  before and after it (a failed conditional write too, at least one unit); a read one read
  request unit per started 4 KB of the item (whatever its projection), half that when
  eventually consistent.
* API Gateway (WebSocket): every message in or out costs one message per started 32 KB, and
  the connection its minutes.
* Lambda: one request per invocation, and its duration (rounded up to the millisecond) times
  the configured memory in GB-seconds.
* S3: PUT, POST and LIST requests in one class, GET in another (DELETE is free).

A conversation of ``seconds`` scales to an hour as it is: the same mix of speech, pauses and
turns for 3,600 seconds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from infra import prices as p

KB = 1024
WRITE_UNIT_BYTES = 1 * KB
READ_UNIT_BYTES = 4 * KB
MESSAGE_UNIT_BYTES = 32 * KB


def write_units(before: int, after: int) -> int:
    """Write request units of one write: the larger of the item before and after, per KB."""
    return max(1, math.ceil(max(before, after) / WRITE_UNIT_BYTES))


def read_units(size: int, consistent: bool) -> float:
    """Read request units of reading one item of ``size`` bytes."""
    units = max(1, math.ceil(size / READ_UNIT_BYTES))
    return float(units) if consistent else units / 2.0


def message_units(nbytes: int) -> int:
    """API Gateway messages billed for one WebSocket message of ``nbytes``."""
    return max(1, math.ceil(nbytes / MESSAGE_UNIT_BYTES))


def lambda_gb_seconds(duration_ms: float, memory_mb: int) -> float:
    """The GB-seconds of one invocation (duration rounded up to the millisecond)."""
    return math.ceil(duration_ms) / 1000.0 * memory_mb / 1024.0


def per_hour(usd: float, seconds: float) -> float:
    """``usd`` spent over ``seconds`` of conversation, scaled to one hour."""
    return usd * 3600.0 / seconds if seconds > 0 else 0.0


@dataclass(frozen=True)
class DynamoCall:
    """One DynamoDB request as billed: ``before``/``after`` are item sizes in bytes (a write),
    ``size`` the item read (a read); ``item`` names the kind of item (``conn``, ``session``…)."""

    op: str
    item: str = ""
    before: int = 0
    after: int = 0
    size: int = 0
    consistent: bool = True
    failed: bool = False

    @property
    def is_write(self) -> bool:
        return self.op in ("PutItem", "UpdateItem", "DeleteItem")

    @property
    def wru(self) -> int:
        return write_units(self.before, self.after) if self.is_write else 0

    @property
    def rru(self) -> float:
        return 0.0 if self.is_write else read_units(self.size, self.consistent)


@dataclass
class AwsUsage:
    """What one conversation made AWS do."""

    seconds: float
    dynamodb: list[DynamoCall] = field(default_factory=list)
    #: Sizes in bytes of the client's messages and of the posts to the connection.
    messages_in: list[int] = field(default_factory=list)
    messages_out: list[int] = field(default_factory=list)
    connection_minutes: float = 0.0
    #: Every Lambda invocation: its duration in ms and its function's memory in MB.
    lambda_invocations: list[tuple[float, int]] = field(default_factory=list)
    s3_put_class: int = 0
    s3_get_class: int = 0


@dataclass(frozen=True)
class CostLine:
    name: str
    quantity: float
    unit: str
    usd: float
    note: str = ""


def aws_lines(usage: AwsUsage) -> list[CostLine]:
    """The AWS bill of ``usage``, line by line (dollars for the conversation as measured)."""
    price = p.AWS
    wru = sum(c.wru for c in usage.dynamodb)
    rru = sum(c.rru for c in usage.dynamodb)
    msgs_in = sum(message_units(n) for n in usage.messages_in)
    msgs_out = sum(message_units(n) for n in usage.messages_out)
    gb_s = sum(lambda_gb_seconds(ms, mb) for ms, mb in usage.lambda_invocations)
    return [
        CostLine("DynamoDB writes", wru, "WRU", wru * price["dynamodb_wru"].usd),
        CostLine("DynamoDB reads", rru, "RRU", rru * price["dynamodb_rru"].usd),
        CostLine("API Gateway messages in", msgs_in, "msg", msgs_in * price["apigw_message"].usd),
        CostLine(
            "API Gateway messages out", msgs_out, "msg", msgs_out * price["apigw_message"].usd
        ),
        CostLine(
            "API Gateway connection minutes",
            usage.connection_minutes,
            "min",
            usage.connection_minutes * price["apigw_connection_minute"].usd,
        ),
        CostLine(
            "Lambda requests",
            len(usage.lambda_invocations),
            "req",
            len(usage.lambda_invocations) * price["lambda_request"].usd,
        ),
        CostLine("Lambda duration", gb_s, "GB-s", gb_s * price["lambda_gb_s"].usd),
        CostLine(
            "S3 PUT/POST/LIST",
            usage.s3_put_class,
            "req",
            usage.s3_put_class * price["s3_put_class"].usd,
        ),
        CostLine(
            "S3 GET", usage.s3_get_class, "req", usage.s3_get_class * price["s3_get_class"].usd
        ),
    ]


@dataclass
class ProviderUsage:
    """What one conversation asked of the providers."""

    seconds: float
    transcription_s: float = 0.0
    chat_input_tokens: float = 0.0
    chat_output_tokens: float = 0.0
    #: Characters read out by the speech stage (what ``/audio/speech`` bills).
    speech_characters: int = 0
    #: Seconds of speech synthesized, and the text tokens sent for it (the Realtime API bills
    #: those, and its audio output tokens).
    speech_audio_s: float = 0.0
    speech_text_tokens: float = 0.0
    #: Realtime audio output tokens as the provider reported them (``None``: estimated from
    #: ``speech_audio_s``).
    realtime_audio_tokens: float | None = None
    moderation_requests: int = 0
    #: Where the figures come from: ``reported`` (the provider's usage) or ``estimated``.
    source: str = "estimated"


def _price(model: str, meter: str) -> tuple[float, str]:
    """Dollars per unit of ``meter`` for ``model`` (``kiddolingo.prices``) and a note."""
    from kiddolingo.prices import price_of

    usd = price_of(model, meter)
    if usd is None:
        return 0.0, "no price in kiddolingo.prices"
    return usd, "price unconfirmed" if model in p.PROVIDER_PRICES_UNCONFIRMED else ""


def provider_lines(usage: ProviderUsage, models: tuple[str, str, str]) -> list[CostLine]:
    """The provider bill of ``usage`` with ``models`` (transcription, chat, speech)."""
    from kiddolingo.prices import PRICES

    stt, chat, tts = models

    def line(
        name: str, model: str, meter: str, quantity: float, unit: str, note: str = ""
    ) -> CostLine:
        usd, price_note = _price(model, meter)
        return CostLine(name, quantity, unit, quantity * usd, note or price_note)

    lines = [
        line(f"transcription {stt}", stt, "audio_seconds", usage.transcription_s, "s"),
        line(f"chat {chat} input", chat, "input_tokens", usage.chat_input_tokens, "tok"),
        line(f"chat {chat} output", chat, "output_tokens", usage.chat_output_tokens, "tok"),
    ]
    if "characters" in PRICES.get(tts, {}):
        lines.append(line(f"speech {tts}", tts, "characters", usage.speech_characters, "char"))
    else:
        audio_tokens = usage.realtime_audio_tokens
        note = ""
        if audio_tokens is None:
            audio_tokens = usage.speech_audio_s * p.REALTIME_AUDIO_TOKENS_PER_S
            note = f"tokens estimated at {p.REALTIME_AUDIO_TOKENS_PER_S:g}/s of audio"
        lines += [
            line(f"speech {tts} text in", tts, "input_tokens", usage.speech_text_tokens, "tok"),
            line(f"speech {tts} audio out", tts, "audio_output_tokens", audio_tokens, "tok", note),
        ]
    lines.append(
        CostLine("moderation omni-moderation-latest", usage.moderation_requests, "req", 0.0)
    )
    return lines


def total(lines: Iterable[CostLine]) -> float:
    return sum(line.usd for line in lines)


def estimate_tokens(text: str) -> float:
    """Tokens of ``text`` when the provider does not say: about four characters each."""
    return len(text) / 4.0


@dataclass(frozen=True)
class Quota:
    name: str
    limit: float
    unit: str
    source: str
    #: What one child uses of it: a key of ``ChildRates``.
    uses: str


#: The defaults (us-east-1) that bound how many children talk at once, from the quota pages
#: (read as stored by the offline search index; not checked online) and ``template.yaml``.
QUOTAS: tuple[Quota, ...] = (
    Quota(
        "stage $default route rate (template.yaml ThrottlingRateLimit; burst 500)",
        1000.0,
        "messages/s",
        "template.yaml Stage DefaultRouteSettings",
        "messages_in_per_s",
    ),
    Quota(
        "API Gateway account throttle (all APIs of the account in the Region)",
        10_000.0,
        "requests/s",
        "docs.aws.amazon.com/apigateway/latest/developerguide/limits.html",
        "messages_in_per_s",
    ),
    Quota(
        "Lambda concurrent executions (account, Region)",
        1000.0,
        "executions",
        "docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html",
        "lambda_concurrency",
    ),
    Quota(
        "DynamoDB on-demand table writes (default table quota)",
        40_000.0,
        "WRU/s",
        "docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html",
        "wru_per_s",
    ),
    Quota(
        "DynamoDB on-demand table reads (default table quota)",
        40_000.0,
        "RRU/s",
        "docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html",
        "rru_per_s",
    ),
    Quota(
        "DynamoDB partition writes (one child's connection item is one hot key)",
        1000.0,
        "WRU/s per item",
        "DynamoDB developer guide: ~1,000 WCU/s per partition",
        "hot_item_wru_per_s",
    ),
)


@dataclass(frozen=True)
class ChildRates:
    """What one child uses per second of conversation, as measured."""

    messages_in_per_s: float
    lambda_concurrency: float
    wru_per_s: float
    rru_per_s: float
    hot_item_wru_per_s: float


def child_rates(usage: AwsUsage) -> ChildRates:
    s = usage.seconds or 1.0
    conn_wru = sum(c.wru for c in usage.dynamodb if c.item == "conn")
    return ChildRates(
        messages_in_per_s=len(usage.messages_in) / s,
        lambda_concurrency=sum(ms for ms, _mb in usage.lambda_invocations) / 1000.0 / s,
        wru_per_s=sum(c.wru for c in usage.dynamodb) / s,
        rru_per_s=sum(c.rru for c in usage.dynamodb) / s,
        hot_item_wru_per_s=conn_wru / s,
    )


def children_per_quota(rates: ChildRates) -> list[tuple[Quota, float]]:
    """Each quota with the number of children talking at once that would reach it, the first
    to bind first (a per-item quota is per child: it binds at any number when one child
    exceeds it, else never)."""
    out = []
    for quota in QUOTAS:
        per_child = getattr(rates, quota.uses)
        if quota.uses == "hot_item_wru_per_s":
            children = math.inf if per_child <= quota.limit else 0.0
        else:
            children = quota.limit / per_child if per_child > 0 else math.inf
        out.append((quota, children))
    return sorted(out, key=lambda qc: qc[1])
