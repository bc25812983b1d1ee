// ChunkPolicy: when the page sends the microphone's audio, and in how large appends.
//
// Every input_audio_buffer.append is one API Gateway message, one Lambda invocation and one
// DynamoDB write, so the page's cost per hour is proportional to how many it sends. The server
// takes appends of any length and decides the same whatever the chunking (its VAD cuts one
// continuous stream into 20 ms frames); only *when* it decides depends on when the audio
// arrives. So the page sends 100 ms appends whenever the server may be deciding something from
// timing, and larger ones where nothing waits on them:
//
// * fine (every 100 ms block at once): when any frame is near the server VAD's threshold, at a
//   speech onset and until ONSET_FINE_MS of plain speech has been sent since the last frame
//   that was not (speech_started, the barge-in, the end of a pause inside speech), for
//   EARLY_FINE_MS after speech (the speculative turn starts 8 % into the silence window), and
//   wherever the silence window may end (speech_stopped): from the window after the last
//   plain speech less CROSSING_GUARD_MS to the window after the last frame near the threshold
//   plus CLOSING_MARGIN_MS. The server's speech ends between those two: it hears plain speech
//   as speech, and nothing under the threshold;
// * speech (up to SPEECH_HOLD_MS): blocks whose every frame is loud and vowel-like, after
//   ONSET_FINE_MS of such blocks; the first block that is not is sent at once with what was held, so the quiet
//   after speech reaches the server exactly when it would in 100 ms appends;
// * quiet (up to what fits one 32 KB message: 700 ms at 16 kHz): room noise while the tutor
//   talks or the child thinks, long after any speech, and the middle of the silence window
//   (nothing is decided there but a resumption); the first block with a frame near the
//   threshold is sent at once with what was held, so a speech onset never waits.
//
// What the server's VAD decides on (kiddolingo/vad.py): a 20 ms frame is speech when
// P(loud) x P(voiced) >= threshold, P(loud) a logistic of the frame's level over an adaptive
// noise floor (0.3 needs at least ~4.3 dB over it) and P(voiced) the pitch peak of the
// autocorrelation. The page tracks the same floor from the same frame levels, so "near the
// threshold" is "3 dB over the floor or more". It cannot run the voicing cue cheaply; it
// holds speech only when every frame is loud (12 dB over the floor) and vowel-like (few zero
// crossings: fricatives such as the "s" of "yes" cross zero thousands of times a second, and
// the server hears them as the quiet after speech).
//
// Pure: no DOM, no clock. infra/page_chunking.py is the benchmark's copy of it, checked
// against this file on the same audio by tests/test_page_chunking.py.

export const FRAME_MS = 20;
export const BLOCK_MS = 100;
/** API Gateway's largest client frame, and the unit it bills messages in. */
export const MESSAGE_UNIT_BYTES = 32 * 1024;
/** What an append's JSON takes besides its base64 audio (type, event_id; ~70 bytes), with room. */
export const ENVELOPE_BYTES = 256;
/** A frame this far over the noise floor may be speech to the server (it needs ~4.3 dB). */
export const MAYBE_DB = 3.0;
/** A frame this far over the floor, with few zero crossings, is plainly speech. */
export const CLEAR_DB = 12.0;
/** Zero crossings a second above which a loud frame is a fricative or noise, not a vowel. */
export const CLEAR_MAX_CROSSINGS_PER_S = 4000;
/** Speech is sent in 100 ms appends this long after its onset (speech_started needs 160 ms). */
export const ONSET_FINE_MS = 300;
/** The most clear speech held before it is sent. */
export const SPEECH_HOLD_MS = 300;
/** Fine appends go on this long past the silence window after the last frame near threshold. */
export const CLOSING_MARGIN_MS = 200;
/** Fine appends this long after the last frame near the threshold (the speculative turn). */
export const EARLY_FINE_MS = 300;
/** … and from this long before the silence window after the last plain speech has passed. */
export const CROSSING_GUARD_MS = 300;
/** Plain speech is this many frames in a row (a click or a knock is shorter). */
export const CLEAR_RUN_FRAMES = 3;

// The server VAD's noise floor tracker (kiddolingo/vad.py), per 20 ms frame in dBFS.
const FLOOR_INITIAL_DB = -60.0;
const FLOOR_MIN_DB = -70.0;
const FLOOR_MAX_DB = -10.0;
const FLOOR_DOWN = 0.3;
const FLOOR_UP = 0.02;
const FLOOR_WARMUP = 50;
const FLOOR_PRIOR_FRAMES = 3;
const POWER_EPS = 1e-12;

/** The longest append (whole 100 ms blocks) whose base64 and JSON fit one 32 KB message. */
export function maxAppendMs(sampleRate) {
  const blockBytes = ((sampleRate * BLOCK_MS) / 1000) * 2;
  const maxPcmBytes = Math.floor((MESSAGE_UNIT_BYTES - ENVELOPE_BYTES) / 4) * 3;
  return Math.max(1, Math.floor(maxPcmBytes / blockBytes)) * BLOCK_MS;
}

/**
 * Per 20 ms frame of PCM16 samples: its level in dBFS (mean square with the mean removed, as
 * the server's VAD measures it) and its zero crossings. Integer sums, so every implementation
 * gets the same numbers. A partial last frame is left out.
 */
export function frameFeatures(samples, sampleRate) {
  const n = (sampleRate * FRAME_MS) / 1000;
  const out = [];
  for (let start = 0; start + n <= samples.length; start += n) {
    let sum = 0;
    let squares = 0;
    let crossings = 0;
    let negative = samples[start] < 0;
    for (let i = start; i < start + n; i++) {
      const s = samples[i];
      sum += s;
      squares += s * s;
      const neg = s < 0;
      if (neg !== negative) crossings += 1;
      negative = neg;
    }
    const meanSquare = (squares * n - sum * sum) / (n * n) / (32768 * 32768);
    out.push({ levelDb: 10 * Math.log10(meanSquare + POWER_EPS), crossings });
  }
  return out;
}

