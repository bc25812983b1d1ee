"""Turn-taking: :func:`feed` cuts a chunk into frames, scores them and walks them one by one,
deciding where speech starts and stops (the rules are in the package docstring)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from .config import VadConfig
from .limits import FRAME_MS
from .scoring import Scores, score
from .state import VadEvent, VadEventKind, VadState, VadStep

CANDIDATE_GAP_MS = 100  # a speech candidate survives non-speech gaps up to this long
CANDIDATE_SPAN_FACTOR = 3  # … and dies once it spans 3 x min_speech (+ one gap) without starting

#: The fields of a state with no speech candidate pending.
_NO_CANDIDATE: dict[str, Any] = {
    "candidate_start": -1,
    "candidate_speech_frames": 0,
    "candidate_gap_frames": 0,
}
#: The fields of a state that waits for speech, an utterance neither open nor pausing.
_BETWEEN_UTTERANCES: dict[str, Any] = {
    "in_utterance": False,
    "speech_start_ms": -1,
    "silence_ms": 0,
    "speculate_fired": False,
}
#: The fields of a state whose idle timer starts again.
_IDLE_RESET: dict[str, Any] = {"idle_ms": 0, "idle_fired": False}


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
    scores = score(frames.reshape(count, config.frame_samples), state, config)
    walk = _Walk(config, state, scores, carry)
    threshold = config.threshold
    for index, probability in enumerate(scores.probabilities):
        frame = data[index * frame_bytes : (index + 1) * frame_bytes]
        walk.frame(frame, probability >= threshold)
    return walk.finish()


class _Walk:
    """One chunk's walk over its frames: the state it advances (a copy of the caller's, changed
    in place), the prefix ring as it grows, and the audio and events the chunk emits."""

    # Slots: every append runs this, and a slot reads faster than an instance dict.
    __slots__ = (
        "events",
        "frame_bytes",
        "frame_samples",
        "gap_frames",
        "history",
        "idle_timeout_ms",
        "keep",
        "max_pause_kept_ms",
        "min_frames",
        "offsets",
        "out",
        "prefix_bytes",
        "rate",
        "ring",
        "silence_duration_ms",
        "span_frames",
        "speculate_after_ms",
        "state",
    )

    def __init__(self, config: VadConfig, state: VadState, scores: Scores, carry: bytes) -> None:
        # A copy, so the caller's state stays as it is. Its fields are numbers and bytes, so a
        # shallow one; built by the constructor, which is several times cheaper than copy.copy.
        self.state = VadState(**vars(state))
        self.state.floor_db = scores.floor_db
        self.state.floor_frames = scores.floor_frames
        self.state.smooth = scores.smooth
        self.state.carry = carry
        self.ring = bytearray(state.ring)
        # Where the candidate's audio begins in the ring (everything before is history).
        self.history = len(self.ring)
        if state.candidate_start >= 0:
            self.history = max(0, len(self.ring) - (state.samples - state.candidate_start) * 2)
        # The settings each frame reads, computed once per chunk: this runs on every append.
        self.rate = config.sample_rate
        self.frame_samples = config.frame_samples
        self.frame_bytes = config.frame_bytes
        self.prefix_bytes = config.prefix_bytes
        # The ring keeps the prefix padding before a frame that may start speech.
        self.keep = self.prefix_bytes + self.frame_bytes
        self.min_frames = config.min_speech_frames
        self.gap_frames = CANDIDATE_GAP_MS // FRAME_MS
        self.span_frames = CANDIDATE_SPAN_FACTOR * self.min_frames + self.gap_frames
        self.max_pause_kept_ms = config.max_pause_kept_ms
        self.silence_duration_ms = config.silence_duration_ms
        self.speculate_after_ms = config.speculate_after_ms
        self.idle_timeout_ms = config.idle_timeout_ms
        self.out = bytearray()
        self.events: list[VadEvent] = []
        self.offsets: list[int] = []

    def frame(self, frame: bytes, speech: bool) -> None:
        """Take the next frame, speech or not."""
        state, rate = self.state, self.rate
        start_ms = state.samples * 1000 // rate
        state.samples += self.frame_samples
        end_ms = state.samples * 1000 // rate
        self.ring += frame
        if state.in_utterance:
            self._inside(frame, speech, start_ms, end_ms)
            self._forget_history()
            return
        self._tick_idle(end_ms)
        self._follow_candidate(speech)
        if state.candidate_start >= 0 and state.candidate_speech_frames >= self.min_frames:
            self._start(end_ms)

    def finish(self) -> VadStep:
        """The step: the advanced state with its ring, the audio and events of the chunk."""
        state = self.state
        if state.candidate_start < 0:
            state.candidate_speech_frames = 0
            state.candidate_gap_frames = 0
        state.ring = bytes(self.ring)
        return VadStep(state, tuple(self.events), bytes(self.out), tuple(self.offsets))

    def _emit(self, kind: VadEventKind, audio_ms: int) -> None:
        self.events.append(VadEvent(kind, audio_ms))
        self.offsets.append(len(self.out))

    def _forget_history(self) -> None:
        """Keep only the prefix padding (and one frame) of the ring: no candidate is pending."""
        del self.ring[: -self.keep]
        self.history = len(self.ring)

    def _inside(self, frame: bytes, speech: bool, start_ms: int, end_ms: int) -> None:
        """A frame of an utterance: kept unless deep in a pause; a long silence ends it."""
        state = self.state
        if speech or end_ms - state.last_speech_end_ms <= self.max_pause_kept_ms:
            self.out += frame
        if speech:
            if state.speculate_fired:
                self._emit("speech_resumed", start_ms)
                state.speculate_fired = False
            state.last_speech_end_ms = end_ms
            state.silence_ms = 0
            return
        state.silence_ms = end_ms - state.last_speech_end_ms
        speculate_after = self.speculate_after_ms
        if (
            speculate_after is not None
            and not state.speculate_fired
            and state.silence_ms >= speculate_after
        ):
            self._emit("speculate", state.last_speech_end_ms)
            state.speculate_fired = True
        if state.silence_ms >= self.silence_duration_ms:
            self._emit("speech_stopped", state.last_speech_end_ms)
            state.in_utterance = False
            state.speculate_fired = False
            state.silence_ms = 0
            state.idle_ms, state.idle_fired = 0, False

    def _tick_idle(self, end_ms: int) -> None:
        """Between utterances the idle timer runs, and fires once when it reaches the timeout."""
        state, timeout = self.state, self.idle_timeout_ms
        state.idle_ms += FRAME_MS
        if timeout is not None and not state.idle_fired and state.idle_ms >= timeout:
            self._emit("idle_timeout", end_ms)
            state.idle_fired = True

    def _follow_candidate(self, speech: bool) -> None:
        """Grow the pending candidate, drop it after a long gap or span, or open a new one."""
        state = self.state
        if state.candidate_start >= 0:
            if speech:
                state.candidate_speech_frames += 1
                state.candidate_gap_frames = 0
            else:
                state.candidate_gap_frames += 1
            span = (state.samples - state.candidate_start) // self.frame_samples
            if state.candidate_gap_frames > self.gap_frames or span > self.span_frames:
                state.candidate_start = -1  # not speech after all: its audio becomes history
        if state.candidate_start < 0:
            self._forget_history()
            if speech:
                state.candidate_start = state.samples - self.frame_samples
                state.candidate_speech_frames = 1
                state.candidate_gap_frames = 0
                self.history = len(self.ring) - self.frame_bytes

    def _start(self, end_ms: int) -> None:
        """The candidate holds enough speech: ``speech_started``, with its prefix and audio."""
        state, prefix_bytes = self.state, self.prefix_bytes
        state.speech_start_ms = state.candidate_start * 1000 // self.rate
        self._emit("speech_started", state.speech_start_ms)
        self.out += self.ring[: self.history][-prefix_bytes:] if prefix_bytes else b""
        self.out += self.ring[self.history :]
        state.in_utterance = True
        state.last_speech_end_ms = end_ms
        state.silence_ms = 0
        state.speculate_fired = False
        state.idle_ms, state.idle_fired = 0, False
        state.candidate_start, state.candidate_speech_frames, state.candidate_gap_frames = -1, 0, 0
        self._forget_history()


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
    samples = state.position_ms * config.sample_rate // 1000
    ring = state.ring[-keep:]
    return replace(
        state,
        **_NO_CANDIDATE,
        sample_rate=config.sample_rate,
        samples=samples,
        carry=b"",
        ring=ring,
    )


def end_utterance(state: VadState) -> VadState:
    """The client ended the utterance itself (``input_audio_buffer.commit`` or ``clear``): the
    VAD waits for new speech. Left inside the utterance, it would take the silence after the
    commit for the rest of it and end it again later: a phantom utterance, and a turn on
    silence. The ring stays: it is the prefix padding of whatever speech comes next."""
    return replace(state, **_NO_CANDIDATE, **_IDLE_RESET, **_BETWEEN_UTTERANCES)


def trim_ring(config: VadConfig, state: VadState) -> VadState:
    """``state`` with only as much of its ring as can still matter, for storing.

    Inside an utterance the ring is read for one thing only until ``speech_stopped``: its last
    frame, the voicing context of the next frame. From ``speech_stopped`` on, its last
    ``prefix_padding_ms`` is the prefix padding of the next candidate, whose first frame comes
    after it. Every frame fed from now on joins the ring and adds one frame to the silence
    (speech starts the silence again, later still), so while the silence is at least
    ``prefix_padding_ms`` and a frame short of the window, the prefix of any candidate after
    ``speech_stopped`` is made only of frames fed after this point, and the older ones can be
    dropped: the VAD's decisions and the audio it emits are those of the whole ring. The
    connection item, which stores the ring at every append, then carries no second copy of the
    last 300 ms in speech. Near the end of the window, and while a candidate is open, the ring
    is left whole; between utterances it is cut to the prefix (the walk's extra frame is the
    frame being walked, not needed between chunks).

    One exception, by design: a client's own commit (``end_utterance``) inside that part of
    an utterance leaves a ring of less than ``prefix_padding_ms``; speech that starts sooner
    than that after it gets the shorter prefix (the end of the utterance just committed, which
    belongs to that turn)."""
    if not state.in_utterance:
        if state.candidate_start >= 0:
            return state  # the candidate's audio, and its prefix before it
        # No candidate: the walk appends the next frame before it trims the ring to the
        # prefix and a frame, so between chunks the prefix alone (at least the last frame, the
        # voicing context) is all the ring needs.
        keep = max(config.prefix_bytes, config.frame_bytes)
        return replace(state, ring=state.ring[-keep:]) if len(state.ring) > keep else state
    if len(state.ring) <= config.frame_bytes:
        return state
    if state.silence_ms + config.prefix_padding_ms + FRAME_MS > config.silence_duration_ms:
        return state
    return replace(state, ring=state.ring[-config.frame_bytes :])


def reset_idle(state: VadState) -> VadState:
    """Restart the idle timer (e.g. when the tutor's reply has finished playing)."""
    return replace(state, **_IDLE_RESET)
