// livegate browser client: an ES module with no dependencies (asyncapi.yaml, channels /v1/ws
// and /v1/sse; the SSE wire is ./sse.js).
//
//   import { LivegateClient } from "/client.js";
//   const client = new LivegateClient({ getToken: async ({ reason }) => fetchToken(reason) });
//   client.on("generationProgress", (msg) => ...);      // one event per server message type
//   client.on("state", ({ state, retryInMs }) => ...);   // connecting | live | reconnecting | ...
//   client.on("resync", () => reloadFromHttp());         // continuity not guaranteed: use HTTP
//   client.on("transport", ({ transport }) => ...);       // "websocket" | "sse"
//   client.connect();
//   await client.cancel(generationId);                 // in-band cancel, from any tab of the user
//
// What it does for you (docs/clients.md has the whole contract):
// * `auth` as the first frame, with `resume: {epoch, offset, timestamp}` when this tab saw
//   events before (the position is kept per tab in sessionStorage, per user; `timestamp` is
//   that of the event at `offset`, left out when this tab did not receive that event);
// * reconnects on close codes 4000-4399, network errors and abnormal closes, with exponential
//   backoff and full jitter (delay = random(0, min(max, initial * 2^attempt)));
// * falls back to Server-Sent Events after `fallbackAfter` attempts in a row that got no
//   `welcome` (refused upgrade, proxy that kills the socket, no answer within `openTimeoutMs`),
//   resuming from the same position — unless the WebSocket already worked for this client:
//   then it is an outage (a server restart) and it stays, like centrifuge-js; while on SSE it
//   tries a WebSocket in the background every `upgradeRetryMs` and switches back once that one
//   has its `welcome` (the offsets both wires carried around the switch are deduplicated, so
//   nothing is lost or doubled);
// * never sends the same token again after 4401 (auth failed) / 4402 (token expired): it asks
//   `getToken` for a new one and stops (state `tokenExpired` / `authFailed`) when there is none;
//   stops on the other terminal codes (4400-4499);
// * answers `tokenExpiring` with `refresh` (token from `getToken({reason: "refresh"})`);
// * sends app-level `ping` while the page is hidden (browsers cannot send WebSocket pings) and
//   once when it becomes visible again; no `pong` in time means a dead socket: reconnect;
// * drops duplicates by offset, counts `supersedes` (conflation) as delivered, and tells the
//   app to resync over HTTP when `welcome.recovered` is not `true`;
// * asks for streamed text as deltas (`auth.textDeltas`) and rebuilds each generation's text
//   from `textDelta` + `textOffset` (UTF-16 indices, i.e. JS string indices): every
//   `generationProgress` with text is emitted with `partialText` set to the whole text so far,
//   as before deltas. A generation joined mid-stream takes its prefix from `fetchText`
//   (default: `GET /v1/generations/{id}`, `progress.partialText`); once it has it, a `text`
//   event `{generationId, text, offset}` carries the text;
// * in development mode validates every frame (both ways) against web/generated/messages.schema.json
//   (ajv standalone bundle web/generated/validate.js); unknown message types are reported always.
//
// Types: see web/generated/types.js (generated from asyncapi.yaml).
/** @typedef {import("./generated/types.js").ServerMessage} ServerMessage */
/** @typedef {import("./generated/types.js").ClientMessage} ClientMessage */
/** @typedef {import("./generated/types.js").Welcome} Welcome */
/** @typedef {import("./generated/types.js").StreamPosition} StreamPosition */

import { SseConnection } from "./sse.js";

export { EventStreamParser, SseConnection } from "./sse.js";

/**
 * The wires a client can use: `websocket` (/v1/ws) and `sse` (Server-Sent Events, /v1/sse,
 * client messages over POST). Both carry the same messages and stream positions.
 * @typedef {"websocket"|"sse"} Transport
 */
export const TRANSPORTS = Object.freeze(["websocket", "sse"]);

/**
 * Connection states, in the order a healthy connection goes through them.
 * - `idle`: not started (or `close()` was called).
 * - `connecting`: socket opening, `auth` sent, waiting for `welcome`.
 * - `live`: `welcome` received; events flow.
 * - `reconnecting`: waiting `retryInMs` before the next attempt.
 * - `tokenExpired` / `authFailed`: the server refused the token (4402 / 4401), or the token
 *   in hand expired, and `getToken` had no new one (`authFailed` also when there was never a
 *   token); call `setToken(token)` (or `connect()` after fixing `getToken`) to continue.
 * - `stopped`: a terminal close code (4400, 4403, ...); the client will not reconnect.
 * @typedef {"idle"|"connecting"|"live"|"reconnecting"|"tokenExpired"|"authFailed"|"stopped"} ConnectionState
 */

/**
 * @typedef {Object} StateChange
 * @property {ConnectionState} state
 * @property {ConnectionState} previous
 * @property {number} [closeCode] Close code that caused the change.
 * @property {string} [closeReason]
 * @property {number} [retryInMs] For `reconnecting`: the delay before the next attempt.
 * @property {number} [retryAt] For `reconnecting`: `Date.now()` of the next attempt.
 * @property {number} [attempt] Consecutive failed attempts so far.
 * @property {Transport|null} transport The wire of the connection (or attempt).
 */

