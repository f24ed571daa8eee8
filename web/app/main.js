// The livegate sandbox: sign in, run tools in windows, watch them live, browse history.
// Everything real-time goes through the reusable client (../client.js); everything else is
// plain HTTP (openapi.yaml). `window.__livegate` exposes what the E2E tests compare.
import { LivegateClient, TRANSPORTS, tokenClaims } from "../client.js";
import { Api } from "./api.js";
import { h } from "./dom.js";
import { HistoryPanel } from "./history.js";
import { ToolWindow } from "./tool-window.js";

const SESSION_KEY = "livegate.session";
/** @type {(sel: string) => any} */
const $ = (sel) => document.querySelector(sel);

/** @type {{mode: "dev"|"token", userId: string, token: string, ttlSeconds?: number}|null} */
let session = loadSession();
const api = new Api(() => session?.token || null);
const debug = { offsets: [], events: [], protocolErrors: [], states: [], welcomes: [], resyncs: [], sent: [],
  transports: [], duplicates: [] };
/** @type {any} */ (window).__livegate = debug;

/**
 * Client options from the page's query string, to try the wires by hand: `?transports=sse`
 * (SSE only), `?transports=websocket` (never fall back), `?upgradeRetryMs=5000`,
 * `?fallbackAfter=1`, `?openTimeoutMs=3000`.
 */
function clientOptionsFromUrl() {
  const query = new URLSearchParams(location.search);
  /** @type {Record<string, any>} */
  const options = {};
  const transports = (query.get("transports") || "").split(",").filter((t) => TRANSPORTS.includes(t));
  if (transports.length) options.transports = transports;
  for (const name of ["upgradeRetryMs", "fallbackAfter", "openTimeoutMs"]) {
    const value = Number(query.get(name));
    if (query.has(name) && Number.isFinite(value) && value >= 0) options[name] = value;
  }
  return options;
}

// The prefix of a run joined mid-stream comes from the same GET the page uses elsewhere.
const client = new LivegateClient({
  getToken,
  fetchText: async (id) => (await api.generation(id)).progress?.partialText ?? null,
  ...clientOptionsFromUrl(),
});
debug.client = client;
const views = new Map(); // generationId -> Set<RunView>
const latest = new Map(); // generationId -> {update, progress}: for views created after the events
let windows = [];
let tools = [];
const historyPanel = new HistoryPanel(api, (gen) => openGeneration(gen));

// -- session and tokens ------------------------------------------------------------------------

function loadSession() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
  } catch {
    return null;
  }
}

function saveSession() {
  if (session) sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  else sessionStorage.removeItem(SESSION_KEY);
}

function tokenValid(token) {
  const { exp } = tokenClaims(token);
  return typeof exp !== "number" || exp * 1000 > Date.now() + 1000;
}

/** The client's token callback (see client.js TokenCallback). */
async function getToken({ reason }) {
  if (!session) return null;
  if (reason === "connect" && tokenValid(session.token)) return session.token;
  if ((reason === "connect" || reason === "refresh") && session.mode === "dev") {
    const { token } = await api.devToken(session.userId, session.ttlSeconds || 600);
    session.token = token;
    saveSession();
    return token;
  }
  if (reason === "refresh") {
    banner("Your token expires soon. Paste a new one to stay connected.", "warning", () => showSignIn("expiring"));
  }
  return null; // expired / rejected: the sign-in prompt takes over (see onState)
}

// -- connection indicator ----------------------------------------------------------------------

const indicator = $("#connection");
let countdown = null;

const TRANSPORT_NAMES = { websocket: "WebSocket", sse: "SSE" };

function onState(change) {
  debug.states.push({ state: change.state, closeCode: change.closeCode, transport: change.transport, at: Date.now() });
  clearInterval(countdown);
  const text = indicator.querySelector(".text");
  indicator.dataset.state = change.state;
  indicator.dataset.transport = change.transport || "";
  indicator.title = change.transport === "sse"
    ? "Server-Sent Events: WebSockets do not get through; trying them again now and then" : "";
  switch (change.state) {
    case "connecting":
      text.textContent = "Connecting…";
      break;
    case "live":
      text.textContent = `Live · ${TRANSPORT_NAMES[change.transport] || change.transport}`;
      break;
    case "reconnecting": {
      const tick = () => {
        const s = Math.max(0, Math.ceil((change.retryAt - Date.now()) / 1000));
        text.textContent = `Reconnecting in ${s} s`;
      };
      tick();
      countdown = setInterval(tick, 250);
      break;
    }
    case "tokenExpired":
      text.textContent = "Token expired";
      showSignIn("expired");
      break;
    case "authFailed":
      text.textContent = "Token refused";
      showSignIn("rejected");
      break;
    case "stopped":
      text.textContent = `Disconnected (${change.closeCode})`;
      banner(`The server closed the connection for good (code ${change.closeCode}${change.closeReason ? `: ${change.closeReason}` : ""}). Reload the page to try again.`, "error");
      break;
    default:
      text.textContent = "Offline";
  }
}

