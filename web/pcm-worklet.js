// AudioWorklet: microphone samples (Float32 at the AudioContext's rate) → PCM16 little-endian
// mono at the session's input rate (16 kHz from kiddolingo-client.js), posted to the main thread
// in chunks of about `chunkMs` milliseconds (100 ms = 3 200 bytes at 16 kHz; base64 in JSON stays
// far under API Gateway's 32 KB frame limit).
//
// Resampling: when downsampling, an 8th-order Butterworth low-pass at 0.45 of the target rate
// (four biquads, RBJ cookbook; measured ~47 dB down at 12 kHz for a 16 kHz target in a 48 kHz
// context, so the microphone's 8-24 kHz does not fold into the speech band), then linear
// interpolation, with the filter state and the fractional read position carried from one
// 128-frame block to the next so chunks join without clicks.
//
// Messages from the main thread: {type: "reset"} drops whatever is buffered (used after a
// reconnect, so stale audio is never sent); {type: "flush"} posts the partial chunk now.

// The four biquad sections of an 8th-order Butterworth low-pass (Q of each pole pair).
function butterworth8(cutoff, rate) {
  return [0.5098, 0.6013, 0.9, 2.5629].map((q) => {
    const w0 = (2 * Math.PI * cutoff) / rate;
    const cos = Math.cos(w0);
    const alpha = Math.sin(w0) / (2 * q);
    const a0 = 1 + alpha;
    const b = (1 - cos) / 2 / a0;
    return { b0: b, b1: 2 * b, b2: b, a1: (-2 * cos) / a0, a2: (1 - alpha) / a0, z1: 0, z2: 0 };
  });
}

class PcmCaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate || 16000;
    this.chunkSamples = Math.max(1, Math.round((this.targetRate * (opts.chunkMs || 100)) / 1000));
    this.ratio = sampleRate / this.targetRate; // input samples per output sample
    // Anti-aliasing low-pass at 0.45 of the target rate, only when downsampling.
    this.sections = this.ratio > 1 ? butterworth8(0.45 * this.targetRate, sampleRate) : [];
    this.prev = 0; // last filtered input sample of the previous block
    this.pos = 0; // read position (in input samples) relative to the current block's start
    this.out = new Int16Array(this.chunkSamples);
    this.outLen = 0;
    this.sumSquares = 0;
    this.port.onmessage = (event) => {
      const type = event.data && event.data.type;
      if (type === "reset") {
        this.outLen = 0;
        this.sumSquares = 0;
      } else if (type === "flush") {
        this.post();
      }
    };
  }

  post() {
    if (this.outLen === 0) return;
    const pcm = this.out.slice(0, this.outLen);
    const rms = Math.sqrt(this.sumSquares / this.outLen) / 32768;
    this.port.postMessage({ type: "audio", pcm: pcm.buffer, samples: this.outLen, rms }, [
      pcm.buffer,
    ]);
    this.outLen = 0;
    this.sumSquares = 0;
  }

  push(value) {
    const clamped = value < -1 ? -1 : value > 1 ? 1 : value;
    const s = clamped < 0 ? Math.round(clamped * 32768) : Math.round(clamped * 32767);
    this.out[this.outLen++] = s;
    this.sumSquares += s * s;
    if (this.outLen === this.chunkSamples) this.post();
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0 || !input[0]) return true;
    const channel = input[0]; // mono: the first channel (getUserMedia gives mono speech)
    const n = channel.length;
    // Filter the block (keeps state across blocks).
    const filtered = Float32Array.from(channel);
    for (const f of this.sections) {
      let { z1, z2 } = f;
      for (let i = 0; i < n; i++) {
        const x = filtered[i];
        const y = f.b0 * x + z1; // transposed direct form II
        z1 = f.b1 * x - f.a1 * y + z2;
        z2 = f.b2 * x - f.a2 * y;
        filtered[i] = y;
      }
      f.z1 = z1;
      f.z2 = z2;
    }
    if (this.ratio === 1) {
      for (let i = 0; i < n; i++) this.push(filtered[i]);
      this.prev = filtered[n - 1];
      return true;
    }
    // Linear interpolation; index -1 is the previous block's last sample.
    let pos = this.pos;
    while (pos < n - 1 + 1e-9) {
      const i = Math.floor(pos);
      const frac = pos - i;
      const a = i < 0 ? this.prev : filtered[i];
      const b = i + 1 < n ? filtered[i + 1] : filtered[n - 1];
      this.push(a + (b - a) * frac);
      pos += this.ratio;
    }
    this.pos = pos - n;
    this.prev = filtered[n - 1];
    return true;
  }
}

registerProcessor("kiddolingo-pcm-capture", PcmCaptureProcessor);