/**
 * @typedef {Object} TransportChange
 * @property {Transport} transport
 * @property {Transport|null} previous
 * @property {"connect"|"fallback"|"upgrade"} reason `fallback`: the other wire failed
 *   `fallbackAfter` times in a row; `upgrade`: a background WebSocket replaced the SSE stream.
 */

/**
 * @typedef {Object} ProtocolProblem
 * @property {"unknownType"|"invalidFrame"|"badJson"|"binaryFrame"|"invalidOutgoing"} kind
 *   (`invalidOutgoing`: a frame this client sent does not match the schema — a client bug)
 * @property {string} [type] The frame's `type`, when it has one.
 * @property {Array<Object>} [errors] JSON Schema errors (`instancePath`, `message`).
 * @property {string} frame The raw frame (truncated to 2000 characters).
 */

/**
 * @typedef {Object} TokenRequest
 * @property {"connect"|"refresh"|"expired"|"rejected"} reason Why a token is needed:
 *   first connect, `tokenExpiring` (refresh in-band), close 4402, close 4401.
 * @property {string|null} previous The token in use (never send it again after 4401/4402).
 */

/**
 * @callback TokenCallback
 * @param {TokenRequest} request
 * @returns {string|null|Promise<string|null>} A token, or `null` when there is none (the
 *   client then waits in `tokenExpired`/`authFailed` until `setToken`).
 */

/** Close codes of asyncapi.yaml `x-close-codes` (docs/codes.md). */
export const CLOSE = Object.freeze({
  serverRestart: 4000, slowConsumer: 4001, heartbeatTimeout: 4002, tooManyConnections: 4003,
  rateLimited: 4004, authTimeout: 4005, unavailable: 4006,
  badMessage: 4400, authFailed: 4401, tokenExpired: 4402, forbidden: 4403,
});

/** 4000-4399: reconnect with backoff and resume. */
export function isReconnectCode(code) {
  return code >= 4000 && code <= 4399;
}

/** 4400-4499: terminal, never reconnect with the same token. */
export function isTerminalCode(code) {
  return code >= 4400 && code <= 4499;
}

/** Every server message `type` (asyncapi.yaml ServerMessage); anything else is reported. */
export const SERVER_MESSAGE_TYPES = Object.freeze([
  "welcome", "refreshed", "pong", "tokenExpiring", "generationUpdate", "generationProgress",
  "notification", "error", "cancelResult",
]);
const STREAM_TYPES = new Set(["generationUpdate", "generationProgress", "notification"]);
const CLIENT_CLOSE = 4999; // our own close of a socket we consider dead (not in the server table)

/** The `sub` of a JWT, without verifying it (only to key the per-user resume position). */
export function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
  } catch {
    return {};
  }
}

/**
 * Where this tab's resume position is kept: highest offset N such that every offset <= N was
 * received or superseded (asyncapi.yaml "Conflation"), and the `timestamp` of the event at N
 * exactly as received (`StreamPosition.timestamp`: the server tells a rewound-and-rewritten
 * history from this tab's by it). The timestamp is known only when N is an event this cursor
 * received: `null` when N was reached only through `supersedes`, after a `welcome` reset, or
 * for a position restored without one. Pure; the client owns one; mirrors
 * livegate.protocol.cursor.StreamCursor.
 */
export class StreamCursor {
  /**
   * @param {string|null} [epoch]
   * @param {number} [offset]
   * @param {string|null} [timestamp]
   */
  constructor(epoch = null, offset = 0, timestamp = null) {
    /** @type {string|null} */ this.epoch = epoch;
    /** @type {number} */ this.offset = offset;
    /** @type {string|null} */ this.timestamp = timestamp;
    /** @type {Map<number, string|null>} offsets beyond a hole -> the timestamp received there */
    this.ahead = new Map();
  }

  /**
   * @param {string|null} epoch
   * @param {number} offset
   * @param {string|null} [timestamp]
   */
  reset(epoch, offset, timestamp = null) {
    this.epoch = epoch;
    this.offset = offset;
    this.timestamp = timestamp;
    this.ahead.clear();
  }

  /**
   * Record a stream event (`timestamp` as received); `false` for a duplicate (or an event of
   * another epoch).
   * @param {string} epoch
   * @param {number} offset
   * @param {number[]} [supersedes]
   * @param {string|null} [timestamp]
   */
  accept(epoch, offset, supersedes = [], timestamp = null) {
    if (epoch !== this.epoch || offset <= this.offset || this.ahead.has(offset)) return false;
    this.ahead.set(offset, typeof timestamp === "string" ? timestamp : null);
    // An offset only named in `supersedes` has no event here; one received there keeps its own.
    for (const o of supersedes) if (o > this.offset && !this.ahead.has(o)) this.ahead.set(o, null);
    while (this.ahead.has(this.offset + 1)) {
      this.offset += 1;
      this.timestamp = this.ahead.get(this.offset);
      this.ahead.delete(this.offset);
    }
    if (this.ahead.size > 10000) this.ahead.clear(); // bounded; a real hole is resynced anyway
    return true;
  }

