"""How slow the fake provider is: the latency profile every endpoint paces itself by."""

from __future__ import annotations

import math
from dataclasses import dataclass

from infra.fake_openai.voices import SPEECH_SAMPLE_RATE

__all__ = ["LatencyProfile"]


@dataclass(frozen=True)
class LatencyProfile:
    """How slow the fake provider is. The defaults are the benchmark's realistic profile.

    ``chat_tokens_per_s`` and ``speech_realtime_factor`` of ``inf`` (or ``<= 0``) mean no
    pacing at all. Speech over the Realtime API is paced like ``/audio/speech``
    (``speech_realtime_factor``); its first audio byte after ``response.create`` is
    ``realtime_first_byte_ms``, equal by default to ``speech_first_byte_ms`` so that benchmarks
    compare the two paths on the same footing, and the socket's handshake takes
    ``realtime_connect_ms``.
    """

    transcription_ms: float = 600.0
    chat_first_token_ms: float = 450.0
    chat_tokens_per_s: float = 40.0
    speech_first_byte_ms: float = 200.0
    #: How many times faster than real time speech is streamed after the first byte.
    speech_realtime_factor: float = 4.0
    moderation_ms: float = 120.0
    #: The Realtime WebSocket's handshake: from the upgrade request to the ``101`` answer.
    realtime_connect_ms: float = 300.0
    #: From ``response.create`` to the first ``response.output_audio.delta``.
    realtime_first_byte_ms: float = 200.0

    @classmethod
    def zero(cls) -> LatencyProfile:
        """No latency at all: for fast tests."""
        return cls(
            transcription_ms=0.0,
            chat_first_token_ms=0.0,
            chat_tokens_per_s=math.inf,
            speech_first_byte_ms=0.0,
            speech_realtime_factor=math.inf,
            moderation_ms=0.0,
            realtime_connect_ms=0.0,
            realtime_first_byte_ms=0.0,
        )

    @classmethod
    def realistic(cls) -> LatencyProfile:
        return cls()

    @classmethod
    def named(cls, name: str) -> LatencyProfile:
        if name == "zero":
            return cls.zero()
        if name == "realistic":
            return cls.realistic()
        raise ValueError(f"unknown latency profile {name!r} (zero, realistic)")

    def token_interval_s(self) -> float:
        tps = self.chat_tokens_per_s
        return 0.0 if tps <= 0 or math.isinf(tps) else 1.0 / tps

    def speech_chunk_interval_s(self, chunk_bytes: int) -> float:
        factor = self.speech_realtime_factor
        if factor <= 0 or math.isinf(factor):
            return 0.0
        return chunk_bytes / 2 / SPEECH_SAMPLE_RATE / factor
