"""Real speech audio for tests: espeak-ng speaks, sox converts to PCM16 mono."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest


def require_speech_tools() -> None:
    missing = [t for t in ("espeak-ng", "sox") if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {' and '.join(missing)} (Debian packages; `make test` installs them)")


@lru_cache(maxsize=32)
def speak(
    text: str,
    *,
    rate: int = 24000,
    voice: str = "en+f3",
    pitch: int = 70,
    speed: int = 140,
    pad_s: float = 0.0,
) -> bytes:
    """``text`` spoken by espeak-ng as raw PCM16 LE mono at ``rate``."""
    require_speech_tools()
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        raw = Path(tmp) / "s.raw"
        subprocess.run(
            ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(wav), text],
            check=True,
            capture_output=True,
        )
        cmd = [
            "sox",
            str(wav),
            "-r",
            str(rate),
            "-c",
            "1",
            "-b",
            "16",
            "-e",
            "signed-integer",
            "-t",
            "raw",
            str(raw),
        ]
        if pad_s:
            cmd += ["pad", "0", str(pad_s)]
        subprocess.run(cmd, check=True, capture_output=True)
        return raw.read_bytes()


def chunks(pcm: bytes, rate: int = 24000, ms: int = 100) -> list[bytes]:
    step = rate * 2 * ms // 1000
    return [pcm[i : i + step] for i in range(0, len(pcm), step)]
