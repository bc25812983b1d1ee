"""A small corpus of real (synthetic) speech for the VAD: espeak-ng voices shaped with sox.

Each case is a 24 kHz mono PCM16 WAV file (and its 16 kHz twin for WebRTC VAD) with the true
speech regions known from the way it was built: speech is trimmed of espeak's own silence and
then padded, so onsets and offsets are exact to the sample. Files are built once into a
directory (a pytest ``tmp_path_factory`` directory per session) and reused if already there.

The cases follow issue 4: a high child-like pitch, slow speech, soft speech at -35 dBFS, pauses of
0.6-0.9 s inside a sentence, Spanish, speech in pink noise at 15 dB SNR, steady noise alone, a
cough-like burst and silence.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RATE = 24000
WEBRTC_RATE = 16000
SPEECH_RMS_DBFS = -20.0
SOFT_RMS_DBFS = -35.0
NOISE_SNR_DB = 15.0

TOOLS = ("espeak-ng", "sox")

#: The cases :meth:`SpeechCorpus.build` returns, in order.
CASE_NAMES = (
    "child_pitch",
    "slow_speech",
    "soft_-35dBFS",
    "inside_pauses",
    "spanish",
    "pink_noise_15dB_SNR",
    "pink_noise_alone",
    "brown_noise_alone",
    "white_noise_alone",
    "cough_bursts",
    "silence",
)


def missing_tools() -> str | None:
    """Why the corpus cannot be built here, or ``None`` when espeak-ng and sox are installed."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install espeak-ng sox)"
    return None


@dataclass(frozen=True)
class CorpusCase:
    name: str
    description: str
    path: Path
    path_16k: Path
    #: True speech regions (onset_ms, offset_ms); empty for cases without speech.
    speech_ms: tuple[tuple[int, int], ...]

    @property
    def expect_turns(self) -> int:
        return 1 if self.speech_ms else 0

    @property
    def pcm(self) -> bytes:
        return read_pcm(self.path, RATE)

    @property
    def pcm_16k(self) -> bytes:
        return read_pcm(self.path_16k, WEBRTC_RATE)

    @property
    def duration_ms(self) -> int:
        return len(self.pcm) // 2 * 1000 // RATE


def read_pcm(path: Path, rate: int) -> bytes:
    with wave.open(str(path), "rb") as wav:
        if (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) != (1, 2, rate):
            raise ValueError(f"{path}: expected mono 16-bit {rate} Hz")
        return wav.readframes(wav.getnframes())


def write_pcm(path: Path, samples: np.ndarray, rate: int = RATE) -> Path:
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return path


def rms_dbfs(path: Path) -> float:
    samples = np.frombuffer(read_pcm(path, RATE), dtype="<i2").astype(np.float64) / 32768.0
    return 10.0 * float(np.log10(np.mean(samples * samples) + 1e-20))


def cough_bursts(seed: int = 4) -> np.ndarray:
    """Three cough-like broadband bursts (20, 60 and 120 ms, peaks near -3 dBFS) in 4 s of silence.

    Each burst is white noise through a crude chest resonance (a one-pole low-pass), with a fast
    attack and an exponential decay: loud, short and aperiodic. All are shorter than the VAD's
    default ``min_speech_ms`` (160 ms).
    """
    rng = np.random.default_rng(seed)
    out = np.zeros(4 * RATE)
    for start_s, length_ms in ((0.8, 20), (1.9, 60), (3.0, 120)):
        n = RATE * length_ms // 1000
        noise = rng.standard_normal(n)
        shaped = np.empty(n)
        acc = 0.0
        for i, value in enumerate(noise):  # one-pole low-pass: a little body below ~2 kHz
            acc = 0.6 * acc + 0.4 * value
            shaped[i] = acc
        envelope = np.minimum(1.0, np.arange(n) / (0.003 * RATE)) * np.exp(
            -np.arange(n) / (0.35 * n)
        )
        burst = shaped * envelope
        burst *= 0.7 / np.max(np.abs(burst))
        begin = int(start_s * RATE)
        out[begin : begin + n] += burst
    return np.clip(out * 32767, -32768, 32767).astype("<i2")


