"""PCM16 helpers: WAV wrapping, resampling, durations and levels.

Everything here works on raw PCM16 little-endian mono bytes, the format of the wire contract
(``kiddolingo.protocol``). This module is imported on the audio-chunk path, so it stays light:
stdlib at import time, numpy only inside the functions that do arithmetic on samples.
"""

from __future__ import annotations

import math
import struct
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "SAMPLE_WIDTH",
    "SILENCE_DBFS",
    "WavFormatError",
    "bytes_to_ms",
    "ms_to_bytes",
    "pcm16_to_wav",
    "pcm_duration_ms",
    "resample_pcm16",
    "rms_dbfs",
    "wav_to_pcm16",
]

SAMPLE_WIDTH = 2
#: What :func:`rms_dbfs` returns for digital silence (instead of ``-inf``).
SILENCE_DBFS = -120.0

_WAVE_FORMAT_PCM = 0x0001
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE


class WavFormatError(ValueError):
    """The bytes are not a WAV file this module can read (PCM 16-bit)."""


def _check_pcm(pcm: bytes) -> None:
    if len(pcm) % SAMPLE_WIDTH:
        raise ValueError(f"PCM16 needs an even number of bytes, got {len(pcm)}")


def pcm16_to_wav(pcm: bytes, sample_rate: int) -> bytes:
    """Wrap PCM16 LE mono in a 44-byte RIFF/WAVE header."""
    _check_pcm(pcm)
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate}")
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        _WAVE_FORMAT_PCM,
        1,
        sample_rate,
        sample_rate * SAMPLE_WIDTH,
        SAMPLE_WIDTH,
        16,
        b"data",
        len(pcm),
    )
    return header + bytes(pcm)