  /** @returns {StreamPosition|null} `timestamp` only when known. */
  get position() {
    if (this.epoch === null) return null;
    /** @type {StreamPosition} */
    const position = { epoch: this.epoch, offset: this.offset };
    if (this.timestamp !== null) position.timestamp = this.timestamp;
    return position;
  }
}

/**
 * Each generation's streamed text, rebuilt from `textDelta` + `textOffset` (asyncapi.yaml
 * "Streamed text"): the text after an event is `text.slice(0, textOffset) + textDelta`. A
 * generation joined mid-stream holds its deltas until `seed(prefix)`. Pure; mirrors
 * livegate.protocol.textdelta.TextAssembler.
 */
export class TextAssembler {
  constructor(maxGenerations = 64) {
    /** @type {Map<string, {text: string|null, lastEvent: number, held: Array<[number, string]>}>} */
    this.texts = new Map();
    this.maxGenerations = maxGenerations;
  }

  /** @returns {string|null} */
  text(generationId) {
    return this.texts.get(generationId)?.text ?? null;
  }

  /** Apply one event's delta; the whole text, or `null` while the prefix is missing. */
  apply(generationId, eventOffset, textOffset, delta) {
    let entry = this.texts.get(generationId);
    if (!entry) {
      entry = { text: null, lastEvent: 0, held: [] };
      this.texts.set(generationId, entry);
      if (this.texts.size > this.maxGenerations) this.texts.delete(this.texts.keys().next().value);
    }
    if (eventOffset <= entry.lastEvent) return entry.text; // older than what was applied
    entry.lastEvent = eventOffset;
    if (entry.text === null && !entry.held.length && textOffset === 0) entry.text = "";
    if (entry.text !== null) {
      if (textOffset <= entry.text.length) {
        entry.text = entry.text.slice(0, textOffset) + delta;
        return entry.text;
      }
      entry.text = null; // a gap: wait for a prefix
    }
    entry.held.push([textOffset, delta]);
    return null;
  }

  /** A whole text (`partialText` of a publisher that sends no deltas). */
  replace(generationId, eventOffset, text) {
    const entry = this.texts.get(generationId);
    if (entry && eventOffset <= entry.lastEvent) return;
    this.texts.set(generationId, { text, lastEvent: eventOffset, held: [] });
  }

  /** A prefix (GET snapshot): the whole text when it reaches the first held delta, else `null`. */
  seed(generationId, prefix) {
    const entry = this.texts.get(generationId);
    if (!entry || entry.text !== null) return entry ? entry.text : null;
    if (entry.held.length && prefix.length < entry.held[0][0]) return null;
    let text = prefix;
    for (const [offset, delta] of entry.held) {
      if (offset > text.length) return null;
      text = text.slice(0, offset) + delta;
    }
    entry.text = text;
    entry.held = [];
    return text;
  }

  forget(generationId) {
    this.texts.delete(generationId);
  }

  clear() {
    this.texts.clear();
  }
}

const FINAL_STATUSES = new Set(["completed", "failed", "cancelled"]);
const PREFIX_RETRY_MS = 500; // the runner saves its text about once a second

/** Is this a development setup (validate frames, log loudly)? localhost, or `?dev=1`. */
export function isDevelopment() {
  if (typeof location === "undefined") return false;
  if (new URLSearchParams(location.search).get("dev") === "1") return true;
  return ["localhost", "127.0.0.1", "[::1]"].includes(location.hostname);
}

