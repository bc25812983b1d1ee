// Hear it again: a tutor reply played once more from the audio the page already has.
//
// At normal speed the reply's PCM goes through the same Web Audio graph as live speech (the
// very samples that were played). Slower, it goes through an <audio> element fed a WAV blob:
// an AudioBufferSourceNode slowed down also drops the pitch, while a media element with
// `preservesPitch` keeps the voice's pitch at playbackRate 0.75.

import { pcmToBuffer, pcmToWav } from "./player.js";

export const SLOW_RATE = 0.75;

export class Replay extends EventTarget {
  constructor(player) {
    super();
    this.player = player;
    this.current = null; // {itemId, rate, source?, start?, audio?, url?, durationMs}
  }

  /** Play `pcm` (PCM16 bytes at 24 kHz) of `itemId` at `rate` (1, or slower with pitch kept). */
  play(itemId, pcm, { rate = 1 } = {}) {
    this.stop();
    if (pcm.length < 2) return;
    const current = { itemId, rate, durationMs: (pcm.length / 2 / 24000) * 1000 };
    if (rate === 1) {
      const ctx = this.player.ctx;
      const source = ctx.createBufferSource();
      source.buffer = pcmToBuffer(ctx, pcm);
      source.connect(this.player.gain);
      current.start = ctx.currentTime + this.player.leadS;
      current.source = source;
      source.onended = () => this._ended(current);
      source.start(current.start);
    } else {
      current.url = URL.createObjectURL(pcmToWav(pcm));
      const audio = new Audio();
      audio.preservesPitch = true;
      audio.defaultPlaybackRate = rate;
      audio.playbackRate = rate;
      audio.src = current.url;
      current.audio = audio;
      audio.onended = () => this._ended(current);
      audio.play().catch(() => this._ended(current));
    }
    this.current = current;
    this._emit(current, true);
  }

  /** The replayed item's id, or null. */
  get itemId() {
    return this.current ? this.current.itemId : null;
  }

  /** Where the replay is in its reply's audio, in ms (null when nothing is replayed). */
  positionMs() {
    const c = this.current;
    if (!c) return null;
    if (c.audio) return c.audio.currentTime * 1000;
    return Math.min(Math.max((this.player.now() - c.start) * 1000, 0), c.durationMs);
  }

  stop() {
    const c = this.current;
    if (!c) return;
    this.current = null;
    if (c.source) {
      c.source.onended = null;
      try {
        c.source.stop();
      } catch (_) {
        /* not started */
      }
      c.source.disconnect();
    }
    if (c.audio) {
      c.audio.onended = null;
      c.audio.pause();
      URL.revokeObjectURL(c.url);
    }
    this._emit(c, false);
  }

  _ended(c) {
    if (this.current !== c) return;
    this.current = null;
    if (c.url) URL.revokeObjectURL(c.url);
    this._emit(c, false);
  }

  _emit(c, playing) {
    this.dispatchEvent(new CustomEvent("replay", { detail: { itemId: c.itemId, rate: c.rate, playing } }));
  }
}
