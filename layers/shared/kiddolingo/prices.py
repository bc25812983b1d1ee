"""List prices of the model providers, in one dated table: what a turn's usage costs.

The turn's EMF metrics (``ProviderCostUSD``) and the benchmark's cost lines both read this
table, so production and the benchmark price usage the same way. Prices move: update the table
and its date together.

Sources, read on :data:`PRICES_DATE` through the OpenAI model pages (developers.openai.com):
gpt-realtime-2.1-mini, gpt-transcribe. Not confirmed on OpenAI's own pages (from gateways that
resell at list price, marked ``unconfirmed`` in the README): gpt-6-luna. The old defaults'
prices are from the last OpenAI pricing page that listed them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["PRICES", "PRICES_DATE", "cost_usd", "price_of"]

#: The day the prices below were read.
PRICES_DATE = "2026-12-07"

_PER_MILLION = 1e-6

#: model → meter → US dollars per unit. Meters are :class:`kiddolingo.providers.Usage`'s:
#: ``audio_seconds``, ``input_tokens``, ``cached_input_tokens``, ``output_tokens``,
#: ``audio_output_tokens``, ``characters``.
PRICES: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        # Successors (the defaults).
        "gpt-transcribe": {"audio_seconds": 0.0045 / 60},
        "gpt-6-luna": {
            "input_tokens": 0.10 * _PER_MILLION,
            "cached_input_tokens": 0.01 * _PER_MILLION,
            "output_tokens": 0.50 * _PER_MILLION,
        },
        "gpt-realtime-2.1-mini": {
            "input_tokens": 0.60 * _PER_MILLION,
            "cached_input_tokens": 0.06 * _PER_MILLION,
            "output_tokens": 2.40 * _PER_MILLION,
            "audio_output_tokens": 20.00 * _PER_MILLION,
        },
        # The old defaults, until their shutdowns.
        "whisper-1": {"audio_seconds": 0.006 / 60},
        "gpt-4o": {
            "input_tokens": 2.50 * _PER_MILLION,
            "cached_input_tokens": 1.25 * _PER_MILLION,
            "output_tokens": 10.00 * _PER_MILLION,
        },
        "tts-1-hd": {"characters": 30.00 * _PER_MILLION},
        "tts-1": {"characters": 15.00 * _PER_MILLION},
        # Moderation is free of charge.
        "omni-moderation-latest": {},
    }
)


def price_of(model: str, meter: str) -> float | None:
    """Dollars per unit, or ``None`` when the table does not know the model or the meter (a
    self-hosted model, a provider of its own: its cost is not ours to guess)."""
    return PRICES.get(model, {}).get(meter)


def cost_usd(amounts: Mapping[tuple[str, str], float]) -> float:
    """The dollars of a usage (``Usage.amounts``): what the table does not know counts 0."""
    return sum(
        amount * (price_of(model, meter) or 0.0) for (model, meter), amount in amounts.items()
    )