export class LivegateClient {
  /**
   * @param {Object} options
   * @param {TokenCallback} options.getToken Called for the first token, on `tokenExpiring` and
   *   after 4401/4402 (must then return a *new* token or `null`).
   * @param {string} [options.url] WebSocket URL; default `/v1/ws` on this page's host.
   * @param {Storage|null} [options.storage] Where the resume position lives (default
   *   `sessionStorage`: per tab; `null` keeps it in memory only).
   * @param {boolean|"auto"} [options.validate] Validate incoming frames against the schema
   *   (default `"auto"`: in development, see `isDevelopment`).
   * @param {number} [options.backoffInitialMs] First reconnect delay cap (default 500).
   * @param {number} [options.backoffMaxMs] Largest reconnect delay cap (default 15000).
   * @param {number} [options.hiddenPingMs] App-level ping interval while hidden (default
   *   `welcome.heartbeatIntervalMs`).
   * @param {number} [options.pongTimeoutMs] A ping unanswered this long means a dead socket (10000).
   * @param {boolean} [options.textDeltas] Ask for streamed text as deltas (default `true`); the
   *   client rebuilds `partialText` either way.
   * @param {(generationId: string) => Promise<string|null>} [options.fetchText] The text so far
   *   of a generation joined mid-stream (default: `GET /v1/generations/{id}` on this origin,
   *   `progress.partialText`).
   * @param {Transport[]} [options.transports] Wires to use, first preferred (default
   *   `["websocket", "sse"]`; `["websocket"]` never falls back, `["sse"]` only uses SSE).
   * @param {string} [options.sseUrl] SSE endpoint; default `url` with http(s) and `/v1/sse`.
   * @param {number} [options.fallbackAfter] Attempts in a row without `welcome` on one wire
   *   before trying the next (default 2).
   * @param {number} [options.openTimeoutMs] An attempt without `welcome` this long failed (10000).
   * @param {number} [options.upgradeRetryMs] While on SSE, try a WebSocket again this often
   *   (default 60000; 0 = never).
   * @param {typeof WebSocket} [options.WebSocket] WebSocket constructor (tests inject fakes).
   * @param {typeof fetch} [options.fetch] fetch for the SSE wire (tests inject fakes).
   * @param {() => number} [options.random] Random source in [0, 1) for the jitter (tests).
   */
  constructor(options) {
    if (!options || typeof options.getToken !== "function") throw new TypeError("getToken is required");
    this.options = {
      url: null, storage: typeof sessionStorage === "undefined" ? null : sessionStorage, validate: "auto",
      backoffInitialMs: 500, backoffMaxMs: 15000, hiddenPingMs: null, pongTimeoutMs: 10000, textDeltas: true,
      fetchText: null, transports: TRANSPORTS, sseUrl: null, fallbackAfter: 2, openTimeoutMs: 10000,
      upgradeRetryMs: 60000, WebSocket: globalThis.WebSocket, fetch: null, random: Math.random, ...options,
    };
    const unknown = this.options.transports.filter((t) => !TRANSPORTS.includes(t));
    if (unknown.length || !this.options.transports.length) throw new TypeError(`transports: ${unknown.join(", ") || "none"}`);
    /** @type {ConnectionState} */ this.state = "idle";
    /** @type {Welcome|null} */ this.welcome = null;
    /** @type {string|null} */ this.token = null;
    this.cursor = new StreamCursor();
    this.attempt = 0;
    /** @type {Transport|null} */ this.transport = null;
    this.stats = { connects: 0, duplicates: 0, framesReceived: 0, framesSent: 0, transportSwitches: 0 };
    this._handlers = new Map();
    this._ws = null; // the connection in use, a WebSocket or an SseConnection
    this._welcomed = false; // did `_ws` get its `welcome`?
    this._wire = 0; // index in options.transports of the wire to use next
    this._wireFailures = 0; // attempts in a row on that wire without a `welcome`
    this._proven = new Set(); // wires that had a `welcome` since connect(): kept through outages
    this._probe = null; // a background WebSocket that may replace the SSE stream
    this._timers = { retry: null, ping: null, pong: null, open: null, upgrade: null, probe: null };
    this._ids = 0;
    this._latestProgress = new Map(); // generationId -> offset (skip older after a conflation hole)
    this.texts = new TextAssembler();
    this._fetchedAt = new Map(); // generationId -> Date.now() of the last prefix fetch
    this._validator = null;
    this._onVisibility = () => this._visibilityChanged();
    this._positionUser = null;
  }

  // -- public API ----------------------------------------------------------------------------

  /**
   * Subscribe to `state`, `transport`, `resync`, `event` (every stream event once),
   * `protocolError`, `duplicate`, `send` (every frame sent) or a server message `type` (`welcome`,
   * `generationUpdate`, `generationProgress`, `notification`, `tokenExpiring`, `refreshed`,
   * `pong`, `error`). Returns a function that unsubscribes.
   * @param {string} name
   * @param {(payload: any) => void} handler
   */
  on(name, handler) {
    if (!this._handlers.has(name)) this._handlers.set(name, new Set());
    this._handlers.get(name).add(handler);
    return () => this._handlers.get(name)?.delete(handler);
  }

  /** Start (or restart after `tokenExpired`/`authFailed`/`stopped`/`close()`). */
  async connect() {
    if (["connecting", "live"].includes(this.state)) return;
    clearTimeout(this._timers.retry);
    this._stopped = false;
    if (typeof document !== "undefined") document.addEventListener("visibilitychange", this._onVisibility);
    await this._loadValidator();
    await this._open("connect");
  }

  /** Use this token from now on (e.g. after the user signed in again) and connect. */
  async setToken(token) {
    this.token = token;
    if (this.state === "live" && this._ws) {
      this._send({ type: "refresh", id: this._id("r"), token });
      return;
    }
    if (this.state !== "connecting") {
      clearTimeout(this._timers.retry);
      await this.connect();
    }
  }

  /** Close for good (sign-out, page teardown). Keeps the stored position for this tab. */
  close() {
    this._stopped = true;
    this._clearTimers();
    if (typeof document !== "undefined") document.removeEventListener("visibilitychange", this._onVisibility);
    const ws = this._ws;
    this._ws = null;
    if (ws) ws.close(1000, "client closed");
    this._dropProbe();
    this._proven.clear();
    this._setState("idle", {});
  }

