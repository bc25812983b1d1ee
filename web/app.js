// The page a child uses: one big talk button, the language to learn, what is happening now,
// and the conversation as bubbles. All the protocol work is in kiddolingo-client.js.
//
// The tutor's bubbles are read-along: a word appears when its audio plays and is highlighted
// while it is spoken (timing from read-along.js); a reply the child interrupted keeps the words
// the server's history keeps, ending in "…". A tap on a tutor bubble plays it again; its 🐢
// button plays it slower.
//
// window.kiddo exposes the live state for tests and curious grown-ups:
//   kiddo.state, kiddo.connectionState, kiddo.sessionId, kiddo.reconnects, kiddo.playedMs,
//   kiddo.transcript ([{role, text, done, interrupted}]), kiddo.errors, kiddo.client

import { KiddoLingoClient } from "./kiddolingo-client.js";
import { splitWords } from "./read-along.js";

const $ = (id) => document.getElementById(id);

const STATUS = {
  idle: ["👋", "Press the big button and say hello!"],
  connecting: ["🔌", "Getting ready…"],
  ready: ["😊", "Ready! Press the button to talk."],
  listening: ["👂", "I'm listening…"],
  thinking: ["🤔", "Lingo is thinking…"],
  speaking: ["🗣️", "Lingo is talking…"],
  replaying: ["🔁", "Listen again…"],
  reconnecting: ["🔄", "Oops! Reconnecting…"],
};

const FRIENDLY = {
  microphone_denied:
    "🎤 I can't hear you! Please ask a grown-up to allow the microphone, then press the button again.",
  microphone_missing: "🎤 I can't find a microphone. Is one plugged in?",
  microphone_error: "🎤 The microphone is not working right now. Let's try again!",
  connection_lost: "📡 Oops, the connection dropped. I'm trying again…",
  connect_failed: "📡 I can't reach Lingo right now. I'll keep trying…",
  needs_token:
    "🔑 This page needs its special link. Ask a grown-up to open the link that `make run` printed.",
  response_failed: "🙈 Lingo got a bit confused. Please say it again!",
};

function tokenFromPage() {
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get("token");
  if (fromUrl) {
    sessionStorage.setItem("kiddolingo.token", fromUrl);
    // Keep the token out of the address bar (and out of screenshots and history).
    params.delete("token");
    const rest = params.toString();
    history.replaceState(null, "", location.pathname + (rest ? `?${rest}` : "") + location.hash);
    return fromUrl;
  }
  return sessionStorage.getItem("kiddolingo.token");
}

async function loadConfig() {
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (response.ok) return await response.json();
  } catch (_) {
    /* a static host without config.json */
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return { demo: false, authRequired: false, wsUrl: `${scheme}://${location.host}/` };
}

// The error on show, so a reconnect clears a connection error but never a microphone one.
let shownError = null;

function showError(message, code = null) {
  const box = $("error");
  if (!message) {
    box.hidden = true;
    box.textContent = "";
    shownError = null;
    return;
  }
  box.textContent = message;
  box.hidden = false;
  shownError = code;
}

function clearConnectionError() {
  if (shownError === "connection_lost" || shownError === "connect_failed") showError(null);
}

function renderStatus(state) {
  const [icon, text] = STATUS[state] || STATUS.idle;
  $("status").dataset.state = state;
  $("status-icon").textContent = icon;
  $("status-text").textContent = text;
}

/** Words shown a little before their computed start: about one animation frame's delay. */
const LOOKAHEAD_MS = 20;

/**
 * What a tutor bubble shows now: {words, current (index highlighted, or -1), busy (still
 * filling in), cut (a barge-in stopped it), audio (it can be heard again)}.
 */
