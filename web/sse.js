// The Server-Sent Events wire of web/client.js (asyncapi.yaml, the SSE channel /v1/sse).
//
// `SseConnection` looks like a WebSocket to the client (readyState, send, close, onopen,
// onmessage, onclose), so the client drives both wires with the same code:
// * the `auth` frame the client sends first becomes `GET /v1/sse` with `Authorization: Bearer`
//   and, when it asks to resume, `Last-Event-ID: <epoch>:<offset>` and the `lastEventTimestamp`
//   query parameter (`auth.resume.timestamp`, when the client has one) (fetch streaming: the token
//   never travels in a URL, and every event name reaches us, unknown ones included — an
//   EventSource would silently drop those);
// * every later frame (`refresh`, `ping`, ...) is `POST /v1/sse/{connectionId}/messages` with
//   the same JSON; the answers arrive on the stream;
// * `event: close` (`{code, reason}`) closes it with the contract's close code; a stream that
//   ends without one, a network error, or silence for twice the heartbeat interval closes
//   with 1006;
// * a refused request closes with the close code its problem+json `code` maps to (docs/codes.md).
// No dependency, no timers outside this object; `fetch` is injectable for tests.

/**
 * Incremental `text/event-stream` parser (WHATWG HTML, "Interpreting an event stream"):
 * `feed(text)` returns the events completed by that chunk, as `{event, data, id}`; comments
 * are counted in `comments` (the server's keep-alives).
 */
export class EventStreamParser {
  constructor() {
    this.buffer = "";
    this.comments = 0;
    this._reset();
  }

  _reset() {
    this.event = "";
    this.data = [];
    this.id = null;
  }

  /** @param {string} chunk @returns {Array<{event: string, data: string, id: string|null}>} */
  feed(chunk) {
    this.buffer += chunk;
    // A chunk may end between the CR and LF of one line break: keep a trailing CR for later.
    const holdCr = this.buffer.endsWith("\r");
    const text = holdCr ? this.buffer.slice(0, -1) : this.buffer;
    const lines = text.split(/\r\n|\r|\n/);
    this.buffer = lines.pop() + (holdCr ? "\r" : "");
    const events = [];
    for (const line of lines) {
      if (line === "") {
        if (this.data.length) events.push({ event: this.event || "message", data: this.data.join("\n"), id: this.id });
        this._reset();
      } else if (line.startsWith(":")) {
        this.comments += 1;
      } else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") this.event = value;
        else if (field === "data") this.data.push(value);
        else if (field === "id" && !value.includes("\0")) this.id = value;
        // `retry:` is the browser's reconnect hint; the client has its own documented backoff.
      }
    }
    return events;
  }
}

/** Close code for a refused SSE request: from its problem+json `code` (docs/codes.md), else its status. */
export function closeCodeForRefusal(status, code) {
  if (code === "token_expired") return 4402;
  if (typeof code === "string" && code.startsWith("token_")) return 4401;
  const byCode = { too_many_connections: 4003, rate_limited: 4004, unavailable: 4006, origin_not_allowed: 4403 };
  if (code in byCode) return byCode[code];
  const byStatus = { 401: 4401, 403: 4403, 429: 4004, 503: 4006 };
  return byStatus[status] || 1006; // 404 (a gateway without SSE), 5xx, ...: the wire failed
}

export class SseConnection {
  /**
   * @param {string} url The SSE endpoint, e.g. `https://gateway.example/v1/sse`.
   * @param {Object} [options]
   * @param {typeof fetch} [options.fetch]
   */
  constructor(url, options = {}) {
    this.url = url;
    this.readyState = 0; // WebSocket's CONNECTING / OPEN / CLOSING / CLOSED: 0 / 1 / 2 / 3
    this.connectionId = null;
    this.lastEventId = null;
    this.onopen = null;
    this.onmessage = null;
    this.onclose = null;
    this.onerror = null; // never called: every failure is a close with a code, as for a WebSocket
    this._fetch = options.fetch || globalThis.fetch.bind(globalThis);
    this._abort = new AbortController();
    this._token = null;
    this._heartbeatMs = null;
    this._silence = null;
    // Open at once: the client's first frame (`auth`) is what starts the request.
    setTimeout(() => {
      if (this.readyState !== 0) return;
      this.readyState = 1;
      if (this.onopen) this.onopen();
    }, 0);
  }

