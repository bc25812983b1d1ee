// KiddoLingoClient: the reusable browser client of KiddoLingo Voice (plain ES module, no build).
//
// It speaks the server's subset of the OpenAI Realtime API (GA event names) over one WebSocket:
//
//   const client = new KiddoLingoClient({ url: "ws://127.0.0.1:8080/", token, targetLanguage: "Spanish" });
//   client.addEventListener("state", (e) => console.log(e.detail.state));
//   await client.connect();
//   await client.startMicrophone();   // from a user gesture (button click)
//
// What it does:
// * authenticates with the token as a `bearer.<jwt>` entry of Sec-WebSocket-Protocol next to
//   "kiddolingo.v1" (or as ?token= with tokenTransport: "query");
// * sends session.update first: PCM16 input at 16 kHz (what Whisper hears; a third less audio
//   to send, store and upload than 24 kHz), server VAD with the children's defaults, the target
//   language;
// * captures the microphone (echo cancellation, noise suppression, auto gain) through an
//   AudioWorklet that converts it to PCM16 at 16 kHz in 100 ms blocks, and sends them as
//   input_audio_buffer.append: one block at a time wherever the server decides something from
//   timing (an onset, the quiet after speech, the silence window), several in one append in
//   clear speech (300 ms) and in long quiet (up to 700 ms, one 32 KB message): fewer messages,
//   the same decisions at the same moments (chunk-policy.js); every event it sends is
//   numbered "evt#<n>" from 1 per WebSocket connection, so the server keeps their order, and
//   the audio held for a larger append goes out before any other event;
// * plays response.output_audio.delta gaplessly (see player.js), tracking per item how many ms
//   were actually played;
// * barge-in: on input_audio_buffer.speech_started it stops playback at once and sends
//   conversation.item.truncate {item_id, content_index: 0, audio_end_ms: <played ms>};
// * keeps each reply's audio, so replay(itemId) plays it again (slower with {slow: true})
//   without asking the server, and each reply's read-along timing (read-along.js);
// * reconnects by itself with exponential backoff (1 s doubling, capped at 10 s), resuming the
//   same session (?session_id=<id from session.created>); audio captured while disconnected is
//   dropped, never sent stale.
//
// Events (CustomEvent, details in brackets):
//   "connection" {state: "connecting" | "open" | "reconnecting" | "closed"}
//   "state"      {state: "idle" | "connecting" | "ready" | "listening" | "thinking" | "speaking"
//                        | "reconnecting"}   (what the page shows)
//   "session"    {id, session}
//   "reconnecting" {attempt, delayMs}, "reconnected" {count, sessionId}
//   "conversation" {items}  (the conversation changed: [{role, itemId, text, done, interrupted}];
//                   an assistant item also has readAlong (read-along.js) and cutMs: where a
//                   barge-in stopped it, or null; readAlong.heardText(cutMs) is what the
//                   server's history keeps of it)
//   "replay" {itemId, rate, playing}  (hear it again: replay(itemId, {slow}))
//   "user-transcript" {itemId, text}, "assistant-transcript" {itemId, text, delta, done}
//   "speech-started", "speech-stopped", "interrupted" {itemId, playedMs}
//   "microphone" {active}, "error" {kind: "microphone" | "connection" | "server" | "auth", code, message}
//   "server-event" {event}  (every server event, raw)

import { ChunkPolicy } from "./chunk-policy.js";
import { PcmPlayer } from "./player.js";
import { ReadAlong } from "./read-along.js";
import { Replay, SLOW_RATE } from "./replay.js";

export const PROTOCOL = "kiddolingo.v1";

/**
 * Server VAD tuned for children (the product brief): soft voices, long pauses.
 * A copy of the server's defaults, kept so a page can show them before it connects. The server's
 * own live in layers/shared/kiddolingo/vad_limits.py (CHILD_VAD_DEFAULTS), with the ranges a
 * session.update may set; the session.created event carries the values a session starts with.
 */
export const CHILD_VAD_DEFAULTS = Object.freeze({
  type: "server_vad",
  threshold: 0.3,
  prefix_padding_ms: 300,
  silence_duration_ms: 1200,
  create_response: true,
  interrupt_response: true,
});

export function bytesToBase64(bytes) {
  let binary = "";
  const step = 0x8000;
  for (let i = 0; i < bytes.length; i += step) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + step));
  }
  return btoa(binary);
}