export function tutorView(client, item) {
  const ra = item.readAlong;
  const player = client.player;
  const audio = Boolean(item.pcm && item.pcm.length);
  if (!ra || !player) {
    return { words: splitWords(item.text), current: -1, busy: !item.done, cut: false, audio };
  }
  const all = ra.words();
  const replaying = client.replayer && client.replayer.itemId === item.itemId;
  // The last word whose audio has started at `pos` (and has arrived: a sentence's text may
  // come before its audio).
  const received = ra.audioMs;
  const spokenAt = (pos) => {
    let at = -1;
    for (const w of all) if (w.startMs <= pos + LOOKAHEAD_MS && w.startMs < received) at = w.index;
    return at;
  };
  if (item.cutMs !== null) {
    const words = splitWords(ra.heardText(item.cutMs));
    const current = replaying ? Math.min(spokenAt(client.replayer.positionMs()), words.length - 1) : -1;
    return { words, current, busy: false, cut: true, audio };
  }
  if (replaying) {
    return { words: all.map((w) => w.text), current: spokenAt(client.replayer.positionMs()), busy: false, cut: false, audio };
  }
  if (player.scheduledMs(item.itemId) === 0) {
    // No audio of it played (none came): the text once the reply is over.
    const over = ra.finished || item.done;
    return { words: over ? all.map((w) => w.text) : [], current: -1, busy: !over, cut: false, audio };
  }
  const pos = player.positionMs(item.itemId);
  if (ra.finished && pos >= ra.audioMs - 1) {
    return { words: all.map((w) => w.text), current: -1, busy: false, cut: false, audio };
  }
  const shown = pos > 0 ? spokenAt(pos) + 1 : 0;
  return { words: all.slice(0, shown).map((w) => w.text), current: shown - 1, busy: true, cut: false, audio };
}

const shownKeys = new WeakMap();

function renderTutorText(bubble, view) {
  const key = `${view.words.join("\u0001")}|${view.current}|${view.busy}|${view.cut}|${view.audio}`;
  if (shownKeys.get(bubble) === key) return;
  shownKeys.set(bubble, key);
  const text = bubble.querySelector(".text");
  const nodes = [];
  view.words.forEach((word, i) => {
    if (i > 0) nodes.push(document.createTextNode(" "));
    const span = document.createElement("span");
    span.className = i === view.current ? "word now" : "word";
    span.textContent = word;
    nodes.push(span);
  });
  text.replaceChildren(...nodes);
  // Screen readers hear the reply once it is complete, not word by word.
  bubble.setAttribute("aria-busy", String(view.busy));
  bubble.classList.toggle("speaking", view.busy);
  const last = view.words[view.words.length - 1] || "";
  bubble.classList.toggle("cut-between", view.cut && !last.endsWith("…"));
  bubble.querySelector(".replay-controls").hidden = view.busy || !view.audio || !view.words.length;
  // A response that said nothing (a cancelled one) leaves no empty bubble.
  bubble.hidden = !view.words.length && !view.busy && !view.cut;
}

let liveClient = null;

function readAlongFrame() {
  if (liveClient) {
    for (const item of liveClient.items) {
      if (item.role !== "assistant") continue;
      const bubble = $("conversation").querySelector(`[data-item-id="${CSS.escape(item.itemId)}"]`);
      if (bubble) renderTutorText(bubble, tutorView(liveClient, item));
    }
  }
  requestAnimationFrame(readAlongFrame);
}

function replayControls(itemId) {
  const box = document.createElement("div");
  box.className = "replay-controls";
  box.hidden = true;
  for (const [cls, icon, label, slow] of [
    ["replay", "🔁", "Hear it again", false],
    ["replay-slow", "🐢", "Hear it slowly", true],
  ]) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = cls;
    button.setAttribute("aria-label", label);
    button.title = label;
    button.textContent = icon;
    button.addEventListener("click", (e) => {
      e.stopPropagation();
      if (liveClient) liveClient.replay(itemId, { slow });
    });
    box.append(button);
  }
  return box;
}