  /** @param {string} frame One client message (JSON text), as for `WebSocket.send`. */
  send(frame) {
    if (this.readyState !== 1) return;
    const message = JSON.parse(frame);
    if (message.type === "auth") {
      this._token = message.token;
      this._stream(message.resume, message.textDeltas === true);
      return;
    }
    if (message.type === "refresh") this._token = message.token; // the credential from now on
    this._post(frame);
  }

  close(code = 1000, reason = "") {
    this._finish(code, reason);
  }

  // -- the stream -----------------------------------------------------------------------------

  async _stream(resume, textDeltas) {
    const headers = { Accept: "text/event-stream", Authorization: `Bearer ${this._token}` };
    if (resume) headers["Last-Event-ID"] = `${resume.epoch}:${resume.offset}`;
    // `auth.textDeltas` and `auth.resume.timestamp` of the WebSocket are query parameters here.
    const query = new URLSearchParams();
    if (textDeltas) query.set("textDeltas", "true");
    if (resume && typeof resume.timestamp === "string") query.set("lastEventTimestamp", resume.timestamp);
    const extra = query.toString();
    const url = extra ? `${this.url}${this.url.includes("?") ? "&" : "?"}${extra}` : this.url;
    let response;
    try {
      response = await this._fetch(url, { headers, cache: "no-store", signal: this._abort.signal });
    } catch (err) {
      this._finish(1006, `network: ${err.message || err}`);
      return;
    }
    if (!response.ok || !response.body) {
      const problem = await response.json().catch(() => ({}));
      this._finish(closeCodeForRefusal(response.status, problem.code), `HTTP ${response.status} ${problem.code || ""}`.trim());
      return;
    }
    const parser = new EventStreamParser();
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    try {
      for (;;) {
        this._watchSilence();
        const { value, done } = await reader.read();
        if (done || this.readyState === 3) break;
        for (const event of parser.feed(value)) {
          if (this.readyState === 3) break; // closed by a handler: nothing more is ours
          this._event(event);
        }
      }
    } catch (err) {
      this._finish(1006, `network: ${err.message || err}`);
      return;
    }
    this._finish(1006, "stream ended without a close event");
  }

  _event({ event, data, id }) {
    if (event === "close") {
      let close = {};
      try { close = JSON.parse(data); } catch { /* not JSON: an abnormal close */ }
      this._finish(Number.isInteger(close.code) ? close.code : 1006, close.reason || "");
      return;
    }
    if (id !== null) this.lastEventId = id;
    if (event === "welcome") {
      try {
        const welcome = JSON.parse(data);
        this.connectionId = welcome.connectionId;
        this._heartbeatMs = welcome.heartbeatIntervalMs;
      } catch { /* the client reports the bad frame */ }
    }
    if (this.onmessage) this.onmessage({ data, lastEventId: id || "" });
  }

  /**
   * The server writes at least a comment every heartbeat interval (asyncapi.yaml
   * `x-sse.keepalive`): twice that without a byte means a dead link that nobody closed.
   */
  _watchSilence() {
    clearTimeout(this._silence);
    if (!this._heartbeatMs) return;
    this._silence = setTimeout(() => this._finish(1006, "stream silent"), 2 * this._heartbeatMs);
  }

  async _post(frame) {
    if (!this.connectionId) return; // before `welcome` only `auth` is sent
    const url = `${this.url}/${encodeURIComponent(this.connectionId)}/messages`;
    try {
      const response = await this._fetch(url, {
        method: "POST", body: frame, cache: "no-store",
        headers: { "Content-Type": "application/json", Authorization: `Bearer ${this._token}` },
      });
      // Answers (and `error`s) come on the stream; a refused POST means the stream is gone or
      // not ours: the stream's own close tells the client what to do.
      if (!response.ok) console.warn(`livegate: POST ${url} answered ${response.status}`);
    } catch (err) {
      console.warn("livegate: message not delivered", err); // a ping without pong times out
    }
  }

  _finish(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    clearTimeout(this._silence);
    this._abort.abort();
    // Like a WebSocket's, the close event comes later, never inside the caller's own call.
    setTimeout(() => this.onclose && this.onclose({ code, reason }), 0);
  }
}
