"""The VAD over a run of chunks in order (``ingest``), and the client's manual commit and
clear: the audio state in, the new state, the audio to store and the events out."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from .. import vad as vadlib
from ..audio import bytes_to_ms
from ..chunk_keys import chunk_key
from ..protocol import error_event
from ..protocol import server_event as _ev
from .limits import HOLD_BYTES, MAX_HELD_BYTES
from .state import AudioState, Utterance


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
    run = _Run(state, session_id, sample_rate, vad_cfg, max_utterance_ms)
    for seq, pcm in chunks:
        if run.vad_cfg is None or run.vad_state is None:
            run.manual(seq, pcm)
        else:
            run.detect(seq, pcm)
    return run.result(tuple(seq for seq, _ in chunks), may_write)


class _Run:
    """One ``ingest`` in progress: the utterance being built, the audio not yet written
    (``pending``, from chunk ``pending_seq`` on), and what the run produced so far."""

    def __init__(
        self,
        state: AudioState,
        session_id: str,
        sample_rate: int,
        vad_cfg: vadlib.VadConfig | None,
        max_utterance_ms: int,
    ) -> None:
        self.state = state
        self.session_id = session_id
        self.sample_rate = sample_rate
        self.vad_cfg = vad_cfg
        self.max_utterance_ms = max_utterance_ms
        self.events: list[dict[str, Any]] = []
        self.writes: list[tuple[str, bytes]] = []
        self.committed: list[Utterance] = []
        self.speculate: Utterance | None = None
        self.started = self.resumed = False
        self.utt = state.utterance
        self.vad_state = state.vad
        # Where the audio stands: the VAD's position while it runs. Under manual commits its
        # state is dropped (a session.update turned it off, or appends raced the update): read
        # from a VAD no longer fed, the timeline would stand still, and every manual utterance
        # would start at the same millisecond, sharing one item id and one S3 folder.
        self.timeline = state.audio_ms
        self.last_item = state.last_item_id
        if vad_cfg is None:
            self.vad_state = None
        else:
            # rebase: a session.update changed the input rate (or raced the first appends).
            self.vad_state = (
                vadlib.VadState.initial(vad_cfg, timeline_ms=self.timeline)
                if self.vad_state is None
                else vadlib.rebase(vad_cfg, self.vad_state)
            )
        self.pending = bytearray()
        self.pending_seq: int | None = None
        if state.held and self.utt is not None:
            self.pending += state.held
            self.pending_seq = state.held_seq

    def hold(self, seq: int, audio: bytes) -> None:
        """``audio`` (of chunk ``seq``) joins the utterance's audio not yet written."""
        if self.pending_seq is None:
            self.pending_seq = seq
        self.pending += audio

    def flush(self) -> None:
        """Write the audio not yet written as one S3 object of the utterance."""
        if self.utt is not None and self.pending and self.pending_seq is not None:
            data = bytes(self.pending)
            key = chunk_key(self.session_id, self.utt.id, self.pending_seq, data)
            self.writes.append((key, data))
            self.utt = replace(
                self.utt, keys=(*self.utt.keys, key), nbytes=self.utt.nbytes + len(self.pending)
            )
        self.pending = bytearray()
        self.pending_seq = None

    def commit(self, end_ms: int) -> None:
        """The utterance ends at ``end_ms``: it becomes a user turn."""
        if self.utt is None:
            return
        # The audio not yet in S3 goes with the utterance in memory (its turn runs here).
        done = self.utt.until(end_ms, bytes(self.pending), self.pending_seq or 0)
        self.pending = bytearray()
        self.pending_seq = None
        self.committed.append(done)
        if self.vad_cfg is not None:  # (in manual mode nothing "stops": the server commits)
            self.events.append(
                _ev("input_audio_buffer.speech_stopped", audio_end_ms=end_ms, item_id=done.item_id)
            )
        self.events.append(
            _ev(
                "input_audio_buffer.committed",
                item_id=done.item_id,
                previous_item_id=self.last_item,
            )
        )
        self.last_item = done.item_id
        self.utt = None

    def manual(self, seq: int, pcm: bytes) -> None:
        """Manual commits: every appended sample belongs to the utterance."""
        if self.utt is None:
            self.utt = _new_utterance(self.session_id, self.timeline)
        self.hold(seq, pcm)
        self.timeline += round(bytes_to_ms(len(pcm), self.sample_rate))
        if self.timeline - self.utt.start_ms >= self.max_utterance_ms:
            # The client never committed (a microphone left on): commit for it, as the
            # server VAD does, so the turn answers what was said and the utterance cannot
            # outgrow the transcription upload or the connection item. It is told why.
            self.commit(self.timeline)
            self.events.append(
                error_event(
                    "utterance_too_long",
                    "You talked for a long time, so Lingo answers what you said so far "
                    f"(after {self.max_utterance_ms // 1000} s of audio the server commits it; "
                    "send input_audio_buffer.commit sooner).",
                )
            )

    def detect(self, seq: int, pcm: bytes) -> None:
        """Server VAD: the chunk scored, and the speech it holds kept for its utterance."""
        assert self.vad_cfg is not None and self.vad_state is not None
        step = vadlib.feed(self.vad_cfg, self.vad_state, pcm)
        self.vad_state = step.state
        audio = step.utterance_audio
        # A chunk may hold several events (a long append): each takes the audio before its
        # offset, and the rest goes on to the next, so any chunking gives the same utterances.
        taken = 0
        for ev, offset in zip(step.events, step.event_offsets, strict=True):
            before, taken = audio[taken:offset], max(taken, offset)
            if before and self.utt is not None:
                self.hold(seq, before)
            self.on_vad_event(ev)
        audio = audio[taken:]
        if audio:
            if self.utt is None:  # speech carrying on after a forced commit: a new item
                self.start_utterance(self.vad_state.position_ms)
            self.hold(seq, audio)
        if self.utt is not None:
            now_ms = self.vad_state.position_ms
            if now_ms - self.utt.start_ms >= self.max_utterance_ms:
                self.commit(now_ms)  # the longest utterance: a forced commit, the turn goes on

    def on_vad_event(self, ev: vadlib.VadEvent) -> None:
        """Apply one VAD event (the chunk's audio before it is already held)."""
        if ev.kind == "speech_started":
            self.flush()
            if self.utt is not None:  # a new start while one is open: close the old one first
                self.commit(ev.audio_ms)
            self.start_utterance(ev.audio_ms)
            self.started = True
        elif ev.kind == "speech_stopped":
            self.commit(ev.audio_ms)
        elif ev.kind == "speculate" and self.utt is not None:
            # The speculative turn takes the held audio along in memory; it stays held.
            self.speculate = self.utt.until(ev.audio_ms, bytes(self.pending), self.pending_seq or 0)
        elif ev.kind == "speech_resumed":
            self.resumed = True
            self.speculate = None  # the pause ended within this very run: nothing to prepare

    def start_utterance(self, start_ms: int) -> None:
        self.utt = _new_utterance(self.session_id, start_ms)
        self.events.append(
            _ev(
                "input_audio_buffer.speech_started",
                audio_start_ms=start_ms,
                item_id=self.utt.item_id,
            )
        )

    def result(self, processed: tuple[int, ...], may_write: bool) -> IngestResult:
        """The run's outcome, once the newest audio is held in the item or written."""
        held, held_seq = b"", 0
        # Hold the newest audio in the item; write it once it outgrows HOLD_BYTES. The append
        # that posts speech_started (or a retry) holds up to MAX_HELD_BYTES: it has no call to
        # spare.
        limit = MAX_HELD_BYTES if (self.started or not may_write) else HOLD_BYTES
        if self.utt is not None and self.pending_seq is not None and len(self.pending) <= limit:
            held, held_seq = bytes(self.pending), self.pending_seq  # written by a later append
        else:
            self.flush()
        state = self.state
        vad_state = self.vad_state
        if vad_state is not None and self.vad_cfg is not None:
            # Only as much of the prefix ring as can still matter is stored (``trim_ring``).
            vad_state = vadlib.trim_ring(self.vad_cfg, vad_state)
        new_state = replace(
            state,
            next_seq=(processed[-1] + 1) if processed else state.next_seq,
            timeline_ms=self.timeline,
            vad=vad_state,
            pending={k: v for k, v in state.pending.items() if k not in processed},
            utterance=self.utt,
            last_item_id=self.last_item,
            held=held,
            held_seq=held_seq,
        )
        return IngestResult(
            state=new_state,
            writes=tuple(self.writes),
            events=tuple(self.events),
            committed=tuple(self.committed),
            speech_started=self.started,
            speculate=self.speculate,
            speech_resumed=self.resumed,
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