class SpeechCorpus:
    """Builds the cases into ``directory`` with espeak-ng and sox; cached by file name."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    # --- the tools -----------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.wav"

    @staticmethod
    def _run(*command: str | Path) -> None:
        """Run a tool; sox always gets ``-R`` (repeatable: fixed seeds for noise and dither)."""
        subprocess.run([str(part) for part in command], check=True, capture_output=True)

    def say(self, name: str, text: str, voice: str, pitch: int, speed: int) -> Path:
        """espeak-ng speech at 24 kHz mono 16-bit, its own leading/trailing silence trimmed."""
        raw = self.directory / f"{name}.espeak.wav"
        if not raw.exists():
            self._run("espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", raw, text)
        trimmed = self._path(name + ".trim")
        if not trimmed.exists():
            # The 'silence' effect trims the ends; 'reverse' twice trims the tail too.
            self._run(
                "sox", "-R", raw, "-r", str(RATE), "-c", "1", "-b", "16", trimmed,
                "silence", "1", "0.005", "0.2%", "reverse",
                "silence", "1", "0.005", "0.2%", "reverse",
            )  # fmt: skip
        return trimmed

    def at_level(self, name: str, source: Path, target_dbfs: float) -> Path:
        """``source`` with its RMS brought to ``target_dbfs`` (sox ``gain``)."""
        out = self._path(name)
        if not out.exists():
            delta = target_dbfs - rms_dbfs(source)
            partial = out.with_suffix(".part.wav")
            self._run("sox", "-R", source, partial, "gain", f"{delta:.3f}")
            partial.rename(out)
        return out

    def padded(self, name: str, source: Path, before_s: float, after_s: float) -> Path:
        out = self._path(name)
        if not out.exists():
            partial = out.with_suffix(".part.wav")
            self._run("sox", "-R", source, partial, "pad", f"{before_s}", f"{after_s}")
            partial.rename(out)
        return out

    def concatenated(self, name: str, parts: list[Path]) -> Path:
        out = self._path(name)
        if not out.exists():
            partial = out.with_suffix(".part.wav")
            self._run("sox", "-R", *parts, partial)
            partial.rename(out)
        return out

    def pink_noise(self, name: str, seconds: float, target_dbfs: float) -> Path:
        raw = self._path(name + ".raw")
        if not raw.exists():
            partial = raw.with_suffix(".part.wav")
            self._run(
                "sox", "-R", "-n", "-r", str(RATE), "-c", "1", "-b", "16", partial,
                "synth", f"{seconds}", "pinknoise",
            )  # fmt: skip
            partial.rename(raw)
        return self.at_level(name, raw, target_dbfs)

    def noise(self, name: str, kind: str, seconds: float, target_dbfs: float) -> Path:
        raw = self._path(name + ".raw")
        if not raw.exists():
            partial = raw.with_suffix(".part.wav")
            self._run(
                "sox", "-R", "-n", "-r", str(RATE), "-c", "1", "-b", "16", partial,
                "synth", f"{seconds}", kind,
            )  # fmt: skip
            partial.rename(raw)
        return self.at_level(name, raw, target_dbfs)

    def mixed(self, name: str, first: Path, second: Path) -> Path:
        """``sox -m -v 1 a -v 1 b``: a plain sum (without ``-v`` sox scales each input by 1/n)."""
        out = self._path(name)
        if not out.exists():
            partial = out.with_suffix(".part.wav")
            self._run("sox", "-R", "-m", "-v", "1", first, "-v", "1", second, partial)
            partial.rename(out)
        return out

    def resampled_16k(self, source: Path) -> Path:
        out = source.with_name(source.stem + ".16k.wav")
        if not out.exists():
            partial = out.with_suffix(".part.wav")
            self._run("sox", "-R", source, "-r", str(WEBRTC_RATE), partial)
            partial.rename(out)
        return out

    @staticmethod
    def duration_ms(path: Path) -> int:
        with wave.open(str(path), "rb") as wav:
            return wav.getnframes() * 1000 // wav.getframerate()

    # --- the cases -----------------------------------------------------------------------
    def sentence(
        self,
        name: str,
        text: str,
        *,
        voice: str = "en+f3",
        pitch: int = 90,
        speed: int = 130,
        level_dbfs: float = SPEECH_RMS_DBFS,
        before_s: float = 0.6,
        after_s: float = 2.0,
    ) -> tuple[Path, tuple[tuple[int, int], ...]]:
        speech = self.at_level(
            f"{name}.level", self.say(name, text, voice, pitch, speed), level_dbfs
        )
        onset = round(before_s * 1000)
        region = ((onset, onset + self.duration_ms(speech)),)
        return self.padded(name, speech, before_s, after_s), region

    def _case(
        self, name: str, description: str, path: Path, speech: tuple[tuple[int, int], ...]
    ) -> CorpusCase:
        return CorpusCase(name, description, path, self.resampled_16k(path), speech)

    def build(self) -> list[CorpusCase]:
        cases: list[CorpusCase] = []

        path, speech = self.sentence(
            "child_pitch", "Hello! My name is Lily, and I like to play with my little dog."
        )
        cases.append(self._case("child_pitch", "en+f3, pitch 90, 130 wpm, -20 dBFS", path, speech))

        path, speech = self.sentence(
            "slow_speech",
            "Can you help me count? One, two, three, four, five apples.",
            pitch=75,
            speed=110,
        )
        cases.append(self._case("slow_speech", "en+f3, pitch 75, 110 wpm", path, speech))

        # Soft speech over a quiet room tone 30 dB below it.
        path, speech = self.sentence(
            "soft_speech",
            "I think the answer is a big yellow banana.",
            pitch=85,
            speed=120,
            level_dbfs=SOFT_RMS_DBFS,
        )
        room = self.pink_noise("room_tone", self.duration_ms(path) / 1000, SOFT_RMS_DBFS - 30.0)
        cases.append(
            self._case(
                "soft_-35dBFS",
                "pitch 85, RMS -35 dBFS, pink room tone at -65 dBFS",
                self.mixed("soft_speech.room", path, room),
                speech,
            )
        )

        # One sentence, said in four pieces with 0.6-0.9 s pauses inside.
        phrases = ("I can see a cat,", "and a big red ball,", "and a tree,", "in my garden.")
        pauses = (0.6, 0.8, 0.9)
        pieces: list[Path] = []
        regions: list[tuple[int, int]] = []
        cursor = 600
        for index, phrase in enumerate(phrases):
            spoken = self.at_level(
                f"pause_{index}.level",
                self.say(f"pause_{index}", phrase, "en+f3", 88, 120),
                SPEECH_RMS_DBFS,
            )
            before = 0.6 if index == 0 else 0.0
            after = pauses[index] if index < len(pauses) else 2.0
            pieces.append(self.padded(f"pause_{index}", spoken, before, after))
            length = self.duration_ms(spoken)
            regions.append((cursor, cursor + length))
            cursor += length + round(after * 1000)
        path = self.concatenated("inside_pauses", pieces)
        cases.append(
            self._case(
                "inside_pauses",
                "4 phrases, pauses 0.6 / 0.8 / 0.9 s",
                path,
                tuple(regions),
            )
        )

        path, speech = self.sentence(
            "spanish",
            "Hola, me llamo Pablo. Me gusta jugar al fútbol con mis amigos.",
            voice="es+f3",
            pitch=85,
            speed=120,
        )
        cases.append(self._case("spanish", "es+f3, pitch 85, 120 wpm", path, speech))

        # Speech in steady pink noise at 15 dB SNR, with 1.5 s of noise before it.
        path, speech = self.sentence(
            "noisy_speech",
            "Look, a rabbit is eating a carrot in the garden.",
            pitch=90,
            speed=125,
            before_s=1.5,
        )
        noise = self.pink_noise(
            "pink_15db", self.duration_ms(path) / 1000, SPEECH_RMS_DBFS - NOISE_SNR_DB
        )
        cases.append(
            self._case(
                "pink_noise_15dB_SNR",
                "speech -20 dBFS + pink noise -35 dBFS",
                self.mixed("noisy_speech.mix", path, noise),
                speech,
            )
        )

        cases.append(
            self._case(
                "pink_noise_alone",
                "6 s pink noise, -30 dBFS",
                self.pink_noise("pink_alone", 6.0, -30.0),
                (),
            )
        )
        cases.append(
            self._case(
                "brown_noise_alone",
                "6 s brown noise (rumble), -30 dBFS",
                self.noise("brown_alone", "brownnoise", 6.0, -30.0),
                (),
            )
        )
        cases.append(
            self._case(
                "white_noise_alone",
                "6 s white noise (hiss), -40 dBFS",
                self.noise("white_alone", "whitenoise", 6.0, -40.0),
                (),
            )
        )

        coughs = self._path("coughs")
        if not coughs.exists():
            write_pcm(coughs, cough_bursts())
        cases.append(self._case("cough_bursts", "20/60/120 ms broadband bursts", coughs, ()))

        silence = self._path("silence")
        if not silence.exists():
            write_pcm(silence, np.zeros(4 * RATE, dtype="<i2"))
        cases.append(self._case("silence", "4 s digital silence", silence, ()))
        assert tuple(case.name for case in cases) == CASE_NAMES
        return cases