  /** Forget the stored resume position (e.g. on sign-out). */
  forgetPosition() {
    this.cursor.reset(null, 0);
    if (this.options.storage && this._positionUser) this.options.storage.removeItem(this._storageKey(this._positionUser));
  }

  /** Send an app-level `ping`; resolves with the `pong`, rejects after `pongTimeoutMs`. */
  ping() {
    return new Promise((resolve, reject) => {
      const id = this._id("p");
      const off = this.on("pong", (pong) => {
        if (pong.id === id) { off(); clearTimeout(timer); resolve(pong); }
      });
      const timer = setTimeout(() => { off(); reject(new Error("no pong")); }, this.options.pongTimeoutMs);
      if (!this._send({ type: "ping", id })) { off(); clearTimeout(timer); reject(new Error("not connected")); }
    });
  }

  /**
   * Cancel one of the user's generations over the stream (asyncapi.yaml `cancel`, the same
   * semantics as `POST /v1/generations/{id}/cancel`). Resolves with the `cancelResult`
   * (`{generationId, status}`); rejects with an Error whose `code` is the server's error code
   * (`not_found`, `illegal_transition`, `database_unavailable`, ...) or `not_connected` /
   * `timeout`. Every tab also receives the run's final `generationUpdate`.
   * @param {string} generationId
   * @param {{timeoutMs?: number}} [options]
   * @returns {Promise<import("./generated/types.js").CancelResult>}
   */
  cancel(generationId, { timeoutMs = 20000 } = {}) {
    return new Promise((resolve, reject) => {
      const id = this._id("c");
      const fail = (code, text) => Object.assign(new Error(`${code}: ${text}`), { code });
      const done = () => { offResult(); offError(); clearTimeout(timer); };
      const offResult = this.on("cancelResult", (result) => {
        if (result.id === id) { done(); resolve(result); }
      });
      const offError = this.on("error", (error) => {
        if (error.id === id) { done(); reject(fail(error.code, error.message)); }
      });
      const timer = setTimeout(() => { done(); reject(fail("timeout", "no answer to cancel")); }, timeoutMs);
      if (!this._send({ type: "cancel", id, generationId })) { done(); reject(fail("not_connected", "not connected")); }
    });
  }

  /**
   * The resume position (`{epoch, offset}`, plus `timestamp` when the event at `offset` was
   * received) or `null` before the first `welcome`.
   */
  get position() {
    return this.cursor.position;
  }

  // -- connection ----------------------------------------------------------------------------

  async _open(reason) {
    let token = this.token;
    if (!token || this._expired(token)) {
      token = await this._askToken(token ? "expired" : reason, token);
      if (!token) {
        this._setState(this.token ? "tokenExpired" : "authFailed", {});
        return;
      }
    }
    if (this._stopped) return;
    this.token = token;
    this._restorePosition(token);
    const wire = this.options.transports[this._wire];
    this._setTransport(wire, this.transport && this.transport !== wire ? "fallback" : "connect");
    this._setState("connecting", { attempt: this.attempt });
    let ws;
    try {
      ws = this._socket(wire);
    } catch (err) {
      this._closed(null, { code: 1006, reason: String(err) });
      return;
    }
    this._ws = ws;
    this._welcomed = false;
    this.stats.connects += 1;
    ws.onopen = () => this._sendAuth(ws);
    ws.onmessage = (event) => { if (ws === this._ws) this._receive(event.data); };
    ws.onclose = (event) => this._closed(ws, event);
    ws.onerror = () => {}; // a close event follows; it carries the code
    // A proxy may hold an upgrade (or a stream) open without ever answering: count it as failed.
    this._timers.open = setTimeout(() => {
      if (ws !== this._ws || this._welcomed) return;
      this._closed(ws, { code: 1006, reason: "no welcome in time" });
      ws.close(CLIENT_CLOSE, "no welcome in time");
    }, this.options.openTimeoutMs);
  }

  /** A new connection on `wire`: a WebSocket, or an SseConnection that looks like one. */
  _socket(wire) {
    const url = this.options.url || defaultUrl();
    if (wire === "websocket") return new this.options.WebSocket(url);
    return new SseConnection(this.options.sseUrl || sseUrlFor(url), { fetch: this.options.fetch || undefined });
  }

  _sendAuth(ws) {
    const auth = { type: "auth", id: this._id("a"), token: this.token };
    if (this.cursor.position) auth.resume = this.cursor.position;
    if (this.options.textDeltas) auth.textDeltas = true;
    this._send(auth, ws);
  }

