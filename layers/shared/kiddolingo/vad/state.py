"""What the VAD carries from one invocation to the next (:class:`VadState`), how it is stored,
and what one chunk produces (:class:`VadEvent`, :class:`VadStep`)."""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from dataclasses import fields as dataclass_fields
from decimal import Decimal
from typing import Any, Literal

from .config import VadConfig

VadEventKind = Literal[
    "speech_started", "speech_stopped", "speculate", "speech_resumed", "idle_timeout"
]

#: The noise floor of a new session, in dBFS.
FLOOR_INITIAL_DB = -60.0

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
    floor_db: float = FLOOR_INITIAL_DB
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
        return _from_map(item)

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


#: The fields :data:`_PACKED` stores between the version and the length of ``carry``, in order.
_SCALARS = tuple(f.name for f in dataclass_fields(VadState) if f.name not in ("carry", "ring"))


def _from_map(item: Mapping[str, Any]) -> VadState:
    """A version 1 state: one attribute per field, read by the field's declared type."""

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

    def flag(key: str) -> bool:
        return bool(item[key])

    # The annotations are text (``from __future__ import annotations``): "int", "float", ...
    readers: dict[str, Callable[[str], Any]] = {
        "int": integer,
        "float": real,
        "bool": flag,
        "bytes": blob,
    }
    try:
        version = integer("v")
        if version != 1:
            raise ValueError(f"unknown VAD state version {version}")
        return VadState(
            **{f.name: readers[str(f.type)](f.name) for f in dataclass_fields(VadState)}
        )
    except KeyError as exc:
        raise ValueError(f"VAD state item lacks {exc.args[0]!r}") from None


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
