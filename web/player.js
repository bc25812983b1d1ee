// Gapless playback of 24 kHz PCM16 deltas through Web Audio.
//
// Every delta becomes an AudioBufferSourceNode scheduled to start exactly where the previous one
// ends (`nextTime`), so chunks play back to back without gaps or overlaps whatever their size.
// The player keeps, per assistant item, the segments it scheduled, so it can tell how many
// milliseconds of that item were actually played at any moment (for conversation.item.truncate
// after a barge-in): the part of each segment that lies before `currentTime - outputLatency`.

// The rate of every output audio delta: the server's OUTPUT_RATE (layers/shared/kiddolingo/protocol.py).
export const OUTPUT_RATE = 24000;

/** An AudioBuffer of PCM16 little-endian mono bytes (an even number of them) at 24 kHz. */
export function pcmToBuffer(ctx, bytes) {
  const samples = bytes.length >> 1;
  const view = new DataView(bytes.buffer, bytes.byteOffset, samples * 2);
  const buffer = ctx.createBuffer(1, samples, OUTPUT_RATE);
  const channel = buffer.getChannelData(0);
  for (let i = 0; i < samples; i++) channel[i] = view.getInt16(i * 2, true) / 32768;
  return buffer;
}

/** A WAV file (a Blob) of PCM16 little-endian mono bytes at 24 kHz, for an <audio> element. */
export function pcmToWav(bytes) {
  const header = new DataView(new ArrayBuffer(44));
  const ascii = (at, text) => [...text].forEach((c, i) => header.setUint8(at + i, c.charCodeAt(0)));
  ascii(0, "RIFF");
  header.setUint32(4, 36 + bytes.length, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  header.setUint32(16, 16, true); // the fmt chunk's size
  header.setUint16(20, 1, true); // PCM
  header.setUint16(22, 1, true); // mono
  header.setUint32(24, OUTPUT_RATE, true);
  header.setUint32(28, OUTPUT_RATE * 2, true); // bytes per second
  header.setUint16(32, 2, true); // bytes per frame
  header.setUint16(34, 16, true); // bits per sample
  ascii(36, "data");
  header.setUint32(40, bytes.length, true);
  return new Blob([header.buffer, bytes], { type: "audio/wav" });
}

export class PcmPlayer extends EventTarget {
  constructor(audioContext, { leadMs = 60 } = {}) {
    super();
    this.ctx = audioContext;
    this.leadS = leadMs / 1000;
    this.gain = this.ctx.createGain();
    this.gain.connect(this.ctx.destination);
    this.nextTime = 0;
    this.items = new Map(); // itemId -> {segments: [{start, duration, source}], carry, stoppedMs}
    this.sources = new Set();
    this.lastItemId = null;
    this._drainTimer = null;
  }

  /** Seconds of audio that reached the speakers: the context clock minus the output latency. */
  now() {
    const latency = this.ctx.outputLatency || 0;
    return this.ctx.currentTime - latency;
  }

  _item(itemId) {
    let item = this.items.get(itemId);
    if (!item) {
      item = { segments: [], carry: null, stoppedMs: null, scheduledMs: 0 };
      this.items.set(itemId, item);
    }
    return item;
  }

  /** Queue PCM16 bytes (Uint8Array) of `itemId`. */
  enqueue(itemId, bytes) {
    const item = this._item(itemId);
    if (item.stoppedMs !== null) return; // truncated: late deltas are dropped
    let data = bytes;
    if (item.carry !== null) {
      const joined = new Uint8Array(bytes.length + 1);
      joined[0] = item.carry;
      joined.set(bytes, 1);
      data = joined;
      item.carry = null;
    }
    if (data.length % 2 === 1) {
      item.carry = data[data.length - 1];
      data = data.subarray(0, data.length - 1);
    }
    if (data.length === 0) return;
    const buffer = pcmToBuffer(this.ctx, data);
    const source = this.ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(this.gain);
    const earliest = this.ctx.currentTime + this.leadS;
    const start = this.nextTime > this.ctx.currentTime ? this.nextTime : earliest;
    source.start(start);
    const segment = { start, duration: buffer.duration, source };
    item.segments.push(segment);
    item.scheduledMs += buffer.duration * 1000;
    this.sources.add(source);
    source.onended = () => {
      this.sources.delete(source);
      this._checkDrained();
    };
    this.nextTime = start + buffer.duration;
    const wasIdle = this.lastItemId === null || !this.isPlaying(1);
    this.lastItemId = itemId;
    if (wasIdle) this.dispatchEvent(new CustomEvent("playing", { detail: { itemId } }));
  }

  /** Milliseconds of `itemId` played so far (frozen once stopped). */
  playedMs(itemId) {
    const item = this.items.get(itemId);
    if (!item) return 0;
    if (item.stoppedMs !== null) return item.stoppedMs;
    return Math.round(this.positionMs(itemId));
  }

  /** Where the listener is in `itemId`'s audio, in ms (not rounded; frozen once stopped). */
  positionMs(itemId) {
    const item = this.items.get(itemId);
    if (!item) return 0;
    if (item.stoppedMs !== null) return item.stoppedMs;
    const now = this.now();
    let played = 0;
    for (const seg of item.segments) {
      played += Math.min(Math.max(now - seg.start, 0), seg.duration);
    }
    return played * 1000;
  }

  scheduledMs(itemId) {
    const item = this.items.get(itemId);
    return item ? Math.round(item.scheduledMs) : 0;
  }

  /** Total milliseconds played, over all items. */
  totalPlayedMs() {
    let total = 0;
    for (const id of this.items.keys()) total += this.playedMs(id);
    return total;
  }

  /** True while scheduled audio remains (`slackMs` of tolerance). */
  isPlaying(slackMs = 0) {
    return this.nextTime - slackMs / 1000 > this.ctx.currentTime;
  }

  /** The item whose audio is playing (or last played), if any. */
  currentItemId() {
    return this.lastItemId;
  }

  /**
   * Stop at once (barge-in): silence every scheduled source, freeze each item's played ms.
   * Returns {itemId, playedMs} of the item that was playing last (null if nothing).
   */
  stop() {
    const current = this.lastItemId;
    for (const [, item] of this.items) {
      if (item.stoppedMs === null && item.segments.length > 0) {
        const now = this.now();
        let played = 0;
        for (const seg of item.segments) played += Math.min(Math.max(now - seg.start, 0), seg.duration);
        item.stoppedMs = Math.round(played * 1000);
      }
    }
    for (const source of this.sources) {
      try {
        source.onended = null;
        source.stop();
        source.disconnect();
      } catch (_) {
        /* already stopped */
      }
    }
    this.sources.clear();
    this.nextTime = 0;
    this._checkDrained();
    if (current === null) return null;
    return { itemId: current, playedMs: this.playedMs(current) };
  }

  _checkDrained() {
    if (this.sources.size === 0) {
      this.dispatchEvent(new CustomEvent("drained", { detail: { itemId: this.lastItemId } }));
    }
  }
}
