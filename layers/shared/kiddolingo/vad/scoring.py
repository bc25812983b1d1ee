"""How a 20 ms frame is scored: its speech probability, and the noise floor it updates.

The signal work is vectorised over the frames of a chunk (:func:`frame_features`); the
per-frame recursion (:func:`_probabilities`) runs in scalar Python floats, so a frame's result
depends on nothing but the frames before it, however the audio was chunked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from .config import VadConfig
from .limits import FRAME_MS
from .state import VadState

# --- the probability model (see the package docstring) -------------------------------------
_SNR_MID_DB = 6.0  # P(loud) = 0.5 at 6 dB over the floor …
_SNR_SLOPE = 0.5  # … 0.05 at 0 dB, 0.18 at 3 dB, 0.88 at 10 dB
_VOICING_MID = 0.5  # P(voiced) = 0.5 at a normalised autocorrelation peak of 0.5 …
_VOICING_SLOPE = 14.0  # … 0.10 for noise (peak <= 0.35), 0.97 for vowels (>= 0.75)
_PITCH_MIN_HZ = 80.0
_PITCH_MAX_HZ = 500.0
_BAND_HZ = (100.0, 4000.0)
_SMOOTH_RELEASE = 0.5  # hangover: the smoothed probability halves its distance per frame

# --- the noise floor, in dBFS, per 20 ms frame ---------------------------------------------
_FLOOR_MIN_DB = -70.0  # below this nothing is "louder than the room": digital silence is not 0 dB
_FLOOR_MAX_DB = -10.0
_FLOOR_DOWN = 0.3  # fast down: ~60 ms time constant
_FLOOR_UP = 0.02  # slow up: ~1 s time constant
_FLOOR_WARMUP = 50  # the first non-speech frames of a session are averaged (rate 1/n) …
_FLOOR_PRIOR_FRAMES = 3  # … the initial floor weighing as 3 frames: one odd frame can't jump it
_POWER_EPS = 1e-12  # -120 dBFS


@dataclass(frozen=True)
class _Analysis:
    frame: int
    window: int
    nfft: int
    min_lag: int
    max_lag: int
    weight: np.ndarray
    unbias: np.ndarray


@lru_cache(maxsize=8)
def _analysis(sample_rate: int) -> _Analysis:
    frame = sample_rate * FRAME_MS // 1000
    window = 2 * frame
    min_lag = math.ceil(sample_rate / _PITCH_MAX_HZ)
    max_lag = math.floor(sample_rate / _PITCH_MIN_HZ)
    nfft = 1 << math.ceil(math.log2(window + max_lag))  # no circular wrap up to max_lag
    freqs = np.arange(nfft // 2 + 1) * (sample_rate / nfft)
    low, high = _BAND_HZ
    weight = np.where((freqs >= low) & (freqs <= high), freqs / 1000.0, 0.0)
    lags = np.arange(min_lag, max_lag + 1)
    unbias = window / (window - lags)  # the rectangular window's own autocorrelation
    for array in (weight, unbias):
        array.setflags(write=False)
    return _Analysis(frame, window, nfft, min_lag, max_lag, weight, unbias)


def frame_features(
    frames: np.ndarray, context: np.ndarray, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame mean-square power (full scale = 1) and voicing in [0, 1], vectorised.

    ``frames`` is ``(n, frame_samples)`` int16; ``context`` is the frame that precedes the first
    one (zeros at the start of a session). Each row is computed independently of the others, so
    the result does not depend on how frames are batched.
    """
    spec = _analysis(sample_rate)
    x = np.asarray(frames, dtype=np.float64).reshape(-1, spec.frame) * (1.0 / 32768.0)
    n = x.shape[0]
    if n == 0:
        return np.zeros(0), np.zeros(0)
    centred = x - x.mean(axis=1, keepdims=True)
    power = (centred * centred).mean(axis=1)

    previous = np.empty_like(x)
    previous[0] = np.asarray(context, dtype=np.float64).reshape(spec.frame) * (1.0 / 32768.0)
    previous[1:] = x[:-1]
    window = np.concatenate((previous, x), axis=1)
    window -= window.mean(axis=1, keepdims=True)
    transform = np.fft.rfft(window, spec.nfft, axis=1)
    weighted = (transform.real * transform.real + transform.imag * transform.imag) * spec.weight
    autocorr = np.fft.irfft(weighted, spec.nfft, axis=1)
    energy = autocorr[:, 0]
    peak = (autocorr[:, spec.min_lag : spec.max_lag + 1] * spec.unbias).max(axis=1)
    safe = np.where(energy > 1e-15, energy, 1.0)
    voicing = np.where(energy > 1e-15, np.clip(peak / safe, 0.0, 1.0), 0.0)
    return power, voicing