export class ChunkPolicy {
  /**
   * sampleRate: the session's input rate. turnDetection: the session's server VAD settings
   * (silence_duration_ms, min_speech_ms), or null for manual commits (the server then decides
   * nothing from timing: every append may be long; the caller sends what is held before its
   * commit).
   */
  constructor({ sampleRate = 16000, turnDetection = {} } = {}) {
    this.sampleRate = sampleRate;
    this.frameSamples = (sampleRate * FRAME_MS) / 1000;
    this.maxQuietMs = maxAppendMs(sampleRate);
    this.floorDb = FLOOR_INITIAL_DB;
    this.floorFrames = 0;
    this.configure(turnDetection);
    // Milliseconds since the end of the last frame near the threshold (a long time at first).
    this.quietMs = Infinity;
    // Frames near the threshold since the page last was in long quiet (fewer than the server's
    // min_speech_ms cannot have started an utterance, so they need no closing window).
    this.activeFrames = 0;
    // Milliseconds of the current run of blocks of plain speech (every frame clear).
    this.clearMs = 0;
    // Milliseconds since the end of the last run of CLEAR_RUN_FRAMES plain speech frames.
    this.sinceClearMs = Infinity;
    this.clearRun = 0;
    this.heldMs = 0;
    this.heldKind = null; // "speech" | "quiet" | null
  }

  configure(turnDetection) {
    this.vad = turnDetection !== null && turnDetection !== undefined;
    const td = turnDetection || {};
    this.silenceMs = Number(td.silence_duration_ms ?? 1200);
    this.minSpeechFrames = Math.ceil(Number(td.min_speech_ms ?? 160) / FRAME_MS);
  }

  /** Forget what is held (a reconnect drops the buffered audio). */
  reset() {
    this.heldMs = 0;
    this.heldKind = null;
  }

  /**
   * The next block of captured audio (Int16Array, normally 100 ms). Returns true when the page
   * must send it now, together with every block held before it; false to hold it.
   */
  push(samples) {
    const blockMs = Math.round((samples.length * 1000) / this.sampleRate);
    let maybe = 0;
    let clear = 0;
    let trailingQuiet = 0;
    let sinceClear = null; // frames since the last plain-speech run ended in this block
    const frames = frameFeatures(samples, this.sampleRate);
    const maxCrossings = (CLEAR_MAX_CROSSINGS_PER_S * FRAME_MS) / 1000;
    for (const { levelDb, crossings } of frames) {
      const snr = levelDb - this.floorDb;
      if (sinceClear !== null) sinceClear += 1;
      const plain = snr >= CLEAR_DB && crossings <= maxCrossings;
      this.clearRun = plain ? this.clearRun + 1 : 0;
      if (this.clearRun >= CLEAR_RUN_FRAMES) sinceClear = 0;
      if (snr >= MAYBE_DB) {
        maybe += 1;
        trailingQuiet = 0;
        if (plain) clear += 1;
      } else {
        trailingQuiet += 1;
        // The floor learns from frames that cannot be speech, as the server's does.
        let rate = levelDb < this.floorDb ? FLOOR_DOWN : FLOOR_UP;
        if (this.floorFrames < FLOOR_WARMUP) {
          this.floorFrames += 1;
          rate = Math.max(rate, 1 / (this.floorFrames + FLOOR_PRIOR_FRAMES));
        }
        this.floorDb += rate * (levelDb - this.floorDb);
        this.floorDb = Math.min(FLOOR_MAX_DB, Math.max(FLOOR_MIN_DB, this.floorDb));
      }
    }
    const tailMs = blockMs - frames.length * FRAME_MS; // a partial frame at the end
    this.sinceClearMs = sinceClear === null ? this.sinceClearMs + blockMs : sinceClear * FRAME_MS + tailMs;
    const onsetDone = this.clearMs >= ONSET_FINE_MS; // before this block
    const allClear = frames.length > 0 && clear === frames.length;
    this.clearMs = allClear ? this.clearMs + blockMs : 0;
    if (maybe > 0) {
      this.quietMs = trailingQuiet * FRAME_MS + tailMs;
      this.activeFrames += maybe;
    } else {
      this.quietMs += blockMs;
    }
    let kind = null;
    if (!this.vad) {
      kind = "quiet"; // manual commits: nothing waits on the audio's timing
    } else if (allClear && onsetDone) {
      kind = "speech";
    } else if (maybe === 0) {
      const closed =
        this.quietMs >= this.silenceMs + CLOSING_MARGIN_MS ||
        this.activeFrames < this.minSpeechFrames;
      // Inside the silence window, between the speculation and where the window may end.
      const middle =
        this.quietMs >= EARLY_FINE_MS &&
        this.sinceClearMs <= this.silenceMs - CROSSING_GUARD_MS;
      if (closed || middle) kind = "quiet";
    }
    if (this.quietMs >= this.silenceMs + CLOSING_MARGIN_MS) this.activeFrames = 0;
    const limit = kind === "speech" ? SPEECH_HOLD_MS : this.maxQuietMs;
    if (kind === null || (this.heldKind !== null && this.heldKind !== kind)) {
      this.reset();
      return true;
    }
    this.heldKind = kind;
    this.heldMs += blockMs;
    if (this.heldMs >= limit) {
      this.reset();
      return true;
    }
    return false;
  }
}