def wav_to_pcm16(data: bytes) -> tuple[bytes, int]:
    """Read a 16-bit PCM WAV (any channel count) and return ``(mono PCM16 LE, sample_rate)``.

    Walks the RIFF chunks itself rather than using :mod:`wave`, so it also reads
    WAVE_FORMAT_EXTENSIBLE headers and the "unknown length" headers that streaming tools
    (``espeak-ng --stdout``, ``sox -t wav -``) write. Several channels are averaged to mono.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavFormatError("not a RIFF/WAVE file")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body_start = pos + 8
        if chunk_id == b"fmt ":
            if size < 16 or body_start + 16 > len(data):
                raise WavFormatError("truncated fmt chunk")
            tag, channels, rate, _byte_rate, _align, bits = struct.unpack_from(
                "<HHIIHH", data, body_start
            )
            if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40:
                (tag,) = struct.unpack_from("<H", data, body_start + 24)
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise WavFormatError("data chunk before fmt chunk")
            tag, channels, rate, bits = fmt
            if tag != _WAVE_FORMAT_PCM or bits != 16:
                raise WavFormatError(f"only 16-bit PCM is supported (format {tag}, {bits} bits)")
            if channels < 1 or rate <= 0:
                raise WavFormatError(f"bad header: {channels} channels at {rate} Hz")
            frame = channels * SAMPLE_WIDTH
            end = min(len(data), body_start + size)
            body = data[body_start:end]
            body = body[: len(body) - len(body) % frame]
            if channels > 1:
                body = _downmix(body, channels)
            return bytes(body), rate
        pos = body_start + size + (size & 1)
    raise WavFormatError("no data chunk" if fmt else "no fmt chunk")


def _downmix(pcm: bytes, channels: int) -> bytes:
    import numpy as np

    frames = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels).astype(np.int32)
    return frames.mean(axis=1).round().astype("<i2").tobytes()


def ms_to_bytes(ms: float, rate: int) -> int:
    """Bytes of PCM16 mono for ``ms`` milliseconds, rounded to whole samples (always even)."""
    samples = round(ms * rate / 1000.0)
    return max(0, int(samples)) * SAMPLE_WIDTH


def bytes_to_ms(n: int, rate: int) -> float:
    """Milliseconds of audio in ``n`` bytes of PCM16 mono."""
    return (n // SAMPLE_WIDTH) * 1000.0 / rate


def pcm_duration_ms(pcm: bytes, rate: int) -> float:
    """Duration of a PCM16 mono buffer in milliseconds."""
    return bytes_to_ms(len(pcm), rate)


def rms_dbfs(pcm: bytes) -> float:
    """RMS level relative to full scale (32768): a full-scale square wave is 0 dBFS, a
    full-scale sine about -3 dBFS. Empty or silent input gives :data:`SILENCE_DBFS`."""
    if len(pcm) < SAMPLE_WIDTH:
        return SILENCE_DBFS
    import numpy as np

    samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // SAMPLE_WIDTH)
    mean_square = float(np.dot(samples.astype(np.float64), samples)) / samples.size
    if mean_square <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(mean_square / (32768.0 * 32768.0)))


# --- resampling -------------------------------------------------------------------------------

#: Zero crossings of the windowed-sinc kernel on each side; 16 gives ~80 dB stop-band.
_HALF_ZEROS = 16
_KAISER_BETA = 8.6
#: Pass band as a fraction of the lower Nyquist frequency.
_ROLLOFF = 0.92
#: Output samples computed per numpy block (bounds the gather matrix to a few MB).
_BLOCK = 16384


@lru_cache(maxsize=16)
def _polyphase_kernel(up: int, down: int) -> tuple[NDArray[np.float64], int]:
    """A Kaiser-windowed sinc low-pass for rational resampling by ``up/down``, laid out as a
    ``(up, taps_per_phase)`` matrix, plus the filter delay in upsampled samples."""
    import numpy as np

    cutoff = 0.5 / max(up, down) * _ROLLOFF  # cycles per upsampled sample
    half = math.ceil(_HALF_ZEROS / (2.0 * cutoff))
    n_taps = 2 * half + 1
    t = np.arange(n_taps, dtype=np.float64) - half
    h = 2.0 * cutoff * np.sinc(2.0 * cutoff * t) * np.kaiser(n_taps, _KAISER_BETA)
    h *= up / h.sum()  # unity gain after zero-stuffing by `up`
    per_phase = math.ceil(n_taps / up)
    padded = np.zeros(per_phase * up, dtype=np.float64)
    padded[:n_taps] = h
    # matrix[p, j] = h[p + j * up]
    return padded.reshape(per_phase, up).T.copy(), half


def resample_pcm16(pcm: bytes, src_rate: int, dst_rate: int) -> bytes:
    """Resample PCM16 mono with a polyphase windowed-sinc filter.

    The output holds ``floor(n * dst_rate / src_rate)`` samples for ``n`` input samples, so
    16 kHz ↔ 24 kHz is exact whenever the input length allows it. The filter has zero phase
    (no delay); the edges are treated as silence, so resampling chunks one by one differs
    slightly from resampling the whole signal near the chunk boundaries.
    """
    _check_pcm(pcm)
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sample rates must be positive, got {src_rate} -> {dst_rate}")
    if src_rate == dst_rate or not pcm:
        return bytes(pcm)
    import numpy as np

    g = math.gcd(src_rate, dst_rate)
    up, down = dst_rate // g, src_rate // g
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    n_in = x.size
    n_out = n_in * up // down
    if n_out == 0:
        return b""
    kernel, delay = _polyphase_kernel(up, down)
    per_phase = kernel.shape[1]
    # Pad so every gathered index is in range: indices run from -per_phase to n_in + delay/up.
    pad_front = per_phase
    pad_back = delay // up + 2
    xp = np.concatenate([np.zeros(pad_front), x, np.zeros(pad_back)])
    taps = np.arange(per_phase)
    out = np.empty(n_out, dtype=np.float64)
    block = max(1, _BLOCK // max(1, per_phase // 16))
    for start in range(0, n_out, block):
        n = np.arange(start, min(n_out, start + block), dtype=np.int64)
        q = n * down + delay
        phase = q % up
        base = q // up
        idx = base[:, None] - taps[None, :] + pad_front
        out[start : start + n.size] = np.einsum("ij,ij->i", kernel[phase], xp[idx])
    return np.clip(np.rint(out), -32768, 32767).astype("<i2").tobytes()
