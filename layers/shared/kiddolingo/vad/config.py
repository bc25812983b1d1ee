"""The VAD's settings (:class:`VadConfig`), checked against the limits of ``vad.limits``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .limits import (
    DEFAULT_MAX_PAUSE_KEPT_MS,
    DEFAULT_MIN_SPEECH_MS,
    DEFAULT_PREFIX_PADDING_MS,
    DEFAULT_SAMPLE_RATE,
    DEFAULT_SILENCE_DURATION_MS,
    DEFAULT_THRESHOLD,
    FRAME_MS,
    IDLE_TIMEOUT_MS_RANGE,
    MIN_SPEECH_MS_RANGE,
    PREFIX_PADDING_MS_RANGE,
    SAMPLE_RATES,
    SILENCE_DURATION_MS_RANGE,
    THRESHOLD_RANGE,
)

#: The millisecond settings and their inclusive ranges; ``idle_timeout_ms`` may also be None.
_MS_RANGES = {
    "prefix_padding_ms": PREFIX_PADDING_MS_RANGE,
    "silence_duration_ms": SILENCE_DURATION_MS_RANGE,
    "min_speech_ms": MIN_SPEECH_MS_RANGE,
    "idle_timeout_ms": IDLE_TIMEOUT_MS_RANGE,
}


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _milliseconds(name: str, value: Any) -> int:
    number = _number(name, value)
    if number != int(number):
        raise ValueError(f"{name} must be a whole number of milliseconds, got {value!r}")
    minimum, maximum = _MS_RANGES[name]
    if not minimum <= number <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum} ms, got {value!r}")
    return int(number)


@dataclass(frozen=True)
class VadConfig:
    """Server VAD settings: Realtime ``turn_detection`` names, and the children's defaults and
    the limits of ``kiddolingo.vad.limits``."""

    threshold: float = DEFAULT_THRESHOLD
    prefix_padding_ms: int = DEFAULT_PREFIX_PADDING_MS
    silence_duration_ms: int = DEFAULT_SILENCE_DURATION_MS
    min_speech_ms: int = DEFAULT_MIN_SPEECH_MS
    idle_timeout_ms: int | None = None
    speculative_fraction: float | None = None
    sample_rate: int = DEFAULT_SAMPLE_RATE
    max_pause_kept_ms: int = DEFAULT_MAX_PAUSE_KEPT_MS

    def __post_init__(self) -> None:
        threshold = _number("threshold", self.threshold)
        low, high = THRESHOLD_RANGE
        if not low <= threshold <= high:
            raise ValueError(
                f"threshold must be between {low:g} and {high:g}, got {self.threshold!r}"
            )
        object.__setattr__(self, "threshold", threshold)
        for name in _MS_RANGES:
            value = getattr(self, name)
            if value is not None or name != "idle_timeout_ms":
                object.__setattr__(self, name, _milliseconds(name, value))
        if self.speculative_fraction is not None:
            fraction = _number("speculative_fraction", self.speculative_fraction)
            if not 0.0 < fraction < 1.0:
                raise ValueError(
                    f"speculative_fraction must be between 0 and 1 (exclusive), "
                    f"got {self.speculative_fraction!r}"
                )
            object.__setattr__(self, "speculative_fraction", fraction)
        if isinstance(self.sample_rate, bool) or self.sample_rate not in SAMPLE_RATES:
            raise ValueError(f"sample_rate must be one of {SAMPLE_RATES}, got {self.sample_rate!r}")
        object.__setattr__(self, "sample_rate", int(self.sample_rate))

    @classmethod
    def from_turn_detection(
        cls,
        td: Mapping[str, Any],
        sample_rate: int,
        speculative_fraction: float | None = None,
    ) -> VadConfig:
        """Build from a Realtime ``turn_detection`` object; missing or null keys take defaults.

        ``create_response`` and ``interrupt_response`` belong to the caller and are ignored here,
        as are keys this VAD does not know. ``min_speech_ms`` is accepted as an extension.
        Raises ``ValueError`` for another ``type`` or a value out of range.
        """
        if not isinstance(td, Mapping):
            raise ValueError("turn_detection must be an object (null means manual commits, no VAD)")
        kind = td.get("type", "server_vad")
        if kind not in (None, "server_vad"):
            raise ValueError(f"turn_detection.type must be 'server_vad', got {kind!r}")
        # A null value takes the default, as a missing key does.
        settings = {
            key: td[key]
            for key in ("threshold", "prefix_padding_ms", "silence_duration_ms", "min_speech_ms")
            if td.get(key) is not None
        }
        try:
            return cls(
                **settings,
                idle_timeout_ms=td.get("idle_timeout_ms"),
                speculative_fraction=speculative_fraction,
                sample_rate=sample_rate,
            )
        except ValueError as exc:
            raise ValueError(f"turn_detection: {exc}") from None

    @property
    def frame_samples(self) -> int:
        return self.sample_rate * FRAME_MS // 1000

    @property
    def frame_bytes(self) -> int:
        return 2 * self.frame_samples

    @property
    def prefix_bytes(self) -> int:
        return 2 * (self.sample_rate * self.prefix_padding_ms // 1000)

    @property
    def min_speech_frames(self) -> int:
        return max(1, -(-self.min_speech_ms // FRAME_MS))

    @property
    def speculate_after_ms(self) -> int | None:
        if self.speculative_fraction is None:
            return None
        return round(self.speculative_fraction * self.silence_duration_ms)