// -- live events -------------------------------------------------------------------------------

function remember(event) {
  const entry = latest.get(event.generationId) || {};
  entry[event.type === "generationUpdate" ? "update" : "progress"] = event;
  latest.delete(event.generationId);
  latest.set(event.generationId, entry); // most recent last
  if (latest.size > 200) latest.delete(latest.keys().next().value); // bounded
}

function wireClient() {
  client.on("state", onState);
  client.on("send", (frame) => debug.sent.push(frame));
  client.on("welcome", (w) => debug.welcomes.push(w));
  client.on("transport", (t) => debug.transports.push({ ...t, offset: client.position?.offset ?? null }));
  client.on("duplicate", (e) => debug.duplicates.push(e.offset));
  client.on("event", (event) => {
    debug.offsets.push(event.offset, ...(event.supersedes || []));
    debug.events.push({ type: event.type, offset: event.offset, epoch: event.epoch, generationId: event.generationId,
      status: event.status, step: event.step, supersedes: event.supersedes });
  });
  client.on("protocolError", (p) => debug.protocolErrors.push(p));
  client.on("generationUpdate", (event) => {
    remember(event);
    for (const view of views.get(event.generationId) || []) view.applyUpdate(event);
    historyPanel.onUpdate(event);
  });
  client.on("generationProgress", (event) => {
    remember(event);
    for (const view of views.get(event.generationId) || []) view.applyProgress(event);
    historyPanel.onProgress(event);
  });
  client.on("text", ({ generationId, text }) => { // the prefix of a run joined mid-stream arrived
    const seen = latest.get(generationId);
    if (seen?.progress) seen.progress = { ...seen.progress, partialText: text };
    for (const view of views.get(generationId) || []) view.applyText(text);
  });
  client.on("notification", (n) => toast(n.title ? `${n.title}: ${n.message}` : n.message, n.level));
  client.on("error", (e) => { if (!e.fatal) console.warn("livegate error", e); });
  client.on("resync", async ({ reason }) => {
    debug.resyncs.push(reason);
    if (reason === "notRecovered") toast("Part of the live history was lost; reloaded from the server.", "warning");
    await resync();
  });
}

/** Reload everything shown from HTTP: the stream cannot vouch for continuity. */
async function resync() {
  try {
    await historyPanel.reload();
    await Promise.all([...views.keys()].map(async (id) => {
      const gen = await api.generation(id);
      for (const view of views.get(id) || []) view.applyGeneration(gen);
    }));
  } catch (err) {
    toast(`Could not reload from the server: ${err.message}`, "error");
  }
}

function track(view) {
  for (const set of views.values()) for (const v of [...set]) if (!v.element.isConnected) set.delete(v);
  if (!views.has(view.id)) views.set(view.id, new Set());
  views.get(view.id).add(view);
  const seen = latest.get(view.id);
  if (seen?.progress) view.applyProgress(seen.progress);
  if (seen?.update) view.applyUpdate(seen.update);
}

// -- windows -----------------------------------------------------------------------------------

function windowContext() {
  return {
    tools,
    run: async (toolId, inputs, cancelAfterSeconds) => {
      const gen = await api.createGeneration(toolId, inputs, cancelAfterSeconds);
      historyPanel.upsert(gen, true);
      return gen;
    },
    track,
    webhooks: (id) => api.webhooks(id),
    cancel: async (id) => {
      // In-band over the stream (asyncapi.yaml `cancel`); over HTTP only while it is down.
      let gen;
      try {
        await client.cancel(id);
        gen = await api.generation(id);
      } catch (err) {
        if (err.code !== "not_connected" && err.code !== "timeout") throw err;
        gen = await api.cancel(id);
      }
      for (const view of views.get(id) || []) view.applyGeneration(gen);
    },
    onClose: (w) => {
      windows = windows.filter((x) => x !== w);
      $("#new-window").focus();
    },
  };
}

function openWindow(toolId, generation) {
  const w = new ToolWindow(windowContext(), toolId || tools[0]?.id, generation);
  windows.push(w);
  $("#windows").append(w.element);
  return w;
}

async function openGeneration(gen) {
  const full = await api.generation(gen.id).catch(() => gen);
  const w = openWindow(full.toolId, full);
  w.element.scrollIntoView({ block: "nearest" });
  w.focus();
}

// -- sign-in -----------------------------------------------------------------------------------

const SIGN_IN_REASONS = {
  expired: "Your session expired. Sign in again to reconnect — nothing is lost.",
  rejected: "The server refused this token. Sign in with another one.",
  expiring: "Your token expires soon. Paste a new one to stay connected.",
};

