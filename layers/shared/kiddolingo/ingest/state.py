"""The connection's audio state as pure values: the utterance being spoken (``Utterance``) and
everything the chunk path keeps in the connection item between appends (``AudioState``), read
from the item and packed into it."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Any

from .. import pcm_codec
from .. import vad as vadlib
from ..chunk_keys import chunk_key


@dataclass(frozen=True)
class Utterance:
    id: str
    item_id: str
    start_ms: int
    keys: tuple[str, ...] = ()
    nbytes: int = 0
    end_ms: int | None = None
    #: The newest audio, not in S3 (``keys`` first, then this): held in memory by the
    #: invocation that ended the utterance or speculates on it. Never stored in the item.
    tail: bytes = field(default=b"", repr=False, compare=False)
    tail_seq: int = 0

    def until(self, end_ms: int, tail: bytes, tail_seq: int) -> Utterance:
        """The utterance up to ``end_ms``: its S3 objects, then ``tail`` (not in S3) in memory."""
        return replace(
            self, end_ms=end_ms, tail=tail, tail_seq=tail_seq, nbytes=self.nbytes + len(tail)
        )

    def tail_write(self, session_id: str) -> tuple[Utterance, tuple[tuple[str, bytes], ...]]:
        """The utterance with its tail as an S3 object too, and that write (for a turn that
        does not run in this invocation: ``create_response`` false)."""
        if not self.tail:
            return self, ()
        key = chunk_key(session_id, self.id, self.tail_seq, self.tail)
        done = replace(self, keys=(*self.keys, key), tail=b"", tail_seq=0)
        return done, ((key, self.tail),)

    def to_item(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "item": self.item_id,
            "start": self.start_ms,
            "n": self.nbytes,
        }
        # The keys share their folder (``audio/<session>/<utterance>/``): stored once, since
        # every append rewrites the item and each of its bytes is billed.
        folder = self.keys[0].rpartition("/")[0] + "/" if self.keys else ""
        if len(self.keys) > 1 and all(k.startswith(folder) for k in self.keys):
            out["kp"] = folder
            out["keys"] = [k[len(folder) :] for k in self.keys]
        else:
            out["keys"] = list(self.keys)
        if self.end_ms is not None:
            out["end"] = self.end_ms
        return out

    @classmethod
    def from_item(cls, item: dict[str, Any] | None) -> Utterance | None:
        if not item:
            return None
        return cls(
            id=str(item["id"]),
            item_id=str(item["item"]),
            start_ms=int(item["start"]),
            keys=tuple(str(item.get("kp", "")) + str(k) for k in item.get("keys", [])),
            nbytes=int(item.get("n", 0)),
            end_ms=int(item["end"]) if item.get("end") is not None else None,
        )


@dataclass(frozen=True)
class AudioState:
    next_seq: int = 1
    version: int = 0
    #: Where the session's audio timeline stands (manual mode; the VAD keeps its own).
    timeline_ms: int = 0
    vad: vadlib.VadState | None = None
    pending: dict[int, bytes] = field(default_factory=dict)
    utterance: Utterance | None = None
    last_item_id: str | None = None
    rate_window: int = 0
    rate_count: int = 0
    #: The audio of an utterance that started in the last append (prefix padding + the first
    #: speech), kept in the item until the next append writes it with its own: the append that
    #: posts ``speech_started`` then makes no S3 write (≤ 3 AWS calls per append).
    held: bytes = b""
    held_seq: int = 0
    #: The newest gateway stamp (``requestTimeEpoch``, ms) of an event applied to the stream,
    #: and when the client was last told about unordered events (``kiddolingo.sequencing``).
    last_stamp: int = 0
    last_told: int = 0
    #: The stamp at which chunks started to wait for the gap at the watermark (0: no gap).
    gap_since: int = 0
    #: The numbered event at the watermark that is taking effect, and since when (ms).
    hold: int = 0
    hold_since: int = 0

    #: Where ``held`` was read from: ``hz`` (packed), or ``hbuf`` (raw PCM, an item written
    #: before the audio was packed; the next write moves it).
    held_attr: str = field(default="hz", compare=False)

    @classmethod
    def from_connection(cls, item: dict[str, Any]) -> AudioState:
        vad_item = item.get("vad")
        held_attr = "hbuf" if item.get("hbuf") is not None and item.get("hz") is None else "hz"
        held = _held_from_item(item)
        vad = _vad_from_item(vad_item) if vad_item else None
        shared = int(item.get("hdup", 0))
        if vad is not None and shared:
            vad = replace(vad, ring=vad.ring + held[len(held) - shared :])
        return cls(
            next_seq=int(item.get("seq", 1)),
            version=int(item.get("aver", 0)),
            timeline_ms=int(item.get("timeline_ms", 0)),
            vad=vad,
            pending={int(k): bytes(v) for k, v in (item.get("pend") or {}).items()},
            utterance=Utterance.from_item(item.get("utt")),
            last_item_id=item.get("last_item"),
            rate_window=int(item.get("rlw", 0)),
            rate_count=int(item.get("rln", 0)),
            held=held,
            held_seq=int(item.get("hseq", 0)),
            last_stamp=int(item.get("lt", 0)),
            last_told=int(item.get("lto", 0)),
            gap_since=int(item.get("gap", 0)),
            hold=int(item.get("hold", 0)),
            hold_since=int(item.get("holdt", 0)),
            held_attr=held_attr,
        )

    def audio_attributes(self, before: AudioState) -> tuple[dict[str, Any], list[str]]:
        """The connection item's audio attributes as this state stores them, for a write made
        from ``before``: (attribute -> value to set, attributes to remove). The prefix ring
        and the held audio are packed (``kiddolingo.pcm_codec``): every append rewrites the
        item, and DynamoDB bills the write by its size."""
        sets: dict[str, Any] = {}
        removes: list[str] = []
        vad_item, shared = self.vad_item()
        if vad_item is not None:
            sets["vad"] = vad_item
            sets["hdup"] = shared
        elif before.vad is not None:
            # Manual commits now: a VAD state left behind would still say where the audio is.
            removes += ["vad", "hdup"]
        if self.held:
            sets["hz"] = pcm_codec.pack(self.held)
            sets["hseq"] = self.held_seq
        elif before.held:
            removes += ["hz", "hseq"]
        if before.held_attr == "hbuf":
            removes.append("hbuf")
        return sets, removes

    def vad_item(self) -> tuple[bytes | None, int]:
        """The VAD state as stored, and how many bytes of its ring are the end of ``held``
        (left out of the stored ring: ``from_connection`` puts them back)."""
        if self.vad is None:
            return None, 0
        shared = ring_overlap(self.vad.ring, self.held)
        head = self.vad.to_item(ring=b"")
        ring = self.vad.ring[: len(self.vad.ring) - shared]
        # The state's scalars and carry as VadState stores them, then its ring packed.
        return _VAD_PACKED.pack(pcm_codec.PACKED, len(head)) + head + pcm_codec.pack(ring), shared

    @property
    def audio_ms(self) -> int:
        """The session audio timeline position after everything processed so far."""
        if self.vad is not None:
            return self.vad.position_ms
        return self.timeline_ms


#: A packed VAD state: the codec's marker, the length of ``VadState.to_item`` without its ring;
#: then that, then the ring packed. (An unpacked one starts with ``VadState.ITEM_VERSION``.)
_VAD_PACKED = struct.Struct("<BH")


def _vad_from_item(value: Any) -> vadlib.VadState:
    data = getattr(value, "value", value)
    if isinstance(data, bytes | bytearray) and data[:1] == bytes((pcm_codec.PACKED,)):
        _marker, n = _VAD_PACKED.unpack_from(data)
        head = bytes(data[_VAD_PACKED.size : _VAD_PACKED.size + n])
        ring = pcm_codec.unpack(bytes(data[_VAD_PACKED.size + n :]))
        return replace(vadlib.VadState.from_item(head), ring=ring)
    return vadlib.VadState.from_item(value)


def _held_from_item(item: dict[str, Any]) -> bytes:
    if item.get("hz") is not None:
        return pcm_codec.unpack(bytes(item["hz"]))
    return bytes(item.get("hbuf") or b"")  # an item written before the audio was packed


def ring_overlap(ring: bytes, held: bytes) -> int:
    """How much of the end of ``ring`` is the end of ``held`` (all of the shorter, or 0)."""
    n = min(len(ring), len(held))
    if n and ring[len(ring) - n :] == held[len(held) - n :]:
        return n
    return 0