  _closed(ws, event) {
    if (ws !== null && ws !== this._ws) return; // a socket we already gave up on
    this._ws = null;
    this._clearTimers();
    this._dropProbe();
    if (this._stopped) return;
    const code = event.code;
    const info = { closeCode: code, closeReason: event.reason || "" };
    // No `welcome` and no close code of the server's table: this wire did not get through —
    // blocked, or the server is down; a wire that worked before is an outage: keep it.
    if (!this._welcomed && !(code >= 4000 && code <= 4499) && !this._proven.has(this.transport)) this._wireFailed();
    if (code === CLOSE.authFailed || code === CLOSE.tokenExpired) {
      // Never retry the same token: ask the app for a new one.
      const previous = this.token;
      this._askToken(code === CLOSE.tokenExpired ? "expired" : "rejected", previous).then((token) => {
        if (this._stopped) return;
        if (token && token !== previous) {
          this.token = token;
          this._scheduleReconnect(info);
        } else {
          this._setState(code === CLOSE.tokenExpired ? "tokenExpired" : "authFailed", info);
        }
      });
      return;
    }
    if (isTerminalCode(code)) {
      this._setState("stopped", info);
      return;
    }
    this._scheduleReconnect(info); // 4000-4399, 1001, 1006, 1011, 1012, ...
  }

  _wireFailed() {
    this._wireFailures += 1;
    if (this._wireFailures < this.options.fallbackAfter || this.options.transports.length < 2) return;
    this._wire = (this._wire + 1) % this.options.transports.length;
    this._wireFailures = 0;
  }

  _setTransport(transport, reason) {
    const previous = this.transport;
    if (transport === previous) return;
    this.transport = transport;
    if (previous !== null) this.stats.transportSwitches += 1;
    this._emit("transport", { transport, previous, reason });
  }

  // -- back to the WebSocket ---------------------------------------------------------------

  _scheduleUpgrade() {
    clearTimeout(this._timers.upgrade);
    const { upgradeRetryMs, transports } = this.options;
    if (this.transport !== "sse" || !transports.includes("websocket") || !(upgradeRetryMs > 0)) return;
    this._timers.upgrade = setTimeout(() => this._tryUpgrade(), upgradeRetryMs);
  }

  /**
   * Make before break: a WebSocket resumes from the position while SSE keeps delivering; once
   * it has its `welcome` it replaces the stream. It replays from where it was asked, so the
   * events SSE delivered in between arrive twice and the cursor drops the second copy.
   */
  _tryUpgrade() {
    if (this.state !== "live" || this.transport !== "sse" || this._probe) return;
    let ws;
    try {
      ws = new this.options.WebSocket(this.options.url || defaultUrl());
    } catch {
      this._scheduleUpgrade();
      return;
    }
    this._probe = ws;
    const giveUp = () => {
      if (this._probe !== ws) return;
      this._dropProbe();
      this._scheduleUpgrade();
    };
    this._timers.probe = setTimeout(giveUp, this.options.openTimeoutMs);
    ws.onopen = () => this._sendAuth(ws);
    ws.onerror = () => {};
    ws.onclose = (event) => (this._probe === ws ? giveUp() : this._closed(ws, event));
    ws.onmessage = (event) => {
      if (ws === this._ws) {
        this._receive(event.data);
      } else if (this._probe === ws) {
        if (messageType(event.data) !== "welcome") { giveUp(); return; } // e.g. `error` before a close
        this._promote(ws);
        this._receive(event.data);
      }
    };
  }

  _promote(ws) {
    const old = this._ws;
    clearTimeout(this._timers.probe);
    clearTimeout(this._timers.pong); // a ping in flight on the old wire says nothing of the new one
    this._timers.pong = null;
    this._probe = null;
    this._ws = ws;
    this._welcomed = false;
    this._wire = this.options.transports.indexOf("websocket");
    this._wireFailures = 0;
    this._setTransport("websocket", "upgrade");
    if (old) old.close(1000, "switched to WebSocket");
  }

  _dropProbe() {
    const probe = this._probe;
    clearTimeout(this._timers.probe);
    this._probe = null;
    if (probe) probe.close(CLIENT_CLOSE, "not needed");
  }

  _scheduleReconnect(info) {
    this.attempt += 1;
    const { backoffInitialMs, backoffMaxMs, random } = this.options;
    const cap = Math.min(backoffMaxMs, backoffInitialMs * 2 ** Math.min(this.attempt - 1, 16));
    let delay = Math.floor(random() * cap); // full jitter
    if (info.closeCode === CLOSE.tooManyConnections) delay = Math.max(delay, 5000);
    this._setState("reconnecting", { ...info, retryInMs: delay, retryAt: Date.now() + delay, attempt: this.attempt });
    this._timers.retry = setTimeout(() => this._open("connect"), delay);
  }

  async _askToken(reason, previous) {
    try {
      const token = await this.options.getToken({ reason, previous });
      return typeof token === "string" && token ? token : null;
    } catch (err) {
      console.warn("livegate: getToken failed", err);
      return null;
    }
  }

  _expired(token) {
    const { exp } = tokenClaims(token);
    return typeof exp === "number" && exp * 1000 <= Date.now();
  }

  // -- frames ----------------------------------------------------------------------------------

  _send(message, ws = this._ws) {
    if (!ws || ws.readyState !== 1) return false;
    if (this._validator) {
      const errors = this._validator(message.type, message, "client");
      if (errors) this._problem({ kind: "invalidOutgoing", type: message.type, errors, frame: JSON.stringify(message) });
    }
    ws.send(JSON.stringify(message));
    this.stats.framesSent += 1;
    this._emit("send", message);
    return true;
  }

