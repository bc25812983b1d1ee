// Read-along: when each word of a tutor reply is spoken, and what a cut reply kept.
//
// Pure code: no DOM, no audio. A ReadAlong is fed one reply's transcript deltas and the byte
// lengths of its audio deltas in the order they arrived, and answers two questions:
//
// * words(): each word with the millisecond of the reply's audio at which it starts and ends.
//   A reply is a run of sentences, and every audio delta belongs to the sentence whose text
//   came last. Inside a sentence a word is placed in proportion to its position among the
//   sentence's spoken characters (emojis are not spoken, so they weigh nothing): a word that
//   starts at character c of a sentence of L characters and A ms of audio starts at c / L * A.
//   While a sentence's audio is still arriving A is not known yet; it is taken as the larger of
//   the audio received and L characters at the pace of the sentences already complete.
// * heardText(audioEndMs): the reply as the server's history keeps it after
//   conversation.item.truncate at audioEndMs. This is the server's own rule, computed the same
//   way: whole sentences while they fit, then floor(words * played_ms / sentence_ms) words of
//   the sentence that was cut, marked with "…", each sentence's length rounded as the server
//   rounds it (half to even).
//
// Sentences: the server sends a sentence's text as one delta, then its audio. A provider that
// streams the words of a sentence interleaved with its audio sends many deltas per sentence, so
// a delta opens a new sentence only when the sentence before it has audio and its text ends
// like a sentence (., !, ?, … and friends, then closing brackets, quotes or emojis), and the
// delta has something to speak (the emojis sent after a sentence's audio stay with it).

export const OUTPUT_RATE = 24000;
const BYTES_PER_MS = (OUTPUT_RATE * 2) / 1000;
/** The server's estimate of speech pace, used until a sentence of this reply is complete. */
export const DEFAULT_MS_PER_CHAR = 65;

const PICTOGRAPH = /[\p{Extended_Pictographic}\u{1F3FB}-\u{1F3FF}\u{E0000}-\u{E007F}\u200d\ufe0e\ufe0f\u20e3]/gu;
const SENTENCE_END = /[.!?…。！？‼⁇⁈⁉][\s)\]}»”"'’」』\p{Extended_Pictographic}\u200d\ufe0e\ufe0f]*$/u;

/** Python's round(): half to even, as the server rounds a sentence's milliseconds. */
export function roundHalfEven(x) {
  const floor = Math.floor(x);
  const diff = x - floor;
  if (diff > 0.5) return floor + 1;
  if (diff < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

/** Python's str.split(): the words of a text, split on any whitespace. */
export function splitWords(text) {
  const trimmed = text.trim();
  return trimmed ? trimmed.split(/\s+/u) : [];
}

/** How many characters of `word` are spoken (emojis, their joiners and spaces are not). */
export function spokenLength(word) {
  return [...word.replace(PICTOGRAPH, "").replace(/\s/gu, "")].length;
}

/** Whether `text` ends like a finished sentence. */
export function endsSentence(text) {
  return SENTENCE_END.test(text.trimEnd()) || /\n\s*$/u.test(text);
}

/** How many characters of `text` are spoken: its spoken words joined by one space. */
function spokenChars(text) {
  const spoken = splitWords(text).map(spokenLength).filter((n) => n > 0);
  return spoken.reduce((a, b) => a + b, 0) + Math.max(0, spoken.length - 1);
}

export class ReadAlong {
  constructor({ msPerChar = DEFAULT_MS_PER_CHAR } = {}) {
    this.defaultMsPerChar = msPerChar;
    this.sentences = []; // [{text, bytes, closed}]
    this.finished = false;
  }

  /** A transcript delta, in arrival order. */
  addText(delta) {
    if (!delta) return;
    let last = this.sentences[this.sentences.length - 1];
    // Text with nothing to speak (the emojis the server sends after a sentence's audio)
    // belongs to the sentence before it.
    const opens = !last || (last.bytes > 0 && endsSentence(last.text) && spokenLength(delta) > 0);
    if (opens) {
      if (last) last.closed = true;
      last = { text: "", bytes: 0, closed: false };
      this.sentences.push(last);
    }
    last.text += delta;
  }

  /** An audio delta's length in bytes of 24 kHz PCM16, in arrival order. */
  addAudio(byteLength) {
    if (this.sentences.length === 0) this.sentences.push({ text: "", bytes: 0, closed: false });
    this.sentences[this.sentences.length - 1].bytes += byteLength;
  }

  /** The reply is over (no more text or audio): every sentence's length is known. */
  finish() {
    this.finished = true;
    for (const s of this.sentences) s.closed = true;
  }

  get text() {
    return this.sentences
      .map((s) => s.text.trim())
      .filter(Boolean)
      .join(" ");
  }

  /** Milliseconds of audio received (exact, as the player plays it). */
  get audioMs() {
    return this.sentences.reduce((sum, s) => sum + s.bytes, 0) / BYTES_PER_MS;
  }

  /** The pace of the complete sentences, ms per spoken character. */
  _msPerChar() {
    let ms = 0;
    let chars = 0;
    for (const s of this.sentences) {
      if (!s.closed) continue;
      ms += s.bytes / BYTES_PER_MS;
      chars += spokenChars(s.text);
    }
    return chars > 0 && ms > 0 ? ms / chars : this.defaultMsPerChar;
  }

  /** Every word with {text, sentence, index, startMs, endMs} on the reply's audio timeline. */
  words() {
    const out = [];
    const pace = this._msPerChar();
    let offset = 0;
    this.sentences.forEach((sentence, si) => {
      const words = splitWords(sentence.text);
      const lengths = words.map(spokenLength);
      const total = spokenChars(sentence.text);
      const received = sentence.bytes / BYTES_PER_MS;
      const duration = sentence.closed ? received : Math.max(received, total * pace);
      const at = (chars) => offset + (total > 0 ? (chars / total) * duration : 0);
      let chars = 0;
      words.forEach((word, wi) => {
        const startMs = at(Math.min(chars, total));
        if (lengths[wi] > 0) chars += lengths[wi] + 1;
        out.push({
          text: word,
          sentence: si,
          index: out.length,
          startMs,
          endMs: lengths[wi] > 0 ? at(Math.min(chars - 1, total)) : startMs,
        });
      });
      offset += duration;
    });
    return out;
  }

  /** What the server's history keeps of this reply when playback stopped at audioEndMs. */
  heardText(audioEndMs) {
    // As the server measures a sentence: whole samples, then milliseconds rounded half to even.
    const segments = this.sentences.map((s) => ({
      text: s.text.trim(),
      ms: roundHalfEven((Math.floor(s.bytes / 2) * 1000) / OUTPUT_RATE),
    }));
    const total = segments.reduce((sum, s) => sum + s.ms, 0);
    const end = Math.trunc(Math.max(0, Math.min(Math.floor(audioEndMs), total)));
    const heard = [];
    let elapsed = 0;
    for (const seg of segments) {
      if (elapsed + seg.ms <= end) {
        heard.push(seg.text);
        elapsed += seg.ms;
        continue;
      }
      const played = end - elapsed;
      if (played > 0 && seg.ms > 0) {
        const words = splitWords(seg.text);
        const keep = Math.floor((words.length * played) / seg.ms);
        if (keep > 0) heard.push(words.slice(0, keep).join(" ") + "…");
      }
      break;
    }
    return heard
      .map((t) => t.trim())
      .filter(Boolean)
      .join(" ");
  }
}