export function base64ToBytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** Reconnection delay before attempt `attempt` (0-based): 1 s doubling, capped at 10 s. */
export function backoffDelayMs(attempt, initialDelayMs = 1000, maxDelayMs = 10000) {
  return Math.min(initialDelayMs * 2 ** attempt, maxDelayMs);
}

export class KiddoLingoClient extends EventTarget {
  constructor(options = {}) {
    super();
    if (!options.url) throw new Error("KiddoLingoClient needs a url (ws://… or wss://…)");
    this.url = options.url;
    this.token = options.token || null;
    this.tokenTransport = options.tokenTransport || "subprotocol";
    this.targetLanguage = options.targetLanguage || "Spanish";
    this.learnerAge = options.learnerAge || null;
    this.inputRate = options.inputRate || 16000; // 24000 also accepted
    this.chunkMs = options.chunkMs || 100;
    // Larger appends where nothing waits on them (chunk-policy.js); false: every block at once.
    this.largerAppends = options.largerAppends !== false;
    this.turnDetection =
      options.turnDetection === null ? null : { ...CHILD_VAD_DEFAULTS, ...(options.turnDetection || {}) };
    this.voice = options.voice || null;
    this.instructions = options.instructions || null;
    this.initialDelayMs = (options.reconnect && options.reconnect.initialDelayMs) || 1000;
    this.maxDelayMs = (options.reconnect && options.reconnect.maxDelayMs) || 10000;
    this.WebSocketImpl = options.WebSocketImpl || WebSocket;
    this.workletUrl = options.workletUrl || new URL("./pcm-worklet.js", import.meta.url);

    this.ws = null;
    this.connectionState = "closed";
    this.sessionId = options.sessionId || null;
    this.everOpened = false;
    this.reconnects = 0; // successful re-opens after the first connection
    this.reconnectAttempts = 0; // attempts since the last successful open
    this.totalReconnectAttempts = 0;
    this.intentionalClose = false;
    this.reconnectTimer = null;
    // Every event is numbered (event_id "evt#<n>", n = 1, 2, … per WebSocket connection): the
    // server then applies them in the order they were sent, whatever order they arrive in.
    this.eventSeq = 0;
    this.appendsSent = 0;
    this.blocksSent = 0; // 100 ms blocks of microphone audio sent, in appendsSent appends
    this.chunksDropped = 0;
    this.chunkPolicy = new ChunkPolicy({ sampleRate: this.inputRate, turnDetection: this.turnDetection });
    this.heldBlocks = []; // captured blocks waiting for a larger append (Int16Array each)
    this.eventsReceived = 0;

    this.ctx = null;
    this.player = null;
    this.stream = null;
    this.sourceNode = null;
    this.workletNode = null;
    this.sinkNode = null;
    this.micActive = false;
    this.micLevel = 0;

    this.userSpeaking = false;
    this.awaitingResponse = false;
    this.responseInProgress = false;
    this.responseAudioDone = true;
    this.currentAssistantItem = null;
    this.truncatedItems = new Set();
    this.items = []; // [{role, itemId, text, done, interrupted}] (+ read-along fields, assistant)
    this.keepAudioReplies = options.keepAudioReplies || 20; // replies whose audio is kept
    this.replayer = null;
    this.uiState = "idle";
    this._stateTimer = null;
  }

  // ------------------------------------------------------------------ connection

  /** Open the WebSocket (resolves once open; keeps reconnecting by itself after that). */
  connect() {
    this.intentionalClose = false;
    if (this.ws && (this.ws.readyState === 0 || this.ws.readyState === 1)) {
      return this._waitOpen();
    }
    this._open();
    if (!this._stateTimer) this._stateTimer = setInterval(() => this._updateState(), 200);
    return this._waitOpen();
  }

  _waitOpen() {
    if (this.connectionState === "open") return Promise.resolve();
    return new Promise((resolve) => {
      const onConnection = (event) => {
        if (event.detail.state === "open") {
          this.removeEventListener("connection", onConnection);
          resolve();
        }
      };
      this.addEventListener("connection", onConnection);
    });
  }

  /** Close for good (no reconnection). */
  close() {
    this.intentionalClose = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.stopMicrophone();
    if (this.ws) this.ws.close(1000, "bye");
    if (this.player) this.player.stop();
    clearInterval(this._stateTimer);
    this._stateTimer = null;
    this._setConnection("closed");
  }

