"""The audio-chunk path as pure code: the connection's audio state and chunks in, the new
state, the audio to store, and what happened (speech started / stopped, a turn to run) out.

Sequencing under Lambda concurrency
-----------------------------------
Every ``input_audio_buffer.append`` is its own Lambda invocation, and API Gateway may run a
connection's invocations concurrently and finish them in any order. The VAD is a state machine
over the audio *in order*, so order is restored before it runs:

* each append has a sequence number ``n``: the client numbers them (``event_id`` ending in
  ``#<n>``, counting from 1 per connection, as ``web/`` does); an un-numbered append takes the
  next free number when it is processed (arrival order, the best a server can do);
* the connection item holds a watermark ``seq`` (the next number to process) and a version
  ``aver`` that only the processing writes bump (and ``cver``, which every write bumps: an
  append that starts from the item its container's previous commit left, instead of reading
  it, commits on that too; ``store.KnownConnections``);
* an invocation whose ``n`` is the watermark processes its chunk *and every parked chunk that
  follows it contiguously* (it closes the gap), then advances the watermark with a write
  conditional on the version it read **and** on no chunk being parked at the new watermark;
* an invocation whose ``n`` is ahead of the watermark parks its chunk in the item (``pend``),
  conditional on the watermark still being below ``n``, and returns: whoever closes the gap will
  process it;
* an ``n`` below the watermark, or already parked, is a duplicate delivery and is dropped;
* so the two races resolve themselves: a chunk parked at the new watermark while the gap was
  being closed makes that commit fail (the closer re-reads and takes the chunk along); a
  watermark that reached ``n`` before the park makes the park fail (the parker re-reads and
  processes its own chunk). Parkers further ahead never make the closer lose, so a burst
  cannot livelock it;
* when writes are slower than chunks arrive (a loaded local stack), a chunk is parked at the
  new watermark during every write, and the closer would lose forever while the parked pile
  grows. So once it lost only to a parker (the version is unchanged), it commits *without* the
  "nothing parked at the new watermark" condition and processes what was parked there itself,
  for as long as there is some: progress is committed every pass, and only lost races count
  towards ``MAX_APPEND_ATTEMPTS``. Each pass goes on from the item its own write returns (a
  chunk parked after that write finds the watermark at its number and processes itself), so
  a pass costs one UpdateItem, no read;
* a gap that never fills (the invocation of a chunk failed) is skipped once parking is full
  (``MAX_PARKED_CHUNKS`` or its byte bound), so a lost chunk cannot stall a session. The park's
  write checks the room too (in chunks the size of its own), so racing parkers cannot push the
  item past DynamoDB's 400 KB together.

The S3 write of a processed run happens *before* the conditional commit, under a key derived
from the run's first sequence number and its bytes: a retry of the same run overwrites it, a
run written again with other bytes gets another key, and the turn only reads the keys the
committed state lists. So a burst, a duplicate or swapped neighbours give exactly the VAD
decisions and the utterance audio of in-order delivery, with no chunk lost or doubled.

Storage: only speech and its prefix padding (plus pauses inside an utterance) reaches S3; the
prefix padding waits in the VAD's ring buffer inside the connection item until speech starts.
The utterance's newest audio is *held* in the item (``hbuf``) and written as one object once
more than ``HOLD_BYTES`` has gathered: one S3 PUT per ~400 ms of speech instead of one per
append, and a turn reads a few objects instead of one per 100 ms. In an utterance the VAD's
ring is the newest audio too, so the item stores the ring only where it is not already the end
of the held audio (``hdup``): holding costs the item no size. The audio still held when an
utterance ends never goes to S3 at all when its turn runs in the same invocation: it travels in
memory (``Utterance.tail``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import Any

from . import pcm_codec
from . import vad as vadlib
from .audio import bytes_to_ms
from .chunks import chunk_key
from .protocol import error_event
from .protocol import server_event as _ev

#: The largest start of an utterance held in the item for the next append to write.
MAX_HELD_BYTES = 48 * 1024
#: An utterance's audio is held in the item until it exceeds this (3 chunks of 100 ms at
#: 24 kHz; about the VAD's ring, which the held audio then replaces in the item).
HOLD_BYTES = 16 * 1024

#: Bounded so a runaway client cannot grow the connection item toward DynamoDB's 400 KB.
MAX_PARKED_CHUNKS = 40

#: The shortest append the service takes in a steady stream: 40 ms at 16 kHz (about 27 ms at
#: 24 kHz). Every append is an invocation and a write of the connection item, whatever its
#: length: 20 ms chunks cost five times what 100 ms chunks cost, and the local stack falls
#: behind them. One short append now and then (the end of a recording) is taken.
MIN_APPEND_BYTES = 1280


class ShortAppends:
    """Which connections stream appends shorter than ``MIN_APPEND_BYTES`` (in a container's
    memory, so that refusing one costs no AWS call: the point is to stay cheap)."""

    def __init__(self, window_s: float = 1.0, max_connections: int = 4096) -> None:
        self.window_s = window_s
        self.max_connections = max_connections
        #: connection id → (when its last short append came, when it was last told).
        self._seen: dict[str, tuple[float, float]] = {}

    def judge(self, connection_id: str, nbytes: int, now: float) -> tuple[bool, bool]:
        """(refuse it, tell the client now) for an append of ``nbytes``. A short append is
        refused when another came from the connection less than ``window_s`` before; the
        client is told at most once per ``window_s``."""
        if nbytes >= MIN_APPEND_BYTES:
            return False, False
        last, told = self._seen.get(connection_id, (float("-inf"), float("-inf")))
        refuse = now - last < self.window_s
        tell = refuse and now - told >= self.window_s
        if len(self._seen) >= self.max_connections and connection_id not in self._seen:
            self._seen.clear()  # a crude bound: forgetting only lets one more short append in
        self._seen[connection_id] = (now, now if tell else told)
        return refuse, tell

    def clear(self) -> None:
        self._seen.clear()


SHORT_APPENDS = ShortAppends()


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
            "keys": list(self.keys),
            "n": self.nbytes,
        }
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
            keys=tuple(item.get("keys", [])),
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


@dataclass(frozen=True)
class IngestResult:
    state: AudioState
    #: (S3 key, audio) to write before the state is committed.
    writes: tuple[tuple[str, bytes], ...] = ()
    events: tuple[dict[str, Any], ...] = ()
    #: Utterances that ended (speech stopped, a forced commit): each one is a user turn.
    committed: tuple[Utterance, ...] = ()
    speech_started: bool = False
    #: The utterance so far, when the pause reached the speculative fraction.
    speculate: Utterance | None = None
    speech_resumed: bool = False
    processed: tuple[int, ...] = ()


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


def vad_config(
    td: dict[str, Any], sample_rate: int, speculative_fraction: float | None
) -> vadlib.VadConfig:
    """The VAD settings of a session; a fraction of 0 (or none) turns speculation off."""
    fraction = (
        speculative_fraction if speculative_fraction and 0 < speculative_fraction < 1 else None
    )
    return vadlib.VadConfig.from_turn_detection(td, sample_rate, fraction)


def _new_utterance(session_id: str, start_ms: int) -> Utterance:
    uid = f"u{start_ms:010d}"
    return Utterance(id=uid, item_id=f"item_{session_id[-10:]}{uid}", start_ms=start_ms)


def ingest(
    state: AudioState,
    chunks: list[tuple[int, bytes]],
    *,
    session_id: str,
    sample_rate: int,
    vad_cfg: vadlib.VadConfig | None,
    max_utterance_ms: int,
    may_write: bool = True,
) -> IngestResult:
    """Advance the audio state over ``chunks`` (contiguous, starting at ``state.next_seq``).

    ``may_write=False`` (a retry that already spent its AWS calls) holds the audio in the item
    up to ``MAX_HELD_BYTES`` instead of writing it now; the next append writes it."""
    events: list[dict[str, Any]] = []
    writes: list[tuple[str, bytes]] = []
    committed: list[Utterance] = []
    speculate: Utterance | None = None
    started = resumed = False
    utt = state.utterance
    vad_state = state.vad
    timeline = state.timeline_ms
    last_item = state.last_item_id
    if vad_cfg is not None:
        # rebase: a session.update changed the input rate (or raced the first appends).
        vad_state = (
            vadlib.VadState.initial(vad_cfg, timeline_ms=timeline)
            if vad_state is None
            else vadlib.rebase(vad_cfg, vad_state)
        )

    pending_bytes = bytearray()
    pending_seq: int | None = None
    if state.held and utt is not None:
        pending_bytes += state.held
        pending_seq = state.held_seq

    def flush() -> None:
        nonlocal utt, pending_bytes, pending_seq
        if utt is not None and pending_bytes and pending_seq is not None:
            data = bytes(pending_bytes)
            key = chunk_key(session_id, utt.id, pending_seq, data)
            writes.append((key, data))
            utt = replace(utt, keys=(*utt.keys, key), nbytes=utt.nbytes + len(pending_bytes))
        pending_bytes = bytearray()
        pending_seq = None

    def commit(end_ms: int) -> None:
        nonlocal utt, last_item, pending_bytes, pending_seq
        if utt is None:
            return
        # The audio not yet in S3 goes with the utterance in memory (its turn runs here).
        done = utt.until(end_ms, bytes(pending_bytes), pending_seq or 0)
        pending_bytes = bytearray()
        pending_seq = None
        committed.append(done)
        if vad_cfg is not None:  # (in manual mode nothing "stops": the server commits)
            events.append(
                _ev("input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=done.item_id)
            )
        events.append(
            _ev("input_audio_buffer.committed", item_id=done.item_id, previous_item_id=last_item)
        )
        last_item = done.item_id
        utt = None

    for seq, pcm in chunks:
        if vad_cfg is None or vad_state is None:
            # Manual commits: every appended sample belongs to the utterance.
            if utt is None:
                utt = _new_utterance(session_id, timeline)
            if pending_seq is None:
                pending_seq = seq
            pending_bytes += pcm
            timeline += round(bytes_to_ms(len(pcm), sample_rate))
            if timeline - utt.start_ms >= max_utterance_ms:
                # The client never committed (a microphone left on): commit for it, as the
                # server VAD does, so the turn answers what was said and the utterance cannot
                # outgrow the transcription upload or the connection item. It is told why.
                commit(timeline)
                events.append(
                    error_event(
                        "utterance_too_long",
                        "You talked for a long time, so Lingo answers what you said so far "
                        f"(after {max_utterance_ms // 1000} s of audio the server commits it; "
                        "send input_audio_buffer.commit sooner).",
                    )
                )
            continue
        step = vadlib.feed(vad_cfg, vad_state, pcm)
        vad_state = step.state
        audio = step.utterance_audio
        # A chunk may hold several events (a long append): each takes the audio before its
        # offset, and the rest goes on to the next, so any chunking gives the same utterances.
        taken = 0
        for ev, offset in zip(step.events, step.event_offsets, strict=True):
            before, taken = audio[taken:offset], max(taken, offset)
            if before and utt is not None:
                if pending_seq is None:
                    pending_seq = seq
                pending_bytes += before
            if ev.kind == "speech_started":
                flush()
                if utt is not None:  # a new start while one is open: close the old one first
                    commit(ev.audio_ms)
                utt = _new_utterance(session_id, ev.audio_ms)
                started = True
                events.append(
                    _ev(
                        "input_audio_buffer.speech_started",
                        audio_start_ms=ev.audio_ms,
                        item_id=utt.item_id,
                    )
                )
            elif ev.kind == "speech_stopped":
                commit(ev.audio_ms)
            elif ev.kind == "speculate" and utt is not None:
                # The speculative turn takes the held audio along in memory; it stays held.
                speculate = utt.until(ev.audio_ms, bytes(pending_bytes), pending_seq or 0)
            elif ev.kind == "speech_resumed":
                resumed = True
                speculate = None  # the pause ended within this very run: nothing to prepare
        audio = audio[taken:]
        if audio:
            if utt is None:  # speech carrying on after a forced commit: a new item
                utt = _new_utterance(session_id, vad_state.position_ms)
                events.append(
                    _ev(
                        "input_audio_buffer.speech_started",
                        audio_start_ms=utt.start_ms,
                        item_id=utt.item_id,
                    )
                )
            if pending_seq is None:
                pending_seq = seq
            pending_bytes += audio
        if utt is not None:
            now_ms = vad_state.position_ms
            if now_ms - utt.start_ms >= max_utterance_ms:
                commit(now_ms)  # the longest utterance: a forced commit, the turn goes on
    held, held_seq = b"", 0
    # Hold the newest audio in the item; write it once it outgrows HOLD_BYTES. The append that
    # posts speech_started (or a retry) holds up to MAX_HELD_BYTES: it has no call to spare.
    limit = MAX_HELD_BYTES if (started or not may_write) else HOLD_BYTES
    if utt is not None and pending_seq is not None and len(pending_bytes) <= limit:
        held, held_seq = bytes(pending_bytes), pending_seq  # written by a later append
    else:
        flush()

    processed = tuple(seq for seq, _ in chunks)
    new_state = replace(
        state,
        next_seq=(processed[-1] + 1) if processed else state.next_seq,
        timeline_ms=timeline,
        vad=vad_state,
        pending={k: v for k, v in state.pending.items() if k not in processed},
        utterance=utt,
        last_item_id=last_item,
        held=held,
        held_seq=held_seq,
    )
    return IngestResult(
        state=new_state,
        writes=tuple(writes),
        events=tuple(events),
        committed=tuple(committed),
        speech_started=started,
        speculate=speculate,
        speech_resumed=resumed,
        processed=processed,
    )


def commit_manual(state: AudioState) -> tuple[AudioState, Utterance | None]:
    """``input_audio_buffer.commit``: the buffered audio becomes the user's turn.

    Returns the new state and the utterance: the audio still held in the item is its
    in-memory ``tail`` (the turn runs in this invocation). In server-VAD mode the VAD leaves
    the utterance too (``vad.end_utterance``).
    """
    utt = state.utterance
    if utt is None or not (utt.keys or state.held):
        return state, None
    done = utt.until(state.audio_ms, state.held, state.held_seq)
    vad_state = vadlib.end_utterance(state.vad) if state.vad is not None else None
    new_state = replace(
        state, utterance=None, vad=vad_state, last_item_id=done.item_id, held=b"", held_seq=0
    )
    return new_state, done


def clear(state: AudioState) -> tuple[AudioState, Utterance | None]:
    """``input_audio_buffer.clear``: drop the uncommitted audio (the caller deletes it)."""
    # Forget the utterance in progress; a speech candidate starts over from the next chunk.
    vad_state = vadlib.end_utterance(state.vad) if state.vad is not None else None
    return replace(state, utterance=None, vad=vad_state, held=b"", held_seq=0), state.utterance
