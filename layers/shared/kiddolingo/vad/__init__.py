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

from .config import VadConfig
from .limits import DEFAULT_MAX_PAUSE_KEPT_MS, DEFAULT_MIN_SPEECH_MS, FRAME_MS, SAMPLE_RATES
from .scoring import frame_features, score_frames
from .segmenter import end_utterance, feed, rebase, reset_idle, trim_ring
from .state import VadEvent, VadEventKind, VadState, VadStep

__all__ = [
    "DEFAULT_MAX_PAUSE_KEPT_MS",
    "DEFAULT_MIN_SPEECH_MS",
    "FRAME_MS",
    "SAMPLE_RATES",
    "VadConfig",
    "VadEvent",
    "VadEventKind",
    "VadState",
    "VadStep",
    "end_utterance",
    "feed",
    "frame_features",
    "main",
    "rebase",
    "reset_idle",
    "score_frames",
    "trim_ring",
]


def main(argv: list[str] | None = None) -> int:
    """``python -m kiddolingo.vad --bench``: the CPU one chunk costs (``vad.bench``).

    The benchmark is imported here, when asked for, so the chunk path never loads it."""
    from .bench import main as bench_main

    return bench_main(argv)
