"""kiddolingo.audio: WAV wrapping, resampling, durations and levels."""

from __future__ import annotations

import io
import struct
import wave

import numpy as np
import pytest

from kiddolingo.audio import (
    SILENCE_DBFS,
    WavFormatError,
    bytes_to_ms,
    ms_to_bytes,
    pcm16_to_wav,
    pcm_duration_ms,
    resample_pcm16,
    rms_dbfs,
    wav_to_pcm16,
)


def sine(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return amplitude * 32767 * np.sin(2 * np.pi * freq * t)


def to_pcm(samples: np.ndarray) -> bytes:
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


def from_pcm(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.argmax(spectrum) * rate / samples.size)


# --- WAV --------------------------------------------------------------------------------------


def test_wav_round_trip_and_stdlib_reads_it() -> None:
    pcm = to_pcm(sine(440, 16000, 0.25))
    wav = pcm16_to_wav(pcm, 16000)
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE" and len(wav) == 44 + len(pcm)
    with wave.open(io.BytesIO(wav)) as reader:
        assert reader.getnchannels() == 1
        assert reader.getsampwidth() == 2
        assert reader.getframerate() == 16000
        assert reader.readframes(reader.getnframes()) == pcm
    assert wav_to_pcm16(wav) == (pcm, 16000)


def test_empty_pcm_makes_a_valid_empty_wav() -> None:
    assert wav_to_pcm16(pcm16_to_wav(b"", 24000)) == (b"", 24000)


def test_odd_byte_count_is_rejected() -> None:
    with pytest.raises(ValueError):
        pcm16_to_wav(b"\x00\x01\x02", 16000)
    with pytest.raises(ValueError):
        resample_pcm16(b"\x00", 16000, 24000)


def test_stereo_wav_is_downmixed() -> None:
    left = np.full(100, 1000, dtype="<i2")
    right = np.full(100, 3000, dtype="<i2")
    frames = np.stack([left, right], axis=1).tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(2)
        writer.setsampwidth(2)
        writer.setframerate(22050)
        writer.writeframes(frames)
    pcm, rate = wav_to_pcm16(buffer.getvalue())
    assert rate == 22050
    assert np.all(np.frombuffer(pcm, dtype="<i2") == 2000)


def test_streaming_header_with_unknown_length_and_extra_chunks() -> None:
    """espeak-ng/sox write 0xFFFFFFFF sizes when streaming; tools add LIST chunks."""
    pcm = to_pcm(sine(300, 22050, 0.1))
    fmt = struct.pack("<HHIIHH", 1, 1, 22050, 44100, 2, 16)
    data = (
        b"RIFF"
        + struct.pack("<I", 0xFFFFFFFF)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", 16)
        + fmt
        + b"LIST"
        + struct.pack("<I", 5)
        + b"INFOx\x00"  # odd size, padded
        + b"data"
        + struct.pack("<I", 0xFFFFFFFF)
        + pcm
    )
    assert wav_to_pcm16(data) == (pcm, 22050)


def test_extensible_format_header() -> None:
    pcm = to_pcm(sine(500, 16000, 0.05))
    fmt = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 16000, 32000, 2, 16, 22, 16, 4)
    fmt += struct.pack("<H", 1) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data"
    body += struct.pack("<I", len(pcm)) + pcm
    data = b"RIFF" + struct.pack("<I", len(body)) + body
    assert wav_to_pcm16(data) == (pcm, 16000)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not a wav file at all",
        b"RIFF\x00\x00\x00\x00WAVE",
        b"\x1aE\xdf\xa3" + b"\x00" * 40,  # webm/matroska magic
    ],
)
def test_non_wav_is_rejected(data: bytes) -> None:
    with pytest.raises(WavFormatError):
        wav_to_pcm16(data)


def test_8_bit_wav_is_rejected() -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(1)
        writer.setframerate(8000)
        writer.writeframes(b"\x80" * 100)
    with pytest.raises(WavFormatError):
        wav_to_pcm16(buffer.getvalue())


# --- resampling -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "dst", "n_in", "n_out"),
    [
        (16000, 24000, 1600, 2400),
        (24000, 16000, 2400, 1600),
        (16000, 24000, 320, 480),
        (24000, 16000, 480, 320),
        (16000, 24000, 16000, 24000),
        (44100, 16000, 44100, 16000),
        (48000, 16000, 4800, 1600),
        (8000, 24000, 80, 240),
        (24000, 16000, 3, 2),
    ],
)
def test_resampled_length_is_exact(src: int, dst: int, n_in: int, n_out: int) -> None:
    out = resample_pcm16(b"\x01\x00" * n_in, src, dst)
    assert len(out) == 2 * n_out