function renderConversation(items) {
  const container = $("conversation");
  $("empty-hint").hidden = items.length > 0;
  for (const item of items) {
    let bubble = container.querySelector(`[data-item-id="${CSS.escape(item.itemId)}"]`);
    if (!bubble) {
      bubble = document.createElement("div");
      bubble.className = `bubble ${item.role === "user" ? "child" : "tutor"}`;
      bubble.dataset.itemId = item.itemId;
      bubble.dataset.role = item.role;
      const avatar = document.createElement("span");
      avatar.className = "avatar";
      avatar.setAttribute("aria-hidden", "true");
      avatar.textContent = item.role === "user" ? "🧒" : "🦜";
      const text = document.createElement("div");
      text.className = "text";
      bubble.append(avatar, text);
      if (item.role !== "user") {
        const itemId = item.itemId;
        bubble.append(replayControls(itemId));
        // A tap on the words plays the reply again.
        text.addEventListener("click", () => liveClient && liveClient.replay(itemId));
      }
      container.append(bubble);
    }
    bubble.classList.toggle("interrupted", Boolean(item.interrupted));
    if (item.role === "user") {
      const pending = !item.done && !item.text;
      bubble.classList.toggle("pending", pending);
      bubble.querySelector(".text").textContent = pending ? "🎧 …" : item.text;
    } else if (liveClient) {
      renderTutorText(bubble, tutorView(liveClient, item));
    }
  }
  const last = container.lastElementChild;
  if (last && last.scrollIntoView) last.scrollIntoView({ block: "end", behavior: "smooth" });
}

async function main() {
  const config = await loadConfig();
  const token = tokenFromPage();
  const params = new URLSearchParams(location.search);
  const language = params.get("lang") || localStorage.getItem("kiddolingo.language") || "Spanish";
  const select = $("language");
  if ([...select.options].some((o) => o.value === language)) select.value = language;
  $("demo-banner").hidden = !config.demo;

  const client = new KiddoLingoClient({
    url: config.wsUrl || `ws://${location.host}/`,
    token,
    targetLanguage: select.value,
  });

  const kiddo = {
    client,
    config,
    errors: [],
    get state() {
      return client.uiState;
    },
    get connectionState() {
      return client.connectionState;
    },
    get sessionId() {
      return client.sessionId;
    },
    get reconnects() {
      return client.reconnects;
    },
    get reconnectAttempts() {
      return client.totalReconnectAttempts;
    },
    get playedMs() {
      return client.playedMs();
    },
    get appendsSent() {
      return client.appendsSent;
    },
    get micActive() {
      return client.micActive;
    },
    get transcript() {
      return client.items.map(({ role, text, done, interrupted }) => ({ role, text, done, interrupted }));
    },
  };
  window.kiddo = kiddo;
  liveClient = client;
  requestAnimationFrame(readAlongFrame);

  client.addEventListener("state", (e) => renderStatus(e.detail.state));
  client.addEventListener("conversation", (e) => renderConversation(e.detail.items));
  client.addEventListener("reconnected", () => clearConnectionError());
  client.addEventListener("connection", (e) => {
    if (e.detail.state === "open") clearConnectionError();
  });
  client.addEventListener("error", (e) => {
    const { kind, code, message } = e.detail;
    kiddo.errors.push({ kind, code, message, at: Date.now() });
    if (kind === "auth" || (code === "connect_failed" && config.authRequired && !token)) {
      showError(FRIENDLY.needs_token);
    } else if (FRIENDLY[code]) {
      showError(FRIENDLY[code], code);
    } else if (kind === "server") {
      showError(`🙈 ${message}`);
    }
  });
  client.addEventListener("microphone", (e) => {
    const talk = $("talk");
    talk.dataset.active = String(e.detail.active);
    talk.setAttribute("aria-pressed", String(e.detail.active));
    talk.querySelector(".talk-icon").textContent = e.detail.active ? "⏹️" : "🎤";
    talk.querySelector(".talk-label").textContent = e.detail.active ? "Stop" : "Start talking";
  });

  select.addEventListener("change", () => {
    localStorage.setItem("kiddolingo.language", select.value);
    client.setTargetLanguage(select.value);
  });

  $("talk").addEventListener("click", async () => {
    if (client.micActive) {
      client.stopMicrophone();
      return;
    }
    if (config.authRequired && !token) {
      showError(FRIENDLY.needs_token);
      return;
    }
    client.prepareAudio(); // inside the click: the browser lets audio start
    showError(null);
    client.connect();
    try {
      await client.startMicrophone();
    } catch (_) {
      /* the error event has told the child already */
    }
  });

  // A little level meter so the child sees the microphone hears them.
  const bar = $("level-bar");
  const tick = () => {
    const level = client.micActive ? Math.min(1, client.micLevel * 6) : 0;
    bar.style.width = `${Math.round(level * 100)}%`;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);

  renderStatus(client.uiState);
  if (config.authRequired && !token) showError(FRIENDLY.needs_token);
}

main();