def _logistic(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))


class Scores(NamedTuple):
    """The speech probability of each frame, and the floor and smoothing after the last one."""

    probabilities: list[float]
    floor_db: float
    floor_frames: int
    smooth: float


def _probabilities(
    power: np.ndarray,
    voicing: np.ndarray,
    floor_db: float,
    floor_frames: int,
    smooth: float,
    gate: float,
) -> Scores:
    """The per-frame recursion: probability, hangover smoothing, noise-floor update.

    The floor moves only on frames whose smoothed probability is under ``gate`` (the threshold):
    down fast, up slowly, except during the first ``_FLOOR_WARMUP`` such frames of a session,
    where it is their running average (the initial -60 dBFS weighing as a few frames), so a room
    that is noisy from the start is learnt in about a second. Scalar Python floats on purpose:
    a frame's result then depends on nothing but the frames before it, whatever the chunking.
    """
    probabilities: list[float] = []
    for frame_power, frame_voicing in zip(power.tolist(), voicing.tolist(), strict=True):
        level_db = 10.0 * math.log10(frame_power + _POWER_EPS)
        loud = _logistic(_SNR_SLOPE * (level_db - floor_db - _SNR_MID_DB))
        voiced = _logistic(_VOICING_SLOPE * (frame_voicing - _VOICING_MID))
        probability = loud * voiced
        probabilities.append(probability)
        if probability >= smooth:
            smooth = probability
        else:
            smooth += _SMOOTH_RELEASE * (probability - smooth)
        if smooth < gate:
            rate = _FLOOR_DOWN if level_db < floor_db else _FLOOR_UP
            if floor_frames < _FLOOR_WARMUP:
                floor_frames += 1
                rate = max(rate, 1.0 / (floor_frames + _FLOOR_PRIOR_FRAMES))
            floor_db += rate * (level_db - floor_db)
            floor_db = min(_FLOOR_MAX_DB, max(_FLOOR_MIN_DB, floor_db))
    return Scores(probabilities, floor_db, floor_frames, smooth)


def _context(ring: bytes, frame_bytes: int) -> np.ndarray:
    tail = ring[-frame_bytes:]
    if len(tail) < frame_bytes:
        tail = bytes(frame_bytes - len(tail)) + tail
    return np.frombuffer(tail, dtype="<i2")


def score(frames: np.ndarray, state: VadState, config: VadConfig) -> Scores:
    """Score ``frames``, which directly follow what ``state`` has consumed: its ring supplies
    the preceding frame, and its noise floor and smoothing carry on."""
    power, voicing = frame_features(
        frames, _context(state.ring, config.frame_bytes), config.sample_rate
    )
    return _probabilities(
        power, voicing, state.floor_db, state.floor_frames, state.smooth, config.threshold
    )


def score_frames(frames: np.ndarray, state: VadState, config: VadConfig) -> np.ndarray:
    """Speech probability in [0, 1] of each frame, continuing from ``state``; pure.

    ``frames`` is ``(n, frame_samples)`` int16 audio that directly follows what ``state`` has
    consumed (its ring supplies the preceding frame; its noise floor and smoothing carry on).
    """
    return np.asarray(score(frames, state, config).probabilities, dtype=np.float64)