  _buildUrl() {
    const url = new URL(this.url, typeof location !== "undefined" ? location.href : undefined);
    if (this.sessionId) url.searchParams.set("session_id", this.sessionId);
    if (this.token && this.tokenTransport === "query") url.searchParams.set("token", this.token);
    return url.toString();
  }

  _open() {
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const protocols = [PROTOCOL];
    if (this.token && this.tokenTransport === "subprotocol") protocols.push(`bearer.${this.token}`);
    let ws;
    try {
      ws = new this.WebSocketImpl(this._buildUrl(), protocols);
    } catch (err) {
      this._emit("error", { kind: "connection", code: "bad_url", message: String(err) });
      this._scheduleReconnect();
      return;
    }
    this.ws = ws;
    this.eventSeq = 0;
    this._setConnection(this.everOpened ? "reconnecting" : "connecting");
    ws.onopen = () => {
      if (this.ws !== ws) return;
      const reconnected = this.everOpened;
      this.everOpened = true;
      this.reconnectAttempts = 0;
      // Whatever the worklet buffered while we were away is stale: drop it.
      if (this.workletNode) this.workletNode.port.postMessage({ type: "reset" });
      this.heldBlocks = [];
      this.chunkPolicy.reset();
      this._sendSessionUpdate();
      this._setConnection("open");
      if (reconnected) {
        this.reconnects += 1;
        this._emit("reconnected", { count: this.reconnects, sessionId: this.sessionId });
      }
    };
    ws.onmessage = (message) => {
      if (this.ws !== ws) return;
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (_) {
        return;
      }
      this._onServerEvent(event);
    };
    ws.onerror = () => {
      /* a close event follows */
    };
    ws.onclose = (close) => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.userSpeaking = false;
      if (this.intentionalClose) {
        this._setConnection("closed");
        return;
      }
      if (close.code === 1001 && !this.micActive) {
        // The gateway's idle timeout while nobody talks: reconnect on the next start instead.
        this._setConnection("closed");
        return;
      }
      if (this.everOpened) {
        this._emit("error", {
          kind: "connection",
          code: "connection_lost",
          message: `connection lost (${close.code})`,
        });
      } else {
        this._emit("error", {
          kind: this.token ? "connection" : "auth",
          code: "connect_failed",
          message: `could not connect (${close.code})`,
        });
      }
      this._scheduleReconnect();
    };
  }

  _scheduleReconnect() {
    const delayMs = backoffDelayMs(this.reconnectAttempts, this.initialDelayMs, this.maxDelayMs);
    this.reconnectAttempts += 1;
    this.totalReconnectAttempts += 1;
    this._setConnection("reconnecting");
    this._emit("reconnecting", { attempt: this.reconnectAttempts, delayMs });
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = setTimeout(() => this._open(), delayMs);
  }

  _setConnection(state) {
    if (this.connectionState === state) return;
    this.connectionState = state;
    this._emit("connection", { state });
    this._updateState();
  }

  /** Send one client event (dropped when not connected). Returns true if sent. */
  send(event) {
    if (!this.ws || this.ws.readyState !== 1) return false;
    // Audio captured before this event is sent before it (a commit covers exactly it).
    if (event.type !== "input_audio_buffer.append") this._sendHeldAudio();
    this.eventSeq += 1;
    this.ws.send(JSON.stringify({ ...event, event_id: `evt#${this.eventSeq}` }));
    return true;
  }

  _sessionPayload() {
    const session = {
      type: "realtime",
      audio: {
        input: {
          format: { type: "audio/pcm", rate: this.inputRate },
          turn_detection: this.turnDetection,
        },
      },
      tutor: { target_language: this.targetLanguage },
    };
    if (this.learnerAge) session.tutor.learner_age = this.learnerAge;
    if (this.voice) session.audio.output = { voice: this.voice };
    if (this.instructions) session.instructions = this.instructions;
    return session;
  }

  _sendSessionUpdate() {
    this.send({ type: "session.update", session: this._sessionPayload() });
  }

  /** Change the target language (sent at once when connected). */
  setTargetLanguage(language) {
    this.targetLanguage = language;
    this.send({ type: "session.update", session: { tutor: { target_language: language } } });
  }

  // ------------------------------------------------------------------ audio

  /** Create/resume the AudioContext: call from a user gesture (autoplay policy). */
  prepareAudio() {
    if (!this.ctx) {
      const Ctx = window.AudioContext || window.webkitAudioContext;
      this.ctx = new Ctx({ latencyHint: "interactive" });
      this.player = new PcmPlayer(this.ctx);
      this.player.addEventListener("drained", () => this._updateState());
      this.player.addEventListener("playing", () => this._updateState());
      this.replayer = new Replay(this.player);
      this.replayer.addEventListener("replay", (e) => {
        this._emit("replay", e.detail);
        this._updateState();
      });
    }
    if (this.ctx.state === "suspended") this.ctx.resume();
    return this.ctx;
  }

  async startMicrophone() {
    if (this.micActive) return;
    this.prepareAudio();
    if (this.connectionState === "closed" && !this.intentionalClose) this.connect();
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        audio: {
          echoCancellation: true,
          noiseSuppression: true,
          autoGainControl: true,
          channelCount: 1,
        },
      });
    } catch (err) {
      const name = (err && err.name) || "";
      const code =
        name === "NotAllowedError" || name === "SecurityError"
          ? "microphone_denied"
          : name === "NotFoundError" || name === "OverconstrainedError"
            ? "microphone_missing"
            : "microphone_error";
      this._emit("error", { kind: "microphone", code, message: String((err && err.message) || err) });
      throw err;
    }
    await this.ctx.resume();
    if (!this._workletLoaded) {
      await this.ctx.audioWorklet.addModule(this.workletUrl);
      this._workletLoaded = true;
    }
    this.stream = stream;
    this.sourceNode = this.ctx.createMediaStreamSource(stream);
    this.workletNode = new AudioWorkletNode(this.ctx, "kiddolingo-pcm-capture", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      channelCount: 1,
      channelCountMode: "explicit",
      processorOptions: { targetRate: this.inputRate, chunkMs: this.chunkMs },
    });
    // A muted sink keeps the worklet pulled by the graph without playing the microphone back.
    this.sinkNode = this.ctx.createGain();
    this.sinkNode.gain.value = 0;
    this.workletNode.connect(this.sinkNode).connect(this.ctx.destination);
    this.workletNode.port.onmessage = (message) => this._onCapturedChunk(message.data);
    this.sourceNode.connect(this.workletNode);
    this.micActive = true;
    this._emit("microphone", { active: true });
    this._updateState();
  }

  stopMicrophone() {
    if (!this.micActive) return;
    this.micActive = false;
    if (this.workletNode) {
      this.workletNode.port.onmessage = null;
      this.workletNode.disconnect();
    }
    if (this.sourceNode) this.sourceNode.disconnect();
    if (this.sinkNode) this.sinkNode.disconnect();
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.workletNode = this.sourceNode = this.sinkNode = this.stream = null;
    this._sendHeldAudio();
    if (this.userSpeaking && this.turnDetection) {
      // The child stopped mid-sentence: end the turn now rather than wait for silence.
      this.send({ type: "input_audio_buffer.commit" });
      this.userSpeaking = false;
    }
    this._emit("microphone", { active: false });
    this._updateState();
  }

  _onCapturedChunk(data) {
    if (!data || data.type !== "audio") return;
    this.micLevel = data.rms || 0;
    if (!this.ws || this.ws.readyState !== 1 || this.connectionState !== "open") {
      this.chunksDropped += 1 + this.heldBlocks.length; // captured while disconnected: never sent stale
      this.heldBlocks = [];
      this.chunkPolicy.reset();
      return;
    }
    const block = new Int16Array(data.pcm);
    this.heldBlocks.push(block);
    if (this.largerAppends && !this.chunkPolicy.push(block)) return;
    this._sendHeldAudio();
  }

  /** The session's settings as the server holds them: when fine appends matter. */
  _configureChunking(session) {
    const input = session && session.audio && session.audio.input;
    if (!input) return;
    if (input.turn_detection !== undefined) this.chunkPolicy.configure(input.turn_detection);
  }

  /** Send the captured blocks held for a larger append, as one append. */
  _sendHeldAudio() {
    const blocks = this.heldBlocks;
    if (blocks.length === 0) return;
    this.heldBlocks = [];
    this.chunkPolicy.reset();
    const samples = blocks.reduce((n, b) => n + b.length, 0);
    const pcm = new Int16Array(samples);
    let at = 0;
    for (const b of blocks) {
      pcm.set(b, at);
      at += b.length;
    }
    const audio = bytesToBase64(new Uint8Array(pcm.buffer));
    if (this.send({ type: "input_audio_buffer.append", audio })) {
      this.appendsSent += 1;
      this.blocksSent += blocks.length;
    }
  }

  /** Milliseconds of assistant audio played so far (all items). */
  playedMs() {
    return this.player ? this.player.totalPlayedMs() : 0;
  }

  // ------------------------------------------------------------------ server events

  _onServerEvent(event) {
    this.eventsReceived += 1;
    this._emit("server-event", { event });
    const type = event.type;
    if (!type) {
      // API Gateway's own messages: {"message": "Internal server error", ...}
      if (event.message) {
        this._emit("error", { kind: "server", code: "gateway", message: String(event.message) });
      }
      return;
    }
    switch (type) {
      case "session.created": {
        const id = event.session && event.session.id;
        if (id) this.sessionId = id;
        this._configureChunking(event.session);
        this._emit("session", { id, session: event.session });
        break;
      }
      case "session.updated":
        this._configureChunking(event.session);
        break;
      case "input_audio_buffer.speech_started":
        this.userSpeaking = true;
        this.awaitingResponse = false;
        if (this.replayer) this.replayer.stop();
        this._bargeIn();
        this._emit("speech-started", event);
        break;
      case "input_audio_buffer.speech_stopped":
        this.userSpeaking = false;
        this._awaitResponse();
        this._emit("speech-stopped", event);
        break;
      case "input_audio_buffer.committed":
        this._awaitResponse();
        this._upsertItem("user", event.item_id, { text: "", done: false });
        break;
      case "conversation.item.input_audio_transcription.completed": {
        const item = this._upsertItem("user", event.item_id, {
          text: event.transcript || "",
          done: true,
        });
        this._emit("user-transcript", { itemId: item.itemId, text: item.text });
        break;
      }
      case "response.created":
        this.responseInProgress = true;
        this.responseAudioDone = false;
        this.awaitingResponse = true;
        break;
      case "response.output_audio_transcript.delta": {
        const item = this._assistantItem(event.item_id);
        item.text += event.delta || "";
        item.readAlong.addText(event.delta || "");
        this._emitConversation();
        this._emit("assistant-transcript", {
          itemId: item.itemId,
          text: item.text,
          delta: event.delta || "",
          done: false,
        });
        break;
      }
      case "response.output_audio_transcript.done": {
        const item = this._assistantItem(event.item_id);
        item.done = true;
        if (typeof event.transcript === "string" && !item.interrupted) item.text = event.transcript;
        this._emitConversation();
        this._emit("assistant-transcript", { itemId: item.itemId, text: item.text, delta: "", done: true });
        break;
      }
      case "response.output_audio.delta": {
        const itemId = event.item_id;
        const bytes = event.delta ? base64ToBytes(event.delta) : new Uint8Array(0);
        // Audio after a barge-in is not played, but it still counts: the server's history
        // measures each sentence by all the audio it sent.
        const item = this._assistantItem(itemId);
        item.readAlong.addAudio(bytes.length);
        if (item.pcm) item.pcm.push(bytes);
        this._emitConversation();
        if (this.truncatedItems.has(itemId)) break;
        this.currentAssistantItem = itemId;
        this.awaitingResponse = false;
        if (this.replayer) this.replayer.stop(); // the tutor speaks: a replay gives way
        if (this.player && bytes.length) this.player.enqueue(itemId, bytes);
        break;
      }
      case "response.output_audio.done":
        this.responseAudioDone = true;
        if (event.item_id) this._assistantItem(event.item_id).readAlong.finish();
        this._emitConversation();
        break;
      case "conversation.item.truncated": {
        const item = this.items.find((it) => it.itemId === event.item_id);
        if (item && item.readAlong && typeof event.audio_end_ms === "number") {
          this._cut(item, event.audio_end_ms);
        }
        break;
      }
      case "response.done": {
        for (const item of this.items) if (item.readAlong) item.readAlong.finish();
        this._emitConversation();
        this.responseInProgress = false;
        this.responseAudioDone = true;
        this.awaitingResponse = false;
        const status = event.response && event.response.status;
        if (status === "failed") {
          this._emit("error", {
            kind: "server",
            code: "response_failed",
            message: "The tutor could not answer this time.",
          });
        }
        break;
      }
      case "input_audio_buffer.cleared":
        this.awaitingResponse = false;
        break;
      case "error": {
        this.awaitingResponse = false;
        const error = event.error || {};
        this._emit("error", {
          kind: "server",
          code: error.code || "error",
          message: error.message || "Something went wrong.",
        });
        break;
      }
      default:
        break;
    }
    this._updateState();
  }

  /** The child started talking: stop the tutor at once and tell the server what was heard. */
  _bargeIn() {
    if (!this.player) return;
    const itemId = this.currentAssistantItem;
    const playing = this.player.isPlaying();
    if (!itemId || this.truncatedItems.has(itemId)) {
      if (playing) this.player.stop();
      return;
    }
    // Everything of a finished response was played (give or take rounding): nothing to cut.
    const heardAll =
      !playing &&
      this.responseAudioDone &&
      this.player.playedMs(itemId) >= this.player.scheduledMs(itemId) - 20;
    if (heardAll) return;
    this.player.stop();
    const playedMs = this.player.playedMs(itemId);
    this.truncatedItems.add(itemId);
    this.send({
      type: "conversation.item.truncate",
      item_id: itemId,
      content_index: 0,
      audio_end_ms: playedMs,
    });
    const item = this.items.find((it) => it.itemId === itemId);
    if (item) {
      item.interrupted = true;
      if (item.readAlong) this._cut(item, playedMs);
    }
    this._emitConversation();
    this._emit("interrupted", { itemId, playedMs });
  }

  _awaitResponse() {
    this.awaitingResponse = true;
    // Never stay "thinking" forever if no response comes (e.g. the turn was too short).
    clearTimeout(this._awaitTimer);
    this._awaitTimer = setTimeout(() => {
      if (!this.responseInProgress) {
        this.awaitingResponse = false;
        this._updateState();
      }
    }, 15000);
  }

  /** The assistant item `itemId`, with its read-along timing and the audio kept for replays. */
  _assistantItem(itemId) {
    const item = this._upsertItem("assistant", itemId, {});
    if (!item.readAlong) {
      item.readAlong = new ReadAlong();
      item.cutMs = null;
      item.pcm = [];
      // Only the newest replies keep their audio (about 50 KB a second of speech).
      const withAudio = this.items.filter((it) => it.pcm);
      for (const old of withAudio.slice(0, -this.keepAudioReplies)) old.pcm = null;
    }
    return item;
  }

  /** A barge-in stopped `item` at `audioEndMs`: it keeps what the server's history keeps. */
  _cut(item, audioEndMs) {
    item.cutMs = audioEndMs;
    item.interrupted = true;
    this._emitConversation();
  }

  /** The PCM16 bytes of a reply as heard (up to its cut), or null if they were not kept. */
  replyAudio(itemId) {
    const item = this.items.find((it) => it.itemId === itemId);
    if (!item || !item.pcm) return null;
    const length = item.pcm.reduce((n, b) => n + b.length, 0);
    const heard = item.cutMs === null ? length : Math.min(length, Math.round(item.cutMs * 24) * 2);
    const out = new Uint8Array(heard - (heard % 2));
    let at = 0;
    for (const bytes of item.pcm) {
      if (at >= out.length) break;
      const part = bytes.subarray(0, out.length - at);
      out.set(part, at);
      at += part.length;
    }
    return out;
  }

  /** Hear a reply again from the audio the page has (slower, pitch kept, with {slow: true}). */
  replay(itemId, { slow = false } = {}) {
    this.prepareAudio();
    const pcm = this.replyAudio(itemId);
    if (!pcm || !this.replayer) return false;
    // Never over the tutor's live voice.
    if (this.player.isPlaying()) return false;
    this.replayer.play(itemId, pcm, { rate: slow ? SLOW_RATE : 1 });
    return true;
  }

  _upsertItem(role, itemId, fields) {
    let item = itemId ? this.items.find((it) => it.itemId === itemId) : null;
    if (!item) {
      item = { role, itemId: itemId || `${role}_${this.items.length}`, text: "", done: false, interrupted: false };
      this.items.push(item);
    }
    Object.assign(item, fields);
    this._emitConversation();
    return item;
  }

  _emitConversation() {
    this._emit("conversation", { items: this.items });
  }

  _updateState() {
    let state;
    if (this.connectionState === "reconnecting") state = "reconnecting";
    else if (this.connectionState === "connecting") state = "connecting";
    else if (this.connectionState !== "open") state = "idle";
    else if (this.player && this.player.isPlaying()) state = "speaking";
    else if (this.replayer && this.replayer.current) state = "replaying";
    else if (this.awaitingResponse || this.responseInProgress) state = "thinking";
    else if (this.micActive) state = "listening";
    else state = "ready";
    if (state !== this.uiState) {
      this.uiState = state;
      this._emit("state", { state });
    }
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
