"""The price table of ``make bench``'s cost model: one place, one date.

US East (N. Virginia) on-demand list prices in US dollars, without free tiers. They were written
down on ``PRICES_DATE`` from the pages named in ``SOURCES`` as stored by the team's offline
search index; they were **not** checked online that day (the machine has no internet). Change a
price here, with its date and source, and every figure of the cost model follows.

A provider price marked ``confirmed=False`` was not found in a source and is an estimate: the
benchmark prints it as unconfirmed.
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

PROVIDERS: dict[str, Price] = {
    # The old defaults.
    "whisper-1/minute": Price(
        0.006, "minute of audio", "developers.openai.com/api/docs/models/whisper-1"
    ),
    "gpt-4o/input": Price(
        2.50e-6,
        "input token",
        "developers.openai.com/api/docs/models/gpt-4o (not found in the index; list price)",
        confirmed=False,
    ),
    "gpt-4o/output": Price(
        10.00e-6,
        "output token",
        "developers.openai.com/api/docs/models/gpt-4o (not found in the index; list price)",
        confirmed=False,
    ),
    "tts-1-hd/character": Price(
        30.00e-6, "character", "developers.openai.com/api/docs/models/tts-1-hd"
    ),
    # The successors.
    "gpt-transcribe/minute": Price(
        0.0045, "minute of audio", "developers.openai.com/api/docs/models/gpt-transcribe"
    ),
    "gpt-6-luna/input": Price(
        0.10e-6, "input token", "developers.openai.com/api/docs/models/gpt-6-luna"
    ),
    "gpt-6-luna/output": Price(
        0.50e-6, "output token", "developers.openai.com/api/docs/models/gpt-6-luna"
    ),
    "gpt-realtime-2.1-mini/text_input": Price(
        0.60e-6, "text input token", "developers.openai.com/api/docs/models/gpt-realtime-2.1-mini"
    ),
    "gpt-realtime-2.1-mini/text_output": Price(
        2.40e-6, "text output token", "developers.openai.com/api/docs/models/gpt-realtime-2.1-mini"
    ),
    "gpt-realtime-2.1-mini/audio_output": Price(
        20.00e-6,
        "audio output token",
        "developers.openai.com/api/docs/models/gpt-realtime-2.1-mini",
    ),
    # Free of charge.
    "omni-moderation-latest/request": Price(
        0.0, "request", "developers.openai.com/api/docs/models/omni-moderation-latest"
    ),
}

#: Audio output tokens per second of speech from the Realtime API, for when the provider does
#: not report its usage: an estimate (one token per 50 ms), not found in a source.
REALTIME_AUDIO_TOKENS_PER_S = 20.0
REALTIME_AUDIO_TOKENS_CONFIRMED = False

#: The models of each line of the provider bill: transcription, chat, speech.
MODEL_SETS: dict[str, tuple[str, str, str]] = {
    "old defaults": ("whisper-1", "gpt-4o", "tts-1-hd"),
    "successors": ("gpt-transcribe", "gpt-6-luna", "gpt-realtime-2.1-mini"),
}
