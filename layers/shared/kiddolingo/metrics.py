"""Per-turn metrics as CloudWatch Embedded Metric Format (EMF), through Powertools Metrics.

One EMF record per tutor turn, printed to stdout (Lambda ships it to CloudWatch Logs, which
turns it into metrics). The numbers come from :func:`turn_figures`, a pure function of the
turn's :class:`~kiddolingo.turn.TurnOutcome`; the benchmark (``infra/bench/``) reads the same
function, so what it reports is exactly what production emits.

===================  ============  =====================================================
metric               unit          value
===================  ============  =====================================================
TranscriptionMs      Milliseconds  the child's audio read back + the transcription call
ChatFirstTokenMs     Milliseconds  turn start → first chat token
SpeechFirstByteMs    Milliseconds  turn start → first byte of speech
VoiceToVoiceMs       Milliseconds  end of the child's speech → first audio delta posted
                                   (only when the timings carry it, see below)
Interruptions        Count         1 when the reply was cut by the child speaking (barge-in)
SpeculativeHits      Count         1 when an answer prepared during the pause was released
SpeculativeMisses    Count         1 when it was discarded because the child went on
ProviderErrors       Count         1 when a provider failed the turn for good
SpeechStrayed        Count         sentences the voice model strayed from (reworded past
                                   the tolerance): cut short, never shown as their text
TranscribedSeconds   Seconds       audio the transcription provider billed
ChatInputTokens      Count         prompt tokens the chat provider billed (cached included)
ChatOutputTokens     Count         completion tokens (reasoning included)
SpeechAudioTokens    Count         audio output tokens of the Realtime speech responses
SpeechCharacters     Count         characters sent to ``/audio/speech``
ProviderCostUSD      None          all of the above at the list prices of
                                   :mod:`kiddolingo.prices` (0 for a model it does not know)
===================  ============  =====================================================

The usage figures are what the providers reported (``TurnOutcome.usage``), by stage.

``ChatFirstTokenMs`` and ``SpeechFirstByteMs`` are measured from the start of the reply
(``TurnTimings.started``), as ``kiddolingo.turn`` records them. ``VoiceToVoiceMs`` is emitted
when the timings provide it: a ``voice_to_voice_ms`` attribute, or ``speech_end_at`` (the
``time.monotonic()`` at which the child's speech ended) together with ``first_audio_ms``.

Imports: Powertools loads only when a record is emitted (a turn has ended), never on the audio
chunk path; ``openai`` is never imported here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from . import observe

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "KiddoLingo"
DEFAULT_SERVICE = "kiddolingo-voice"

#: Metric name → CloudWatch unit.
UNITS: Mapping[str, str] = {
    "TranscriptionMs": "Milliseconds",
    "ChatFirstTokenMs": "Milliseconds",
    "SpeechFirstByteMs": "Milliseconds",
    "VoiceToVoiceMs": "Milliseconds",
    "Interruptions": "Count",
    "SpeculativeHits": "Count",
    "SpeculativeMisses": "Count",
    "ProviderErrors": "Count",
    "SpeechStrayed": "Count",
    "TranscribedSeconds": "Seconds",
    "ChatInputTokens": "Count",
    "ChatOutputTokens": "Count",
    "SpeechAudioTokens": "Count",
    "SpeechCharacters": "Count",
    "ProviderCostUSD": "None",
}

#: Usage metric → the meters it sums (over every model of the turn).
_USAGE_METRICS = {
    "TranscribedSeconds": ("audio_seconds",),
    "SpeechAudioTokens": ("audio_output_tokens",),
    "SpeechCharacters": ("characters",),
}

#: The metric names that are timings (emitted only when measured).
TIMINGS = ("TranscriptionMs", "ChatFirstTokenMs", "SpeechFirstByteMs", "VoiceToVoiceMs")

SPECULATIVE = ("hit", "miss")


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and number not in (float("inf"), float("-inf")) else None


def _voice_to_voice_ms(timings: Any) -> float | None:
    direct = _number(getattr(timings, "voice_to_voice_ms", None))
    if direct is not None:
        return direct
    speech_end = _number(getattr(timings, "speech_end_at", None))
    started = _number(getattr(timings, "started", None))
    first_audio = _number(getattr(timings, "first_audio_ms", None))
    if speech_end is None or started is None or first_audio is None:
        return None
    return (started - speech_end) * 1000.0 + first_audio


def turn_figures(outcome: Any, *, speculative: str | None = None) -> dict[str, float]:
    """The metrics of one turn, by name (see :data:`UNITS`). Pure: reads ``outcome`` only.

    Timings that were not measured (a turn without audio has no transcription, a failed turn
    may have no first token) are left out; counters are always present (0 or 1), except the
    speculative ones, which appear only when ``speculative`` is ``"hit"`` or ``"miss"``.
    """
    if speculative is not None and speculative not in SPECULATIVE:
        raise ValueError(f"speculative must be one of {SPECULATIVE} or None, not {speculative!r}")
    timings = getattr(outcome, "timings", None)
    figures: dict[str, float] = {}
    if timings is not None:
        for name, value in (
            ("TranscriptionMs", _number(getattr(timings, "transcription_ms", None))),
            ("ChatFirstTokenMs", _number(getattr(timings, "chat_first_token_ms", None))),
            ("SpeechFirstByteMs", _number(getattr(timings, "speech_first_byte_ms", None))),
            ("VoiceToVoiceMs", _voice_to_voice_ms(timings)),
        ):
            if value is not None:
                figures[name] = round(value, 3)
    status = getattr(outcome, "status", None)
    reason = getattr(outcome, "reason", None)
    figures["Interruptions"] = 1.0 if status == "cancelled" and reason == "turn_detected" else 0.0
    figures["ProviderErrors"] = 1.0 if getattr(outcome, "error", None) is not None else 0.0
    if speculative is not None:
        figures["SpeculativeHits"] = 1.0 if speculative == "hit" else 0.0
        figures["SpeculativeMisses"] = 1.0 if speculative == "miss" else 0.0
    strayed = _number(getattr(outcome, "strayed", None))
    if strayed:  # rare: a record only when it happened
        figures["SpeechStrayed"] = strayed
    figures.update(usage_figures(outcome))
    return figures


def usage_figures(outcome: Any) -> dict[str, float]:
    """The usage metrics of a turn and its cost at list prices (empty without usage)."""
    usage = getattr(outcome, "usage", None)
    amounts: dict[tuple[str, str], float] = dict(getattr(usage, "amounts", None) or {})
    if not amounts:
        return {}
    from .prices import cost_usd

    figures = {
        name: float(sum(v for (_m, meter), v in amounts.items() if meter in meters))
        for name, meters in _USAGE_METRICS.items()
    }
    # Text tokens belong to the chat model, except those the speech model reports with its
    # audio: a model with audio output tokens is a speech model.
    speech_models = {m for (m, meter) in amounts if meter == "audio_output_tokens"}
    chat = [(m, meter, v) for (m, meter), v in amounts.items() if m not in speech_models]
    figures["ChatInputTokens"] = float(
        sum(v for _m, meter, v in chat if meter in ("input_tokens", "cached_input_tokens"))
    )
    figures["ChatOutputTokens"] = float(sum(v for _m, meter, v in chat if meter == "output_tokens"))
    figures["ProviderCostUSD"] = round(cost_usd(amounts), 6)
    return {k: v for k, v in figures.items() if v or k == "ProviderCostUSD"}


def emit_turn_metrics(
    outcome: Any,
    *,
    speculative: str | None = None,
    namespace: str | None = None,
    service: str | None = None,
) -> dict[str, float]:
    """Print one EMF record with :func:`turn_figures` of ``outcome``; return the figures.

    The namespace comes from ``POWERTOOLS_METRICS_NAMESPACE`` (``KiddoLingo`` when unset), the
    ``service`` dimension from ``POWERTOOLS_SERVICE_NAME``. ``POWERTOOLS_METRICS_DISABLED=true``
    silences the output. Never raises: metrics must not break a child's turn.
    """
    observe.turn_ended(outcome)  # the turn observers (the benchmark) see every outcome
    try:
        figures = turn_figures(outcome, speculative=speculative)
    except Exception:
        log.exception("could not compute the turn metrics")
        return {}
    try:
        # A fresh provider per record: Powertools' ``Metrics`` class shares its metric set
        # between instances, and concurrent turns of one process must not mix their figures.
        from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import (
            AmazonCloudWatchEMFProvider,
        )

        provider = AmazonCloudWatchEMFProvider(
            namespace=namespace
            or os.environ.get("POWERTOOLS_METRICS_NAMESPACE")
            or DEFAULT_NAMESPACE,
            service=service or os.environ.get("POWERTOOLS_SERVICE_NAME") or DEFAULT_SERVICE,
        )
        for name, value in figures.items():
            provider.add_metric(name=name, unit=UNITS[name], value=value)
        response_id = getattr(outcome, "response_id", None)
        if response_id:
            provider.add_metadata(key="response_id", value=str(response_id))
        provider.flush_metrics()
    except Exception:
        log.exception("could not emit the turn metrics")
    return figures


def parse_emf(text: str) -> list[dict[str, float]]:
    """The metric values of every EMF record in ``text`` (one JSON object per line), in order.

    For tests and the benchmark: what CloudWatch would extract from the function's output.
    """
    import json

    records: list[dict[str, float]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        names: list[str] = []
        for directive in data.get("_aws", {}).get("CloudWatchMetrics", []):
            names += [m["Name"] for m in directive.get("Metrics", [])]
        record: dict[str, float] = {}
        for name in names:
            value = data.get(name)
            if isinstance(value, list):  # several values of one metric in one record
                value = value[-1] if value else None
            if isinstance(value, int | float):
                record[name] = float(value)
        records.append(record)
    return records