function showSignIn(reason) {
  const dialog = $("#sign-in");
  const note = $("#sign-in-reason");
  note.textContent = SIGN_IN_REASONS[reason] || "";
  note.hidden = !SIGN_IN_REASONS[reason];
  if (session?.userId) $("#user-id").value = session.userId;
  if (session?.mode) setMode(session.mode);
  if (reason === "expired" || reason === "rejected") {
    $("#banner").hidden = true; // superseded by the prompt
    $("#token").value = ""; // the old token is of no use any more
  }
  dialog.hidden = false;
  document.body.classList.toggle("signed-out", !session || reason !== "expiring");
  (session?.mode === "token" ? $("#token") : $("#user-id")).focus();
}

function setMode(mode) {
  for (const radio of /** @type {NodeListOf<HTMLInputElement>} */ (document.querySelectorAll("input[name=mode]"))) {
    radio.checked = radio.value === mode;
  }
  $("#dev-fields").hidden = mode !== "dev";
  $("#token-fields").hidden = mode !== "token";
}

async function signIn(event) {
  event.preventDefault();
  const error = $("#sign-in-error");
  error.hidden = true;
  const mode = $("input[name=mode]:checked").value;
  const button = $("#sign-in-button");
  button.disabled = true;
  try {
    let next;
    if (mode === "dev") {
      const userId = $("#user-id").value.trim();
      const ttlSeconds = Number($("#ttl").value) || 600;
      const { token } = await api.devToken(userId, ttlSeconds);
      next = { mode, userId, token, ttlSeconds };
    } else {
      const token = $("#token").value.trim();
      const { sub, exp } = tokenClaims(token);
      if (!sub) throw new Error("This does not look like a livegate token (no `sub`).");
      if (typeof exp === "number" && exp * 1000 <= Date.now()) throw new Error("This token has already expired.");
      next = { mode, userId: sub, token };
    }
    const switching = session && session.userId !== next.userId;
    session = next;
    saveSession();
    $("#sign-in").hidden = true;
    $("#banner").hidden = true;
    document.body.classList.remove("signed-out");
    if (switching) resetWorkspace();
    await enterApp();
  } catch (err) {
    error.textContent = err.code === "dev_mode_disabled"
      ? "Dev tokens are off on this gateway (not in dev mode). Paste a token instead."
      : err.message;
    error.hidden = false;
    if (err.code === "dev_mode_disabled") setMode("token");
  } finally {
    button.disabled = false;
  }
}

function resetWorkspace() {
  client.close();
  windows.forEach((w) => w.element.remove());
  windows = [];
  views.clear();
  latest.clear();
}

function signOut() {
  resetWorkspace();
  client.forgetPosition();
  session = null;
  saveSession();
  $("#user-name").textContent = "";
  showSignIn(null);
}

async function enterApp() {
  $("#user-name").textContent = session.userId;
  $("#app").hidden = false;
  try {
    if (!tools.length) tools = (await api.tools()).tools;
    if (!windows.length) openWindow(tools.find((t) => t.id === "demo")?.id);
    await historyPanel.reload();
  } catch (err) {
    if (err.status === 401) { showSignIn("rejected"); return; }
    toast(`Could not load from the server: ${err.message}`, "error");
  }
  await client.setToken(session.token);
}

// -- toasts and banners ------------------------------------------------------------------------

function toast(message, level = "info") {
  const el = h("div", { class: `toast toast-${level}`, role: level === "error" ? "alert" : "status" }, message,
    h("button", { type: "button", class: "icon", "aria-label": "Dismiss", onclick: () => el.remove() }, "×"));
  $("#toasts").append(el);
  setTimeout(() => el.remove(), level === "error" ? 15000 : 6000);
}

function banner(message, level, action) {
  const el = $("#banner");
  el.replaceChildren(message, action ? h("button", { type: "button", onclick: action }, "Paste a new token") : "",
    h("button", { type: "button", class: "icon", "aria-label": "Dismiss", onclick: () => { el.hidden = true; } }, "×"));
  el.dataset.level = level;
  el.hidden = false;
}

// -- boot --------------------------------------------------------------------------------------

function boot() {
  wireClient();
  $("#sign-in-form").addEventListener("submit", signIn);
  for (const radio of /** @type {NodeListOf<HTMLInputElement>} */ (document.querySelectorAll("input[name=mode]"))) {
    radio.addEventListener("change", () => setMode(radio.value));
  }
  $("#sign-out").addEventListener("click", signOut);
  $("#new-window").addEventListener("click", () => openWindow().focus());
  $("#history-slot").append(historyPanel.element);
  setMode("dev");
  // The HTML reference (docs/, generated by `livegate contract generate`) may be absent where the
  // gateway is deployed without docs/: hide a dead link.
  fetch("/docs/").then((r) => { $("#docs-link").hidden = !r.ok; }, () => {});
  if (session && (session.mode === "dev" || tokenValid(session.token))) {
    $("#sign-in").hidden = true;
    document.body.classList.remove("signed-out");
    enterApp();
  } else {
    showSignIn(session ? "expired" : null);
  }
}

boot();
