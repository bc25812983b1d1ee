"""How the figures are summed up (percentiles, means, rounding) and written in the table."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np


def pct(values: list[float] | list[float | None], q: float) -> float | None:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return None
    return float(np.percentile(clean, q))


def rnd(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def per_call(counters: list[Counter[str]]) -> dict[str, float]:
    total: Counter[str] = Counter()
    for c in counters:
        total.update(c)
    n = max(1, len(counters))
    return {op: round(count / n, 2) for op, count in sorted(total.items())}


def mean(values: list[float] | list[int], digits: int = 2) -> float | None:
    return round(float(np.mean(values)), digits) if values else None


# How a figure is written in a cell of the table ("—": not measured).


def fmt(value: Any, unit: str = "ms") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if unit == "ms":
        return f"{value:,.0f} ms"
    if unit == "x":
        return f"{value:.2f}×"
    if unit == "ms2":
        return f"{value:.2f} ms"
    return f"{value:g}{unit}"


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("ok" if ok else "MISS")
