"""The AWS price table of ``make bench``'s cost model: one place, one date.

US East (N. Virginia) on-demand list prices in US dollars, without free tiers. They were written
down on ``PRICES_DATE`` from the pages named in ``SOURCES`` as stored by the team's offline
search index; they were **not** checked online that day (the machine has no internet). Change a
price here, with its date and source, and every figure of the cost model follows.

The providers' list prices are ``kiddolingo.prices`` (one table for production's metrics and
the benchmark, of the same date).
"""

from __future__ import annotations

from dataclasses import dataclass

PRICES_DATE = "2026-12-07"
REGION = "us-east-1"


@dataclass(frozen=True)
class Price:
    usd: float
    #: What one ``usd`` buys, e.g. "1M write request units".
    per: str
    source: str
    confirmed: bool = True


AWS: dict[str, Price] = {
    # DynamoDB on-demand (the price cut of November 2024): a write request unit is 1 KB of the
    # larger of the item before and after a write; a read request unit is 4 KB of a strongly
    # consistent read (half for an eventually consistent one).
    "dynamodb_wru": Price(
        0.625e-6, "write request unit", "aws.amazon.com/dynamodb/pricing/on-demand"
    ),
    "dynamodb_rru": Price(
        0.125e-6, "read request unit", "aws.amazon.com/dynamodb/pricing/on-demand"
    ),
    # API Gateway WebSocket APIs: messages in and out, billed in 32 KB increments (first billion
    # a month), and connection minutes.
    "apigw_message": Price(1.00e-6, "message of up to 32 KB", "aws.amazon.com/api-gateway/pricing"),
    "apigw_connection_minute": Price(
        0.25e-6, "connection minute", "aws.amazon.com/api-gateway/pricing"
    ),
    # Lambda on arm64 (template.yaml: Architectures arm64).
    "lambda_request": Price(0.20e-6, "request", "aws.amazon.com/lambda/pricing"),
    "lambda_gb_s": Price(0.0000133334, "GB-second (arm64)", "aws.amazon.com/lambda/pricing"),
    # S3 Standard: PUT, COPY, POST (DeleteObjects is a POST) and LIST in one class, GET in the
    # other; DELETE is free. Storage is left out: audio lives seconds, not months.
    "s3_put_class": Price(0.005e-3, "PUT, POST or LIST request", "aws.amazon.com/s3/pricing"),
    "s3_get_class": Price(0.0004e-3, "GET request", "aws.amazon.com/s3/pricing"),
}

#: The providers' prices live in ``kiddolingo.prices`` (production prices each turn's usage for
#: its EMF metrics from that table; the benchmark reads the same one). Models whose price this
#: table's sources did not show on OpenAI's own pages (the offline index had gpt-6-luna,
#: gpt-transcribe, gpt-realtime-2.1-mini, whisper-1 and tts-1-hd there, not gpt-4o):
PROVIDER_PRICES_UNCONFIRMED = frozenset({"gpt-4o"})

#: Audio output tokens per second of speech from the Realtime API, for when the provider does
#: not report its usage: an estimate (one token per 50 ms), not found in a source.
REALTIME_AUDIO_TOKENS_PER_S = 20.0

#: The models of each line of the provider bill: transcription, chat, speech.
MODEL_SETS: dict[str, tuple[str, str, str]] = {
    "old defaults": ("whisper-1", "gpt-4o", "tts-1-hd"),
    "successors": ("gpt-transcribe", "gpt-6-luna", "gpt-realtime-2.1-mini"),
}
