"""The child's speech input: a phrase spoken by espeak-ng (or a synthetic voiced signal without
it) over room noise, cut into the 100 ms chunks a microphone sends."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from . import config
from .config import NOISE_RMS


def noise(n_samples: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(0.0, NOISE_RMS, n_samples)


def to_pcm(samples: np.ndarray) -> bytes:
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        data = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError("espeak-ng wrote a WAV that is not 16-bit")
    samples = np.frombuffer(data, dtype="<i2").astype(np.float64)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    if rate != config.RATE:
        n_out = round(len(samples) * config.RATE / rate)
        samples = np.interp(np.arange(n_out) * rate / config.RATE, np.arange(len(samples)), samples)
    return samples


def _espeak(text: str) -> np.ndarray | None:
    exe = shutil.which("espeak-ng")
    if exe is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        done = subprocess.run(
            [exe, "-v", "en+f3", "-p", "70", "-s", "140", "-w", str(path), text],
            capture_output=True,
            check=False,
        )
        if done.returncode != 0 or not path.exists():
            return None
        return _read_wav(path)


def _synthetic_voice(text: str) -> np.ndarray:
    """A child-like voiced signal: ~260 Hz harmonics, four syllables a second."""
    seconds = max(1.0, 0.07 * len(text))
    t = np.arange(int(seconds * config.RATE)) / config.RATE
    f0 = 260.0 + 25.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / config.RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    syllables = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t - np.pi / 2)
    return 6000.0 * voice * syllables


def speech_chunks(text: str, rng: np.random.Generator) -> tuple[list[bytes], bytes, str]:
    """The phrase as 100 ms chunks whose last chunk ends with the last speech sample.

    Returns the chunks (speech plus room noise, padded at the front to whole chunks), the
    utterance audio (for the sequential baseline) and where the speech came from.
    """
    voice = _espeak(text)
    source = "espeak-ng"
    if voice is None:
        voice, source = _synthetic_voice(text), "synthetic"
    loud = np.flatnonzero(np.abs(voice) > 300.0)  # trim espeak's own leading/trailing silence
    if len(loud):
        voice = voice[loud[0] : loud[-1] + 1]
    pad = (-len(voice)) % config.CHUNK_SAMPLES
    signal = np.concatenate([np.zeros(pad), voice])
    pcm = to_pcm(signal + noise(len(signal), rng))
    chunks = [pcm[i : i + config.CHUNK_BYTES] for i in range(0, len(pcm), config.CHUNK_BYTES)]
    return chunks, pcm, source
