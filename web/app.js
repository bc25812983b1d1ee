// The page a child uses: one big talk button, the language to learn, what is happening now,
// and the conversation as bubbles. All the protocol work is in kiddolingo-client.js.
//
// window.kiddo exposes the live state for tests and curious grown-ups:
//   kiddo.state, kiddo.connectionState, kiddo.sessionId, kiddo.reconnects, kiddo.playedMs,
//   kiddo.transcript ([{role, text, done, interrupted}]), kiddo.errors, kiddo.client

import { KiddoLingoClient } from "./kiddolingo-client.js";

const $ = (id) => document.getElementById(id);

const STATUS = {
  idle: ["👋", "Press the big button and say hello!"],
  connecting: ["🔌", "Getting ready…"],
  ready: ["😊", "Ready! Press the button to talk."],
  listening: ["👂", "I'm listening…"],
  thinking: ["🤔", "Lingo is thinking…"],
  speaking: ["🗣️", "Lingo is talking…"],
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
      container.append(bubble);
    }
    const pending = item.role === "user" && !item.done && !item.text;
    bubble.classList.toggle("pending", pending);
    bubble.classList.toggle("interrupted", Boolean(item.interrupted));
    bubble.querySelector(".text").textContent = pending ? "🎧 …" : item.text;
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
