"""The page's chunking policy (``web/chunk-policy.js``) for the benchmark's child, so the cost
figure is for the page as shipped: which 100 ms blocks of microphone audio the page sends at
once and which it holds for a larger append.

A line-for-line copy of the JavaScript (the page is the source of truth; read the reasons
there). ``tests/test_page_chunking.py`` runs both on the same audio under node and requires
the same decisions, block by block.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

FRAME_MS = 20
BLOCK_MS = 100
MESSAGE_UNIT_BYTES = 32 * 1024
ENVELOPE_BYTES = 256
MAYBE_DB = 3.0
CLEAR_DB = 12.0
CLEAR_MAX_CROSSINGS_PER_S = 4000
ONSET_FINE_MS = 300
SPEECH_HOLD_MS = 300
CLOSING_MARGIN_MS = 200
EARLY_FINE_MS = 300
CROSSING_GUARD_MS = 300
CLEAR_RUN_FRAMES = 3

_FLOOR_INITIAL_DB = -60.0
_FLOOR_MIN_DB = -70.0
_FLOOR_MAX_DB = -10.0
_FLOOR_DOWN = 0.3
_FLOOR_UP = 0.02
_FLOOR_WARMUP = 50
_FLOOR_PRIOR_FRAMES = 3
_POWER_EPS = 1e-12
#: No settings given: the server VAD's defaults (``None`` is manual commits, as on the page).
_SERVER_VAD: Mapping[str, Any] = MappingProxyType({})


def max_append_ms(sample_rate: int) -> int:
    block_bytes = sample_rate * BLOCK_MS // 1000 * 2
    max_pcm_bytes = (MESSAGE_UNIT_BYTES - ENVELOPE_BYTES) // 4 * 3
    return max(1, max_pcm_bytes // block_bytes) * BLOCK_MS


def frame_features(pcm: bytes, sample_rate: int) -> list[tuple[float, int]]:
    """(level in dBFS, zero crossings) per whole 20 ms frame, from exact integer sums."""
    n = sample_rate * FRAME_MS // 1000
    samples = np.frombuffer(pcm, dtype="<i2")
    count = len(samples) // n
    frames = samples[: count * n].astype(np.int64).reshape(count, n)
    sums = frames.sum(axis=1).tolist()
    squares = (frames * frames).sum(axis=1).tolist()
    negative = frames < 0
    crossings = (negative[:, 1:] != negative[:, :-1]).sum(axis=1).tolist()
    out = []
    for total, square, cross in zip(sums, squares, crossings, strict=True):
        # The same float operations, in the same order, as the page's frameFeatures.
        mean_square = float(square * n - total * total) / float(n * n) / float(32768 * 32768)
        out.append((10.0 * math.log10(mean_square + _POWER_EPS), int(cross)))
    return out


class ChunkPolicy:
    def __init__(
        self, sample_rate: int = 16000, turn_detection: Mapping[str, Any] | None = _SERVER_VAD
    ) -> None:
        self.sample_rate = sample_rate
        self.max_quiet_ms = max_append_ms(sample_rate)
        self.floor_db = _FLOOR_INITIAL_DB
        self.floor_frames = 0
        self.configure(turn_detection)
        self.quiet_ms = math.inf
        self.active_frames = 0
        self.clear_ms = 0
        self.since_clear_ms = math.inf
        self.clear_run = 0
        self.held_ms = 0
        self.held_kind: str | None = None

    def configure(self, turn_detection: Mapping[str, Any] | None) -> None:
        self.vad = turn_detection is not None
        td = turn_detection or {}
        silence = td.get("silence_duration_ms")
        min_speech = td.get("min_speech_ms")
        self.silence_ms = float(1200 if silence is None else silence)
        self.min_speech_frames = math.ceil(
            float(160 if min_speech is None else min_speech) / FRAME_MS
        )

    def reset(self) -> None:
        self.held_ms = 0
        self.held_kind = None

    def _follow_floor(self, level_db: float) -> None:
        """A quiet frame moves the noise floor toward its level (fast down, slow up)."""
        rate = _FLOOR_DOWN if level_db < self.floor_db else _FLOOR_UP
        if self.floor_frames < _FLOOR_WARMUP:
            self.floor_frames += 1
            rate = max(rate, 1 / (self.floor_frames + _FLOOR_PRIOR_FRAMES))
        self.floor_db += rate * (level_db - self.floor_db)
        self.floor_db = min(_FLOOR_MAX_DB, max(_FLOOR_MIN_DB, self.floor_db))

    def _kind(self, plain_speech: bool, maybe: int) -> str | None:
        """What a block may be held as: "speech", "quiet", or None (send it now)."""
        if not self.vad:
            return "quiet"
        if plain_speech:
            return "speech"
        if maybe:
            return None
        closed = (
            self.quiet_ms >= self.silence_ms + CLOSING_MARGIN_MS
            or self.active_frames < self.min_speech_frames
        )
        middle = (
            self.quiet_ms >= EARLY_FINE_MS
            and self.since_clear_ms <= self.silence_ms - CROSSING_GUARD_MS
        )
        return "quiet" if closed or middle else None

    def push(self, pcm: bytes) -> bool:
        """True: send this block now with every block held before it; False: hold it."""
        block_ms = math.floor(len(pcm) // 2 * 1000 / self.sample_rate + 0.5)
        maybe = clear = trailing_quiet = 0
        since_clear: int | None = None
        frames = frame_features(pcm, self.sample_rate)
        max_crossings = CLEAR_MAX_CROSSINGS_PER_S * FRAME_MS / 1000
        for level_db, crossings in frames:
            snr = level_db - self.floor_db
            if since_clear is not None:
                since_clear += 1
            plain = snr >= CLEAR_DB and crossings <= max_crossings
            self.clear_run = self.clear_run + 1 if plain else 0
            if self.clear_run >= CLEAR_RUN_FRAMES:
                since_clear = 0
            if snr >= MAYBE_DB:
                maybe += 1
                trailing_quiet = 0
                if plain:
                    clear += 1
            else:
                trailing_quiet += 1
                self._follow_floor(level_db)
        tail_ms = block_ms - len(frames) * FRAME_MS
        if since_clear is None:
            self.since_clear_ms += block_ms
        else:
            self.since_clear_ms = since_clear * FRAME_MS + tail_ms
        onset_done = self.clear_ms >= ONSET_FINE_MS
        all_clear = bool(frames) and clear == len(frames)
        self.clear_ms = self.clear_ms + block_ms if all_clear else 0
        if maybe > 0:
            self.quiet_ms = trailing_quiet * FRAME_MS + tail_ms
            self.active_frames += maybe
        else:
            self.quiet_ms += block_ms
        kind = self._kind(all_clear and onset_done, maybe)
        if self.quiet_ms >= self.silence_ms + CLOSING_MARGIN_MS:
            self.active_frames = 0
        limit = SPEECH_HOLD_MS if kind == "speech" else self.max_quiet_ms
        if kind is None or (self.held_kind is not None and self.held_kind != kind):
            self.reset()
            return True
        self.held_kind = kind
        self.held_ms += block_ms
        if self.held_ms >= limit:
            self.reset()
            return True
        return False


class PageSender:
    """Gathers the blocks the page would hold; ``push`` returns the append to send now, or
    ``None``. ``flush`` returns what is held (the page sends it before any other event)."""

    def __init__(self, sample_rate: int, turn_detection: Mapping[str, Any] | None) -> None:
        self.policy = ChunkPolicy(sample_rate, turn_detection)
        self.held: list[bytes] = []

    def push(self, pcm: bytes) -> bytes | None:
        self.held.append(pcm)
        if not self.policy.push(pcm):
            return None
        return self.flush()

    def flush(self) -> bytes | None:
        if not self.held:
            return None
        out, self.held = b"".join(self.held), []
        self.policy.reset()
        return out