def test_same_rate_is_identity() -> None:
    pcm = to_pcm(sine(440, 16000, 0.1))
    assert resample_pcm16(pcm, 16000, 16000) == pcm
    assert resample_pcm16(b"", 16000, 24000) == b""


@pytest.mark.parametrize(("src", "dst"), [(16000, 24000), (24000, 16000), (44100, 16000)])
@pytest.mark.parametrize("freq", [220.0, 440.0, 1000.0, 3000.0])
def test_a_sine_stays_a_sine(src: int, dst: int, freq: float) -> None:
    out = from_pcm(resample_pcm16(to_pcm(sine(freq, src, 0.5)), src, dst))
    expected = sine(freq, dst, 0.5)[: out.size]
    edge = dst // 50  # the filter treats the outside as silence: skip 20 ms at each end
    error = np.abs(out[edge:-edge] - expected[edge:-edge])
    assert error.max() < 0.002 * 32767  # better than -54 dBFS everywhere
    assert abs(peak_hz(out, dst) - freq) <= dst / out.size + 1


def test_round_trip_16k_24k_16k_is_transparent_for_speech_band() -> None:
    signal = sine(440, 16000, 0.5) + sine(2500, 16000, 0.5, amplitude=0.2)
    pcm = to_pcm(signal)
    back = from_pcm(resample_pcm16(resample_pcm16(pcm, 16000, 24000), 24000, 16000))
    assert back.size == signal.size
    assert np.abs(back - from_pcm(pcm))[400:-400].max() <= 8


def test_downsampling_removes_what_the_new_rate_cannot_hold() -> None:
    """A 10 kHz tone cannot exist at 16 kHz: it must be filtered, not aliased to 6 kHz."""
    out = from_pcm(resample_pcm16(to_pcm(sine(10000, 24000, 0.5)), 24000, 16000))
    rms = max(1e-9, float(np.sqrt(np.mean(out[400:-400] ** 2))))
    level = 20 * np.log10(rms / (0.5 * 32767 / np.sqrt(2)))
    assert level < -50


def test_loud_input_is_clipped_not_wrapped() -> None:
    square = np.where(np.arange(2400) % 40 < 20, 32767, -32768).astype(np.float64)
    out = from_pcm(resample_pcm16(to_pcm(square), 24000, 16000))
    assert out.max() <= 32767 and out.min() >= -32768
    assert np.mean(out[100:-100] > 0) == pytest.approx(0.5, abs=0.05)


# --- durations and levels ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "rate", "expected"),
    [
        (100, 24000, 4800),
        (20, 16000, 640),
        (300, 24000, 14400),
        (1200, 16000, 38400),
        (0, 24000, 0),
        (0.5, 16000, 16),
        (0.03, 24000, 2),  # 0.72 samples rounds to one whole sample
        (-5, 24000, 0),
    ],
)
def test_ms_to_bytes(ms: float, rate: int, expected: int) -> None:
    assert ms_to_bytes(ms, rate) == expected
    assert ms_to_bytes(ms, rate) % 2 == 0


def test_bytes_to_ms_and_duration() -> None:
    assert bytes_to_ms(4800, 24000) == 100.0
    assert bytes_to_ms(640, 16000) == 20.0
    assert bytes_to_ms(3, 16000) == bytes_to_ms(2, 16000)  # a dangling byte is no sample
    assert pcm_duration_ms(b"\x00" * 48000, 24000) == 1000.0
    for ms in (10, 20, 40, 100, 1000):
        assert bytes_to_ms(ms_to_bytes(ms, 24000), 24000) == ms


def test_rms_dbfs() -> None:
    assert rms_dbfs(b"") == SILENCE_DBFS
    assert rms_dbfs(b"\x00\x00" * 100) == SILENCE_DBFS
    square = np.where(np.arange(1000) % 2, 32767, -32768).astype(np.float64)
    assert rms_dbfs(to_pcm(square)) == pytest.approx(0.0, abs=0.01)
    assert rms_dbfs(to_pcm(sine(440, 16000, 1.0, amplitude=1.0))) == pytest.approx(-3.01, abs=0.05)
    # A soft child's voice around -35 dBFS is measured as such.
    amplitude = 10 ** (-35 / 20) * np.sqrt(2)
    assert rms_dbfs(to_pcm(sine(300, 16000, 1.0, amplitude=amplitude))) == pytest.approx(
        -35.0, abs=0.1
    )
