"""Server VAD for children: a pure, I/O-free segmenter with Realtime ``server_vad`` semantics.

Every ``input_audio_buffer.append`` is its own Lambda invocation, so the segmenter is a pure
function: ``feed(config, state, pcm) -> VadStep`` takes the state loaded from DynamoDB and one
chunk of PCM16 little-endian mono audio, and returns the new state (to store back), the events
(``speech_started`` …) and the bytes to append to the utterance being spoken. Nothing here does
I/O, reads the clock or keeps globals beyond per-sample-rate constants.

How a frame is scored (20 ms frames, :func:`score_frames`)
    Two cues, each squashed by a logistic, multiplied into one speech probability in [0, 1]
    (read it as P(loud enough) x P(voiced)), so ``threshold=0.3`` means what it says:

    * loudness: the frame's RMS in dBFS over an *adaptive noise floor* (SNR in dB). The floor is
      a slow-up / fast-down tracker in dB (a running average over the first second of a
      session), updated only on frames judged non-speech by a lightly smoothed probability
      (instant attack, short release: the hangover), so speech never drags it up while a new
      steady noise is absorbed within a couple of seconds;
    * voicing: the peak of the normalised autocorrelation over pitch lags of 80-500 Hz (children's
      F0 is 200-400 Hz), computed through the FFT over a 40 ms window (the frame and the one
      before it). The power spectrum is band-limited to 100-4000 Hz and tilted by f, which makes
      pink noise white, so steady noise (pink, white, brown), coughs and clicks score low voicing
      however loud they are, while vowels score 0.7-1.

Turn-taking (a Python loop over the few frames of a chunk; all the signal work is vectorised)
    A candidate opens on the first speech frame (probability >= threshold) and survives gaps of up
    to 100 ms; it becomes ``speech_started`` once it holds ``min_speech_ms`` of speech frames, so a
    click or cough shorter than that never starts a turn. ``speech_started.audio_ms`` is the start
    of the candidate's first speech frame. Inside an utterance every frame is kept (pauses
    included); ``speech_stopped`` fires when the silence since the end of the last speech frame
    reaches ``silence_duration_ms`` and reports that end. With ``speculative_fraction``, a
    ``speculate`` event fires once per pause when the silence reaches that fraction of the window,
    and ``speech_resumed`` if the child then goes on.

Determinism
    Frames are cut from one continuous stream (bytes short of a frame wait in ``state.carry``),
    the per-frame recursion runs in scalar Python floats, and the vectorised part works row by row,
    so any chunking of the same audio gives the same events, the same utterance bytes and the same
    final state. The state round-trips exactly through :meth:`VadState.to_item`: one binary
    value (the scalars packed as fixed-width integers and IEEE doubles, then ``carry`` and
    ``ring``), which DynamoDB stores as one attribute instead of a map of eighteen.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from dataclasses import fields as dataclass_fields
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal

import numpy as np

from .vad_limits import (
    DEFAULT_MIN_SPEECH_MS,
    DEFAULT_PREFIX_PADDING_MS,
    DEFAULT_SILENCE_DURATION_MS,
    DEFAULT_THRESHOLD,
    MAX_IDLE_TIMEOUT_MS,
    MAX_MIN_SPEECH_MS,
    MAX_PREFIX_PADDING_MS,
    MAX_SILENCE_DURATION_MS,
)

__all__ = [
    "FRAME_MS",
    "VadConfig",
    "VadEvent",
    "VadEventKind",
    "VadState",
    "VadStep",
    "feed",
    "frame_features",
    "reset_idle",
    "score_frames",
]

FRAME_MS = 20
"""Analysis frame length. Every frame boundary is a whole millisecond on the timeline."""

SAMPLE_RATES = (8000, 16000, 24000)

# --- the probability model (see the module docstring) --------------------------------------
_SNR_MID_DB = 6.0  # P(loud) = 0.5 at 6 dB over the floor …
_SNR_SLOPE = 0.5  # … 0.05 at 0 dB, 0.18 at 3 dB, 0.88 at 10 dB
_VOICING_MID = 0.5  # P(voiced) = 0.5 at a normalised autocorrelation peak of 0.5 …
_VOICING_SLOPE = 14.0  # … 0.10 for noise (peak <= 0.35), 0.97 for vowels (>= 0.75)
_PITCH_MIN_HZ = 80.0
_PITCH_MAX_HZ = 500.0
_BAND_HZ = (100.0, 4000.0)
_SMOOTH_RELEASE = 0.5  # hangover: the smoothed probability halves its distance per frame

# --- the noise floor, in dBFS, per 20 ms frame ---------------------------------------------
_FLOOR_INITIAL_DB = -60.0
_FLOOR_MIN_DB = -70.0  # below this nothing is "louder than the room": digital silence is not 0 dB
_FLOOR_MAX_DB = -10.0
_FLOOR_DOWN = 0.3  # fast down: ~60 ms time constant
_FLOOR_UP = 0.02  # slow up: ~1 s time constant
_FLOOR_WARMUP = 50  # the first non-speech frames of a session are averaged (rate 1/n) …
_FLOOR_PRIOR_FRAMES = 3  # … the initial floor weighing as 3 frames: one odd frame can't jump it
_POWER_EPS = 1e-12  # -120 dBFS

# --- segmentation --------------------------------------------------------------------------
_CANDIDATE_GAP_MS = 100  # a speech candidate survives non-speech gaps up to this long
_CANDIDATE_SPAN_FACTOR = 3  # … and dies once it spans 3 x min_speech (+ one gap) without starting

#: Of every pause inside an utterance (and of the silence that ends it), only the first this
#: many milliseconds become utterance audio: transcription needs no more, and the child's
#: silence is neither stored, uploaded nor billed per second.
DEFAULT_MAX_PAUSE_KEPT_MS = 400

VadEventKind = Literal[
    "speech_started", "speech_stopped", "speculate", "speech_resumed", "idle_timeout"
]


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return number


def _milliseconds(name: str, value: Any, maximum: int, minimum: int = 0) -> int:
    number = _number(name, value)
    if number != int(number):
        raise ValueError(f"{name} must be a whole number of milliseconds, got {value!r}")
    if not minimum <= number <= maximum:
        raise ValueError(f"{name} must be between {minimum} and {maximum} ms, got {value!r}")
    return int(number)


@dataclass(frozen=True)
class VadConfig:
    """Server VAD settings: Realtime ``turn_detection`` names, and the children's defaults and
    the limits of ``kiddolingo.vad_limits``."""

    threshold: float = DEFAULT_THRESHOLD
    prefix_padding_ms: int = DEFAULT_PREFIX_PADDING_MS
    silence_duration_ms: int = DEFAULT_SILENCE_DURATION_MS
    min_speech_ms: int = DEFAULT_MIN_SPEECH_MS
    idle_timeout_ms: int | None = None
    speculative_fraction: float | None = None
    sample_rate: int = 24000
    max_pause_kept_ms: int = DEFAULT_MAX_PAUSE_KEPT_MS

    def __post_init__(self) -> None:
        threshold = _number("threshold", self.threshold)
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {self.threshold!r}")
        object.__setattr__(self, "threshold", threshold)
        for name, maximum in (
            ("prefix_padding_ms", MAX_PREFIX_PADDING_MS),
            ("silence_duration_ms", MAX_SILENCE_DURATION_MS),
            ("min_speech_ms", MAX_MIN_SPEECH_MS),
        ):
            object.__setattr__(self, name, _milliseconds(name, getattr(self, name), maximum))
        if self.idle_timeout_ms is not None:
            idle = _milliseconds("idle_timeout_ms", self.idle_timeout_ms, MAX_IDLE_TIMEOUT_MS, 1)
            object.__setattr__(self, "idle_timeout_ms", idle)
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

        def pick(key: str, default: Any) -> Any:
            value = td.get(key)
            return default if value is None else value

        try:
            return cls(
                threshold=pick("threshold", DEFAULT_THRESHOLD),
                prefix_padding_ms=pick("prefix_padding_ms", DEFAULT_PREFIX_PADDING_MS),
                silence_duration_ms=pick("silence_duration_ms", DEFAULT_SILENCE_DURATION_MS),
                min_speech_ms=pick("min_speech_ms", DEFAULT_MIN_SPEECH_MS),
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


#: A stored :class:`VadState`: the version, the scalars in field order (the sample rate as
#: uint32, the other ints as int64, the floats as IEEE doubles so they round-trip exactly, bools
#: as bytes), the length of ``carry``; then ``carry`` and ``ring`` (the rest).
_PACKED = struct.Struct("<BIqdqd?qqqqqq?q?H")


@dataclass
class VadState:
    """Everything needed to continue a session's VAD in the next invocation.

    ``samples`` is the audio timeline: samples of whole frames consumed since the session began
    (``carry`` holds the bytes short of a frame). ``ring`` holds the last ``prefix_padding_ms``
    plus one frame of that audio, followed by the audio of a speech candidate not yet confirmed
    (``candidate_start`` >= 0, a sample position). Its last frame is the voicing context of the
    next frame.
    """

    sample_rate: int
    samples: int = 0
    floor_db: float = _FLOOR_INITIAL_DB
    floor_frames: int = 0
    smooth: float = 0.0
    in_utterance: bool = False
    candidate_start: int = -1
    candidate_speech_frames: int = 0
    candidate_gap_frames: int = 0
    speech_start_ms: int = -1
    last_speech_end_ms: int = -1
    silence_ms: int = 0
    speculate_fired: bool = False
    idle_ms: int = 0
    idle_fired: bool = False
    carry: bytes = b""
    ring: bytes = b""

    #: 2: one binary value (:meth:`to_item`); 1: a map of one attribute per field, as the
    #: connections of an earlier deployment still hold it (read, never written).
    ITEM_VERSION = 2

    @classmethod
    def initial(cls, config: VadConfig, timeline_ms: int = 0) -> VadState:
        """A fresh state whose timeline starts at ``timeline_ms`` (it goes on across reconnects)."""
        if isinstance(timeline_ms, bool) or not isinstance(timeline_ms, int) or timeline_ms < 0:
            raise ValueError(f"timeline_ms must be a non-negative int, got {timeline_ms!r}")
        return cls(sample_rate=config.sample_rate, samples=timeline_ms * config.sample_rate // 1000)

    @property
    def position_ms(self) -> int:
        """Where the timeline stands: the end of the last whole frame consumed."""
        return self.samples * 1000 // self.sample_rate

    def to_item(self, ring: bytes | None = None) -> bytes:
        """The state as stored: one binary value. ``ring`` stores another ring in its place
        (the caller's, who puts the rest back before :meth:`from_item`).

        One value, not a map of eighteen: the chunk path reads and writes this state ten times a
        second, and each attribute value costs botocore (and the service) its own shape walk."""
        ring = self.ring if ring is None else ring
        scalars = (getattr(self, name) for name in _SCALARS)
        head = _PACKED.pack(self.ITEM_VERSION, *scalars, len(self.carry))
        return b"".join((head, self.carry, ring))

    @classmethod
    def from_item(cls, item: bytes | Mapping[str, Any]) -> VadState:
        """Inverse of :meth:`to_item` (bytes, or boto3's ``Binary``); also reads version 1, the
        map of fields (``Decimal`` numbers, floats as text) of an earlier deployment."""
        item = getattr(item, "value", item)  # boto3.dynamodb.types.Binary
        if isinstance(item, bytes | bytearray | memoryview):
            return cls._from_packed(bytes(item))
        if not isinstance(item, Mapping):
            raise ValueError(f"VAD state must be bytes, got {type(item).__name__}")
        return cls._from_map(item)

    @classmethod
    def _from_packed(cls, data: bytes) -> VadState:
        if len(data) < _PACKED.size:
            raise ValueError(f"VAD state too short: {len(data)} bytes")
        fields = _PACKED.unpack_from(data)
        if fields[0] != cls.ITEM_VERSION:
            raise ValueError(f"unknown VAD state version {fields[0]}")
        carry_end = _PACKED.size + fields[-1]
        if len(data) < carry_end:
            raise ValueError("VAD state truncated: its carry is cut short")
        # The scalars in field order (``_SCALARS``), between the version and carry's length.
        scalars: dict[str, Any] = dict(zip(_SCALARS, fields[1:-1], strict=True))
        return cls(**scalars, carry=data[_PACKED.size : carry_end], ring=data[carry_end:])

    @classmethod
    def _from_map(cls, item: Mapping[str, Any]) -> VadState:
        def integer(key: str) -> int:
            value = item[key]
            if isinstance(value, bool) or not isinstance(value, int | Decimal):
                raise ValueError(f"VAD state field {key} must be an integer, got {value!r}")
            if value != int(value):
                raise ValueError(f"VAD state field {key} must be an integer, got {value!r}")
            return int(value)

        def real(key: str) -> float:
            value = item[key]
            if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
                raise ValueError(f"VAD state field {key} must be a number as text, got {value!r}")
            return float(value)

        def blob(key: str) -> bytes:
            value = item[key]
            value = getattr(value, "value", value)  # boto3.dynamodb.types.Binary
            if not isinstance(value, bytes | bytearray | memoryview):
                raise ValueError(f"VAD state field {key} must be bytes, got {type(value).__name__}")
            return bytes(value)

        try:
            version = integer("v")
            if version != 1:
                raise ValueError(f"unknown VAD state version {version}")
            return cls(
                sample_rate=integer("sample_rate"),
                samples=integer("samples"),
                floor_db=real("floor_db"),
                floor_frames=integer("floor_frames"),
                smooth=real("smooth"),
                in_utterance=bool(item["in_utterance"]),
                candidate_start=integer("candidate_start"),
                candidate_speech_frames=integer("candidate_speech_frames"),
                candidate_gap_frames=integer("candidate_gap_frames"),
                speech_start_ms=integer("speech_start_ms"),
                last_speech_end_ms=integer("last_speech_end_ms"),
                silence_ms=integer("silence_ms"),
                speculate_fired=bool(item["speculate_fired"]),
                idle_ms=integer("idle_ms"),
                idle_fired=bool(item["idle_fired"]),
                carry=blob("carry"),
                ring=blob("ring"),
            )
        except KeyError as exc:
            raise ValueError(f"VAD state item lacks {exc.args[0]!r}") from None


#: The fields :data:`_PACKED` stores between the version and the length of ``carry``, in order.
_SCALARS = tuple(f.name for f in dataclass_fields(VadState) if f.name not in ("carry", "ring"))


@dataclass(frozen=True)
class VadEvent:
    """A segmentation event; ``audio_ms`` is on the session's audio timeline.

    ``speech_started``: start of the first speech frame. ``speech_stopped`` and ``speculate``: end
    of the last speech frame. ``speech_resumed``: start of the first frame of resumed speech.
    ``idle_timeout``: end of the frame at which the idle time reached ``idle_timeout_ms``.
    """

    kind: VadEventKind
    audio_ms: int


@dataclass(frozen=True)
class VadStep:
    """What one chunk did.

    ``utterance_audio`` is the audio to append to the current utterance, whole frames in order:
    on ``speech_started`` the prefix padding and the candidate's audio, then every frame of the
    utterance up to the one where ``speech_stopped`` fires, except the frames of a pause past its
    first ``max_pause_kept_ms`` (a long pause is shortened, the closing silence too). Audio between
    utterances is never emitted. ``event_offsets[i]`` is the byte offset into ``utterance_audio``
    at which ``events[i]`` happened, so a chunk that ends one utterance and starts the next can be
    split: the bytes before a ``speech_stopped`` offset close the old utterance, and the bytes from
    a ``speech_started`` offset open the new one.
    """

    state: VadState
    events: tuple[VadEvent, ...]
    utterance_audio: bytes
    event_offsets: tuple[int, ...] = field(default=())


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


def _probabilities(
    power: np.ndarray,
    voicing: np.ndarray,
    floor_db: float,
    floor_frames: int,
    smooth: float,
    gate: float,
) -> tuple[list[float], float, int, float]:
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
    return probabilities, floor_db, floor_frames, smooth


def _context(ring: bytes, frame_bytes: int) -> np.ndarray:
    tail = ring[-frame_bytes:]
    if len(tail) < frame_bytes:
        tail = bytes(frame_bytes - len(tail)) + tail
    return np.frombuffer(tail, dtype="<i2")


def score_frames(frames: np.ndarray, state: VadState, config: VadConfig) -> np.ndarray:
    """Speech probability in [0, 1] of each frame, continuing from ``state``; pure.

    ``frames`` is ``(n, frame_samples)`` int16 audio that directly follows what ``state`` has
    consumed (its ring supplies the preceding frame; its noise floor and smoothing carry on).
    """
    power, voicing = frame_features(
        frames, _context(state.ring, config.frame_bytes), config.sample_rate
    )
    probabilities, _, _, _ = _probabilities(
        power, voicing, state.floor_db, state.floor_frames, state.smooth, config.threshold
    )
    return np.asarray(probabilities, dtype=np.float64)


def rebase(config: VadConfig, state: VadState) -> VadState:
    """Go on at ``config``'s sample rate after the session's input rate changed.

    What is kept is counted in ms or dB: the timeline position, an utterance in progress and
    its silence, the idle timer, the noise floor. An unconfirmed speech candidate (sample
    positions) and the partial frame are dropped; the ring keeps as many of its newest bytes as
    the prefix padding takes at the new rate. Those bytes are read at the new rate from now on:
    right for the usual case, a client whose first ``session.update`` raced its first appends.
    """
    if state.sample_rate == config.sample_rate:
        return state
    keep = config.prefix_bytes + config.frame_bytes  # at least one frame: never 0
    return replace(
        state,
        sample_rate=config.sample_rate,
        samples=state.position_ms * config.sample_rate // 1000,
        candidate_start=-1,
        candidate_speech_frames=0,
        candidate_gap_frames=0,
        carry=b"",
        ring=state.ring[-keep:],
    )


def end_utterance(state: VadState) -> VadState:
    """The client ended the utterance itself (``input_audio_buffer.commit`` or ``clear``): the
    VAD waits for new speech. Left inside the utterance, it would take the silence after the
    commit for the rest of it and end it again later: a phantom utterance, and a turn on
    silence. The ring stays: it is the prefix padding of whatever speech comes next."""
    return replace(
        state,
        in_utterance=False,
        candidate_start=-1,
        candidate_speech_frames=0,
        candidate_gap_frames=0,
        speech_start_ms=-1,
        silence_ms=0,
        speculate_fired=False,
        idle_ms=0,
        idle_fired=False,
    )


def reset_idle(state: VadState) -> VadState:
    """Restart the idle timer (e.g. when the tutor's reply has finished playing)."""
    return replace(state, idle_ms=0, idle_fired=False)


def feed(config: VadConfig, state: VadState, pcm: bytes) -> VadStep:
    """Advance the VAD by one chunk of PCM16 LE mono audio of any length."""
    if state.sample_rate != config.sample_rate:
        raise ValueError(
            f"VAD state is at {state.sample_rate} Hz but the config is at {config.sample_rate} Hz; "
            "start a new state with VadState.initial(config, timeline_ms=state.position_ms)"
        )
    frame_bytes = config.frame_bytes
    data = state.carry + bytes(pcm)
    count = len(data) // frame_bytes
    carry = data[count * frame_bytes :]
    if count == 0:
        return VadStep(replace(state, carry=carry), (), b"")

    frames = np.frombuffer(data, dtype="<i2", count=count * config.frame_samples)
    frames = frames.reshape(count, config.frame_samples)
    power, voicing = frame_features(frames, _context(state.ring, frame_bytes), config.sample_rate)
    probabilities, floor_db, floor_frames, smooth = _probabilities(
        power, voicing, state.floor_db, state.floor_frames, state.smooth, config.threshold
    )

    rate = config.sample_rate
    frame_samples = config.frame_samples
    keep = config.prefix_bytes + frame_bytes  # the prefix before a frame that may start speech
    min_frames = config.min_speech_frames
    gap_frames = _CANDIDATE_GAP_MS // FRAME_MS
    span_frames = _CANDIDATE_SPAN_FACTOR * min_frames + gap_frames
    speculate_after = config.speculate_after_ms
    idle_timeout = config.idle_timeout_ms

    samples = state.samples
    in_utterance = state.in_utterance
    candidate_start = state.candidate_start
    candidate_speech = state.candidate_speech_frames
    candidate_gap = state.candidate_gap_frames
    speech_start_ms = state.speech_start_ms
    last_speech_end_ms = state.last_speech_end_ms
    silence_ms = state.silence_ms
    speculate_fired = state.speculate_fired
    idle_ms = state.idle_ms
    idle_fired = state.idle_fired
    ring = bytearray(state.ring)
    # Where the candidate's audio begins in the ring (everything before is history).
    history = len(ring)
    if candidate_start >= 0:
        history = max(0, len(ring) - (samples - candidate_start) * 2)

    out = bytearray()
    events: list[VadEvent] = []
    offsets: list[int] = []

    def emit(kind: VadEventKind, audio_ms: int) -> None:
        events.append(VadEvent(kind, audio_ms))
        offsets.append(len(out))

    for index, probability in enumerate(probabilities):
        chunk = data[index * frame_bytes : (index + 1) * frame_bytes]
        start_ms = samples * 1000 // rate
        samples += frame_samples
        end_ms = samples * 1000 // rate
        speech = probability >= config.threshold
        ring += chunk

        if in_utterance:
            if speech or end_ms - last_speech_end_ms <= config.max_pause_kept_ms:
                out += chunk
            if speech:
                if speculate_fired:
                    emit("speech_resumed", start_ms)
                    speculate_fired = False
                last_speech_end_ms = end_ms
                silence_ms = 0
            else:
                silence_ms = end_ms - last_speech_end_ms
                if (
                    speculate_after is not None
                    and not speculate_fired
                    and silence_ms >= speculate_after
                ):
                    emit("speculate", last_speech_end_ms)
                    speculate_fired = True
                if silence_ms >= config.silence_duration_ms:
                    emit("speech_stopped", last_speech_end_ms)
                    in_utterance = False
                    speculate_fired = False
                    silence_ms = 0
                    idle_ms = 0
                    idle_fired = False
            del ring[:-keep]
            history = len(ring)
            continue

        idle_ms += FRAME_MS
        if idle_timeout is not None and not idle_fired and idle_ms >= idle_timeout:
            emit("idle_timeout", end_ms)
            idle_fired = True

        if candidate_start >= 0:
            if speech:
                candidate_speech += 1
                candidate_gap = 0
            else:
                candidate_gap += 1
            span = (samples - candidate_start) // frame_samples
            if candidate_gap > gap_frames or span > span_frames:
                candidate_start = -1  # not speech after all: its audio becomes history
        if candidate_start < 0:
            del ring[:-keep]
            history = len(ring)
            if speech:
                candidate_start = samples - frame_samples
                candidate_speech = 1
                candidate_gap = 0
                history = len(ring) - frame_bytes

        if candidate_start >= 0 and candidate_speech >= min_frames:
            speech_start_ms = candidate_start * 1000 // rate
            emit("speech_started", speech_start_ms)
            prefix = ring[:history][-config.prefix_bytes :] if config.prefix_bytes else b""
            out += prefix
            out += ring[history:]
            in_utterance = True
            last_speech_end_ms = end_ms
            silence_ms = 0
            speculate_fired = False
            idle_ms = 0
            idle_fired = False
            candidate_start = -1
            candidate_speech = 0
            candidate_gap = 0
            del ring[:-keep]
            history = len(ring)

    if candidate_start < 0:
        candidate_speech = 0
        candidate_gap = 0
    new_state = VadState(
        sample_rate=state.sample_rate,
        samples=samples,
        floor_db=floor_db,
        floor_frames=floor_frames,
        smooth=smooth,
        in_utterance=in_utterance,
        candidate_start=candidate_start,
        candidate_speech_frames=candidate_speech,
        candidate_gap_frames=candidate_gap,
        speech_start_ms=speech_start_ms,
        last_speech_end_ms=last_speech_end_ms,
        silence_ms=silence_ms,
        speculate_fired=speculate_fired,
        idle_ms=idle_ms,
        idle_fired=idle_fired,
        carry=carry,
        ring=bytes(ring),
    )
    return VadStep(new_state, tuple(events), bytes(out), tuple(offsets))


def _bench(seconds: float = 20.0, chunk_ms: int = 100) -> list[tuple[int, float, float]]:
    """µs of CPU per ``chunk_ms`` chunk: (rate, feed only, feed + state round trip)."""
    import time

    results = []
    for rate in (24000, 16000):
        rng = np.random.default_rng(7)
        t = np.arange(int(seconds * rate)) / rate
        f0 = 260.0
        voiced = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 12))
        syllables = (np.sin(2 * np.pi * 1.5 * t) > 0.2).astype(np.float64)
        noise = rng.standard_normal(t.size) * 0.01
        audio = np.clip((0.1 * voiced * syllables + noise) * 32767, -32768, 32767).astype("<i2")
        pcm = audio.tobytes()
        config = VadConfig(sample_rate=rate, speculative_fraction=0.15)
        step_bytes = rate * chunk_ms // 1000 * 2
        chunks = [pcm[i : i + step_bytes] for i in range(0, len(pcm), step_bytes)]
        timings = []
        for round_trip in (False, True):
            state = VadState.initial(config)
            started = time.process_time()
            for chunk in chunks:
                if round_trip:
                    state = VadState.from_item(state.to_item())
                state = feed(config, state, chunk).state
            elapsed = time.process_time() - started
            timings.append(elapsed / len(chunks) * 1e6)
        results.append((rate, timings[0], timings[1]))
    return results


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kiddolingo.vad", description=__doc__)
    parser.add_argument("--bench", action="store_true", help="print µs of CPU per 100 ms chunk")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    if not args.bench:
        parser.print_help()
        return 0
    for rate, feed_us, round_trip_us in _bench(args.seconds):
        print(
            f"{rate} Hz: feed {feed_us:.0f} µs per 100 ms chunk; "
            f"with to_item/from_item {round_trip_us:.0f} µs"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