  _receive(data) {
    this.stats.framesReceived += 1;
    if (typeof data !== "string") {
      this._problem({ kind: "binaryFrame", frame: "(binary)" });
      return;
    }
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      this._problem({ kind: "badJson", frame: data });
      return;
    }
    const type = message && typeof message === "object" ? message.type : undefined;
    if (!SERVER_MESSAGE_TYPES.includes(type)) {
      this._problem({ kind: "unknownType", type: String(type), frame: data });
      return;
    }
    if (this._validator) {
      const errors = this._validator(type, message);
      if (errors) this._problem({ kind: "invalidFrame", type, errors, frame: data }); // still handled: lenient
    }
    this._dispatch(message);
  }

  /** @param {ServerMessage} message */
  _dispatch(message) {
    switch (message.type) {
      case "welcome":
        this._welcome(message);
        break;
      case "generationUpdate":
      case "generationProgress":
      case "notification":
        this._streamEvent(message);
        return;
      case "tokenExpiring":
        this._refresh(message);
        break;
      case "cancelResult": // answered to its `cancel()` promise through the emitted event
      case "refreshed":
      case "pong":
        if (message.type === "pong") {
          clearTimeout(this._timers.pong);
          this._timers.pong = null;
        }
        break;
      case "error":
        if (message.fatal) console.warn(`livegate: ${message.code}: ${message.message}`);
        break;
      default: { // unreachable: filtered in _receive; kept so a new type cannot slip through
        const unknown = /** @type {any} */ (message);
        this._problem({ kind: "unknownType", type: String(unknown.type), frame: JSON.stringify(unknown) });
        return;
      }
    }
    this._emit(message.type, message);
  }

  _welcome(welcome) {
    const asked = this.cursor.position !== null;
    this.welcome = welcome;
    this.attempt = 0;
    this._welcomed = true;
    this._wireFailures = 0;
    this._proven.add(this.transport);
    clearTimeout(this._timers.open);
    if (welcome.recovered !== true) {
      this.cursor.reset(welcome.epoch, welcome.offset);
      this._latestProgress.clear();
      this.texts.clear(); // offsets restart: a text continues only from a prefix
      this._savePosition();
    }
    this._setState("live", {});
    this._schedulePing();
    this._scheduleUpgrade();
    if (welcome.recovered !== true) {
      // Events may have happened that this tab will never receive: the app reloads over HTTP.
      this._emit("resync", { reason: asked ? "notRecovered" : "fresh", welcome });
    }
  }

  _streamEvent(event) {
    const supersedes = Array.isArray(event.supersedes) ? event.supersedes : [];
    // `event` is the frame as parsed: its `timestamp` is the server's string, unchanged.
    if (!this.cursor.accept(event.epoch, event.offset, supersedes, event.timestamp)) {
      this.stats.duplicates += 1;
      this._emit("duplicate", event);
      return;
    }
    this._savePosition();
    if (event.type === "generationProgress") {
      // A replay after a conflation hole may bring an older progress than one already shown.
      if ((this._latestProgress.get(event.generationId) || 0) > event.offset) return;
      this._latestProgress.set(event.generationId, event.offset);
      this._text(event);
    } else if (event.type === "generationUpdate" && FINAL_STATUSES.has(event.status)) {
      this.texts.forget(event.generationId);
      this._fetchedAt.delete(event.generationId);
    }
    this._emit("event", event);
    this._emit(event.type, event);
  }

  /** Set `partialText` on a progress event from its delta (asyncapi.yaml "Streamed text"). */
  _text(event) {
    const id = event.generationId;
    if (typeof event.textDelta === "string" && Number.isInteger(event.textOffset)) {
      const text = this.texts.apply(id, event.offset, event.textOffset, event.textDelta);
      if (text !== null) event.partialText = text;
      else this._fetchPrefix(id);
    } else if (typeof event.partialText === "string") {
      this.texts.replace(id, event.offset, event.partialText);
    } else {
      const text = this.texts.text(id);
      if (text !== null) event.partialText = text;
    }
  }

  async _fetchPrefix(generationId) {
    const last = this._fetchedAt.get(generationId);
    if (last !== undefined && Date.now() - last < PREFIX_RETRY_MS) return; // the next delta asks again
    this._fetchedAt.set(generationId, Date.now());
    let prefix = null;
    try {
      prefix = await (this.options.fetchText || ((id) => this._snapshotText(id)))(generationId);
    } catch (err) {
      console.warn("livegate: could not fetch the streamed text so far", err);
    }
    if (typeof prefix !== "string") return;
    const text = this.texts.seed(generationId, prefix);
    if (text !== null) {
      this._emit("text", { generationId, text, offset: this._latestProgress.get(generationId) || 0 });
    }
  }

  async _snapshotText(generationId) {
    const base = this.options.url ? this.options.url.replace(/^ws/, "http").replace(/\/v1\/ws$/, "") : "";
    const response = await fetch(`${base}/v1/generations/${encodeURIComponent(generationId)}`, {
      headers: { authorization: `Bearer ${this.token}` },
    });
    if (!response.ok) return null;
    const text = (await response.json()).progress?.partialText;
    return typeof text === "string" ? text : null;
  }

  async _refresh(expiring) {
    const token = await this._askToken("refresh", this.token);
    if (token && token !== this.token) {
      this.token = token;
      this._send({ type: "refresh", id: this._id("r"), token });
    } else if (token === null) {
      console.warn(`livegate: token expires in ${expiring.secondsLeft}s and getToken gave none`);
    }
  }

  // -- heartbeats --------------------------------------------------------------------------

  _schedulePing() {
    clearInterval(this._timers.ping);
    if (typeof document === "undefined" || document.visibilityState !== "hidden") return;
    const every = this.options.hiddenPingMs || this.welcome?.heartbeatIntervalMs || 25000;
    this._timers.ping = setInterval(() => this._heartbeat(), every);
  }

  _visibilityChanged() {
    if (this.state !== "live") return;
    this._schedulePing();
    this._heartbeat(); // hidden: start checking; visible again: is the socket still alive?
  }

  _heartbeat() {
    if (this.state !== "live") return;
    // The deadline runs from the oldest unanswered ping: later pings must not push it out.
    if (this._send({ type: "ping", id: this._id("p") }) && this._timers.pong === null) {
      this._timers.pong = setTimeout(() => {
        this._timers.pong = null;
        const ws = this._ws; // silent: consider it dead, reconnect and resume
        if (!ws) return;
        this._closed(ws, { code: 1006, reason: "no pong" });
        ws.close(CLIENT_CLOSE, "no pong");
      }, this.options.pongTimeoutMs);
    }
  }

  _clearTimers() {
    clearTimeout(this._timers.retry);
    clearInterval(this._timers.ping);
    clearTimeout(this._timers.pong);
    clearTimeout(this._timers.open);
    clearTimeout(this._timers.upgrade);
    clearTimeout(this._timers.probe);
    this._timers = { retry: null, ping: null, pong: null, open: null, upgrade: null, probe: null };
  }

  // -- resume position, per tab and user -----------------------------------------------------

  _storageKey(user) {
    return `livegate.position:${user}`;
  }

  _restorePosition(token) {
    const user = tokenClaims(token).sub || "";
    if (user === this._positionUser) return;
    this._positionUser = user;
    this.cursor.reset(null, 0);
    const stored = this.options.storage?.getItem(this._storageKey(user));
    if (!stored) return;
    try {
      // `timestamp` is absent in positions stored before it existed: resume without it.
      const { epoch, offset, timestamp } = JSON.parse(stored);
      const stamp = typeof timestamp === "string" && timestamp ? timestamp : null;
      if (typeof epoch === "string" && Number.isInteger(offset) && offset >= 0) this.cursor.reset(epoch, offset, stamp);
    } catch { /* a corrupt entry: start fresh */ }
  }

  _savePosition() {
    const position = this.cursor.position;
    if (this.options.storage && position && this._positionUser !== null) {
      this.options.storage.setItem(this._storageKey(this._positionUser), JSON.stringify(position));
    }
  }

  // -- validation --------------------------------------------------------------------------

  async _loadValidator() {
    const wanted = this.options.validate === "auto" ? isDevelopment() : Boolean(this.options.validate);
    if (!wanted || this._validator) return;
    try {
      const bundle = await import(new URL("./generated/validate.js", import.meta.url).href);
      this._validator = (type, message, direction = "server") => {
        const validate = bundle[(direction === "server" ? bundle.SERVER_TYPES : bundle.CLIENT_TYPES)[type]];
        return validate && !validate(message) ? validate.errors : null;
      };
    } catch (err) {
      console.warn("livegate: frame validation unavailable", err);
    }
  }

  // -- plumbing ----------------------------------------------------------------------------

  _problem(problem) {
    problem.frame = problem.frame.slice(0, 2000);
    console.error(`livegate protocol problem: ${problem.kind}${problem.type ? ` (${problem.type})` : ""}`, problem);
    this._emit("protocolError", problem);
  }

  _setState(state, info) {
    const previous = this.state;
    this.state = state;
    this._emit("state", { state, previous, transport: this.transport, ...info });
  }

  _emit(name, payload) {
    for (const handler of this._handlers.get(name) || []) {
      try {
        handler(payload);
      } catch (err) {
        console.error(`livegate: a "${name}" handler threw`, err);
      }
    }
  }

  _id(prefix) {
    this._ids += 1;
    return `${prefix}${this._ids}`;
  }
}

function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/ws`;
}

/** The SSE endpoint next to a WebSocket URL: `wss://h/v1/ws` -> `https://h/v1/sse`. */
export function sseUrlFor(wsUrl) {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === "wss:" ? "https:" : "http:";
  url.pathname = url.pathname.replace(/\/ws$/, "/sse");
  return url.href;
}

function messageType(data) {
  try {
    return JSON.parse(data).type;
  } catch {
    return undefined;
  }
}
