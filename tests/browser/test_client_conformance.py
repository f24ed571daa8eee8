"""web/client.js in the browser, on a scripted socket and a scripted SSE stream: every server
message example of asyncapi.yaml is handled (none reported unknown) over both wires, unknown
and invalid frames are reported, and the close-code table, backoff, dedupe, per-tab resume
position, the fallback to SSE and the switch back to a WebSocket behave as documented.

The client runs with validation on (the committed ajv bundle), a fake ``WebSocket`` injected
through its ``WebSocket`` option and a fake ``fetch`` (its ``fetch`` option) for the SSE wire;
every frame it sends, over either wire, is validated here against asyncapi.yaml with the
independent ``jsonschema`` validator.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import pytest_asyncio
from playwright.async_api import Page

from livegate.testing.gateway import RunningGateway
from livegate.testing.spec_validation import assert_valid_message, asyncapi_document
from tests.browser.conftest import Pages

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser-client_conformance"),
    pytest.mark.asyncio(loop_scope="module"),
]

# A harness on the page: `make(opts)` builds a client on a scripted socket; `h.feed(msg)`
# delivers a server frame, `h.close(code)` closes the socket from the server side.
HARNESS = """
async () => {
  const mod = await import('/client.js');
  class FakeSocket {
    constructor(url) { this.url = url; this.readyState = 0; this.sent = []; FakeSocket.all.push(this);
      setTimeout(() => { if (this.refused) return; this.readyState = 1; this.onopen && this.onopen(); }, 0); }
    send(data) { this.sent.push(data); window.__sent.push(data); }
    close(code, reason) { if (this.readyState === 3) return; this.readyState = 3;
      setTimeout(() => this.onclose && this.onclose({ code: code || 1005, reason: reason || '' }), 0); }
    serverFeed(msg) { this.onmessage({ data: typeof msg === 'string' ? msg : JSON.stringify(msg) }); }
    serverClose(code) { this.readyState = 3; this.onclose({ code, reason: 'server' }); }
    refuse() { setTimeout(() => { if (this.readyState !== 0) return; this.readyState = 3;
      this.onclose && this.onclose({ code: 1006, reason: '' }); }, 0); this.refused = true; }
  }
  FakeSocket.all = [];
  // The SSE wire, scripted: `fetch` answers GET /v1/sse with a stream the test writes to
  // (`stream().event(msg, id)`, `.push(text)`, `.end()`, `.fail()`) and records every request;
  // POSTed client messages land in window.__sent too. `refuse = {status, body}` refuses the next GET.
  class FakeSse {
    constructor() { this.requests = []; this.streams = []; this.refuse = null;
      this.fetch = (url, init) => this.answer(url, init || {}); }
    async answer(url, init) {
      const req = { url: String(url), method: init.method || 'GET', headers: { ...(init.headers || {}) },
                    body: init.body ?? null };
      this.requests.push(req);
      if (req.method === 'POST') { window.__sent.push(init.body); return new Response(null, { status: 202 }); }
      if (this.refuse) { const { status, body } = this.refuse; this.refuse = null;
        return new Response(JSON.stringify(body), { status, headers: { 'Content-Type': 'application/problem+json' } }); }
      let controller;
      const body = new ReadableStream({ start(c) { controller = c; } });
      const stream = { req, aborted: false, open: true,
        push: (text) => { if (stream.open) controller.enqueue(new TextEncoder().encode(text)); },
        event: (msg, id) => stream.push(`event: ${msg.type}\\ndata: ${JSON.stringify(msg)}\\n` + (id ? `id: ${id}\\n` : '') + '\\n'),
        end: () => { stream.open = false; controller.close(); },
        fail: () => { stream.open = false; controller.error(new TypeError('network error')); } };
      init.signal?.addEventListener('abort', () => { stream.aborted = true;
        if (stream.open) { stream.open = false; controller.error(new DOMException('aborted', 'AbortError')); } });
      this.streams.push(stream);
      return new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } });
    }
  }
  window.__sent = [];
  window.__mod = mod;
  window.make = (opts = {}) => {
    const log = { events: [], problems: [], states: [], tokenRequests: [], resyncs: [], duplicates: [], transports: [],
                  offsets: [] };
    const tokens = opts.tokens || ['tok-1', 'tok-2', 'tok-3'];
    const mine = [];
    const ctl = { refusals: opts.wsFail || 0 }; // the next N sockets never open (an upgrade refused): 1006
    class Socket extends FakeSocket {
      constructor(url) { super(url); mine.push(this); if (ctl.refusals > 0) { ctl.refusals -= 1; this.refuse(); } }
    }
    const sse = new FakeSse();
    const client = new mod.LivegateClient({
      url: 'ws://fake/v1/ws', WebSocket: Socket, validate: true, storage: opts.storage === undefined ? null : opts.storage,
      backoffInitialMs: 50, backoffMaxMs: 400, random: opts.random || (() => 0.5),
      transports: ['websocket'], fetch: sse.fetch,
      getToken: async (req) => { log.tokenRequests.push(req.reason); return tokens.length ? tokens.shift() : null; },
      ...(opts.client || {}),
    });
    for (const t of mod.SERVER_MESSAGE_TYPES) client.on(t, (m) => log.events.push(m.type));
    client.on('protocolError', (p) => log.problems.push({ kind: p.kind, type: p.type, errors: p.errors }));
    client.on('state', (s) => log.states.push([s.state, s.closeCode ?? null, s.retryInMs ?? null]));
    client.on('resync', (r) => log.resyncs.push(r.reason));
    client.on('duplicate', (e) => log.duplicates.push(e.offset));
    client.on('event', (e) => log.offsets.push(e.offset));
    client.on('transport', (t) => log.transports.push([t.transport, t.reason]));
    const socket = () => mine[mine.length - 1];
    return { client, log, socket, sockets: mine, feed: (m) => socket().serverFeed(m),
             close: (c) => socket().serverClose(c), sse, stream: () => sse.streams[sse.streams.length - 1],
             refuseSockets: (n) => { ctl.refusals = n; } };
  };
  window.until = async (cond, ms = 5000) => { const end = Date.now() + ms;
    while (!cond()) { if (Date.now() > end) throw new Error('timeout: ' + cond); await new Promise(r => setTimeout(r, 10)); } };
}
"""


def server_examples(channel: str = "userStream") -> list[dict[str, Any]]:
    """Every example of a message the server sends on ``channel`` (its operations and replies)."""
    doc = asyncapi_document()
    ops = [op for op in doc["operations"].values() if op["channel"]["$ref"] == f"#/channels/{channel}"]
    names = {ref["$ref"].split("/")[-1] for op in ops if op["action"] == "send" for ref in op["messages"]}
    names |= {ref["$ref"].split("/")[-1] for op in ops for ref in op.get("reply", {}).get("messages", [])}
    examples = []
    for name in sorted(names):
        for example in doc["components"]["messages"][name]["examples"]:
            examples.append(example["payload"])
    return examples


@pytest_asyncio.fixture(loop_scope="module")
async def harness(gateway: RunningGateway, pages: Pages) -> Page:
    log = await pages.new("harness")
    await log.page.goto(gateway.http_url + "/client.js")  # a page of the sandbox (its CSP allows the import)
    await log.page.evaluate(HARNESS)
    return log.page


async def sent_frames(page: Page) -> list[dict[str, Any]]:
    return [assert_valid_message(frame, "client") for frame in await page.evaluate("window.__sent")]


def assert_each_handled(examples: list[dict[str, Any]], results: list[dict[str, Any]]) -> None:
    """Each example reached the app as its own type, and nothing was reported."""
    for example, result in zip(examples, results, strict=True):
        assert result["problems"] == [], (example, result)
        assert result["events"][-1] == example["type"], (example, result)


async def test_every_server_example_is_handled_without_an_unknown_type(harness: Page) -> None:
    examples = server_examples()
    assert {e["type"] for e in examples} == {"welcome", "refreshed", "pong", "tokenExpiring", "generationUpdate",
                                              "generationProgress", "notification", "error",
                                              "cancelResult"}
    results = await harness.evaluate("""async (examples) => {
      const out = [];
      for (const example of examples) {
        const h = make();
        h.client.connect();
        await until(() => h.socket() && h.socket().sent.length === 1);   // auth sent
        if (example.type !== 'welcome') {
          h.feed({ type: 'welcome', connectionId: 'c', userId: 'alice', expiresAt: '2030-01-01T00:00:00Z',
                   heartbeatIntervalMs: 25000, epoch: example.epoch || 'e1', offset: (example.offset || 1) - 1 });
        }
        h.feed(example);
        await new Promise(r => setTimeout(r, 0));
        out.push({ type: example.type, events: h.log.events, problems: h.log.problems, state: h.client.state });
        h.client.close();
      }
      return out;
    }""", examples)
    assert_each_handled(examples, results)
    assert len(await sent_frames(harness)) >= len(examples)


async def test_unknown_types_invalid_frames_and_bad_json_are_reported(harness: Page) -> None:
    result = await harness.evaluate("""async () => {
      const h = make();
      h.client.connect();
      await until(() => h.socket() && h.socket().sent.length === 1);
      h.feed({ type: 'welcome', connectionId: 'c', userId: 'alice', expiresAt: '2030-01-01T00:00:00Z',
               heartbeatIntervalMs: 25000, epoch: 'e1', offset: 0 });
      h.feed({ type: 'generationTeleport', epoch: 'e1', offset: 1 });
      h.feed({ type: 'generationProgress', epoch: 'e1', offset: 1, timestamp: 'yesterday',
               generationId: 'g', fraction: 1.5 });
      h.feed('not json');
      return h.log;
    }""")
    kinds = [(p["kind"], p["type"]) for p in result["problems"]]
    assert kinds == [("unknownType", "generationTeleport"), ("invalidFrame", "generationProgress"), ("badJson", None)]
    paths = {e["instancePath"] for e in result["problems"][1]["errors"]}
    assert paths & {"/timestamp", "/fraction"}
    assert "generationTeleport" not in result["events"]


async def test_dedupe_by_offset_supersedes_and_the_per_tab_resume_position(harness: Page) -> None:
    result = await harness.evaluate("""async () => {
      const ev = (offset, extra = {}) => ({ type: 'generationProgress', epoch: 'e1', offset,
        timestamp: `2026-11-25T18:30:0${offset}.5Z`, generationId: 'g', fraction: 0.5, ...extra });
      sessionStorage.clear();
      const h = make({ storage: sessionStorage });
      h.client.connect();
      await until(() => h.socket() && h.socket().sent.length === 1);
      const firstAuth = JSON.parse(h.socket().sent[0]);
      h.feed({ type: 'welcome', connectionId: 'c', userId: 'alice', expiresAt: '2030-01-01T00:00:00Z',
               heartbeatIntervalMs: 25000, epoch: 'e1', offset: 3 });
      h.feed(ev(4)); h.feed(ev(4)); h.feed(ev(7, { supersedes: [5, 6] })); h.feed(ev(6));
      const stored = sessionStorage.getItem('livegate.position:');
      h.close(4000);                                   // server restart: reconnect and resume
      await until(() => h.sockets.length === 2 && h.socket().sent.length === 1);
      const resumeAuth = JSON.parse(h.socket().sent[0]);
      h.feed({ type: 'welcome', connectionId: 'c2', userId: 'alice', expiresAt: '2030-01-01T00:00:00Z',
               heartbeatIntervalMs: 25000, epoch: 'e1', offset: 9, recovered: true });
      h.feed(ev(7)); h.feed(ev(8)); h.feed(ev(9));
      const afterRecovered = h.client.position;
      h.close(4001);
      await until(() => h.sockets.length === 3 && h.socket().sent.length === 1);
      h.feed({ type: 'welcome', connectionId: 'c3', userId: 'alice', expiresAt: '2030-01-01T00:00:00Z',
               heartbeatIntervalMs: 25000, epoch: 'e2', offset: 2, recovered: false });
      return { log: h.log, firstAuth, resumeAuth, stored, afterRecovered, final: h.client.position,
               tokens: h.sockets.map(s => JSON.parse(s.sent[0]).token) };
    }""")
    assert "resume" not in result["firstAuth"]
    # The position and the timestamp of the event at it (7 was received; 5 and 6 only superseded).
    assert result["stored"] == '{"epoch":"e1","offset":7,"timestamp":"2026-11-25T18:30:07.5Z"}'
    assert result["resumeAuth"]["resume"] == {"epoch": "e1", "offset": 7, "timestamp": "2026-11-25T18:30:07.5Z"}
    assert result["log"]["duplicates"] == [4, 6, 7]
    assert result["afterRecovered"] == {"epoch": "e1", "offset": 9, "timestamp": "2026-11-25T18:30:09.5Z"}
    assert result["log"]["resyncs"] == ["fresh", "notRecovered"]
    assert result["final"] == {"epoch": "e2", "offset": 2}  # a welcome's position: no timestamp
    assert result["tokens"] == ["tok-1", "tok-1", "tok-1"]  # reconnect codes reuse a valid token
    assert [s[0] for s in result["log"]["states"]].count("reconnecting") == 2
    await sent_frames(harness)


async def test_the_cursor_keeps_the_timestamp_of_a_received_event_only(harness: Page) -> None:
    """web/client.js ``StreamCursor`` follows the rules of livegate.protocol.cursor (whose
    property test is tests/protocol/test_cursor.py): ``timestamp`` is that of the event at the
    position when it was received; absent when the position was reached only through
    ``supersedes``, after a ``welcome`` reset, or restored from storage without one."""
    result = await harness.evaluate("""async () => {
      const { StreamCursor } = window.__mod;
      const t = (o) => `2026-11-25T18:31:${String(o).padStart(2, '0')}.250Z`;
      const snap = (c) => [c.offset, c.timestamp, c.position];
      const c = new StreamCursor('e1', 4);
      const out = { welcome: snap(c) };
      c.accept('e1', 5, [], t(5)); out.received = snap(c);
      out.duplicate = [c.accept('e1', 5, [], 'other'), c.timestamp];
      c.accept('e1', 8, [6, 7], t(8)); out.supersedesThenOwn = snap(c);
      c.accept('e1', 10, [], t(10)); out.beyondHole = snap(c);          // 9 missing: unchanged
      c.accept('e1', 13, [9], t(13)); out.stopsOnReceived = snap(c);     // 9 superseded, 10 received, 11 missing
      c.accept('e1', 15, [11], t(15)); out.stopsOnSuperseded = snap(c); // 11 superseded, 12 missing
      c.accept('e1', 12, [], t(12)); out.filled = snap(c);
      c.reset('e2', 40); out.reset = snap(c);
      out.otherEpoch = [c.accept('e1', 41, [], t(41)), c.timestamp];
      // Restored positions: with a timestamp (this client stored it), and without (an old entry).
      const restored = [];
      for (const stored of [{ epoch: 'e1', offset: 3, timestamp: t(3) }, { epoch: 'e1', offset: 3 }]) {
        sessionStorage.clear();
        sessionStorage.setItem('livegate.position:', JSON.stringify(stored));
        const h = make({ storage: sessionStorage });
        h.client.connect();
        await until(() => h.socket() && h.socket().sent.length === 1);
        restored.push(JSON.parse(h.socket().sent[0]).resume);
        h.client.close();
      }
      sessionStorage.clear();
      return { ...out, restored };
    }""")

    def t(offset: int) -> str:
        return f"2026-11-25T18:31:{offset:02d}.250Z"

    assert result["welcome"] == [4, None, {"epoch": "e1", "offset": 4}]
    assert result["received"] == [5, t(5), {"epoch": "e1", "offset": 5, "timestamp": t(5)}]
    assert result["duplicate"] == [False, t(5)]
    assert result["supersedesThenOwn"] == [8, t(8), {"epoch": "e1", "offset": 8, "timestamp": t(8)}]
    assert result["beyondHole"][:2] == [8, t(8)]
    assert result["stopsOnReceived"][:2] == [10, t(10)]
    assert result["stopsOnSuperseded"] == [11, None, {"epoch": "e1", "offset": 11}]
    assert result["filled"][:2] == [13, t(13)]
    assert result["reset"] == [40, None, {"epoch": "e2", "offset": 40}]
    assert result["otherEpoch"] == [False, None]
    assert result["restored"] == [{"epoch": "e1", "offset": 3, "timestamp": t(3)}, {"epoch": "e1", "offset": 3}]
    await sent_frames(harness)


async def test_close_codes_token_expiry_refresh_and_backoff_with_full_jitter(harness: Page) -> None:
    result = await harness.evaluate("""async () => {
      const welcome = { type: 'welcome', connectionId: 'c', userId: 'alice', expiresAt: '2030-01-01T00:00:00Z',
                        heartbeatIntervalMs: 25000, epoch: 'e1', offset: 0 };
      const out = {};
      // tokenExpiring -> refresh with a new token from the callback, same socket.
      let h = make();
      h.client.connect();
      await until(() => h.socket() && h.socket().sent.length === 1);
      h.feed(welcome);
      h.feed({ type: 'tokenExpiring', expiresAt: '2030-01-01T00:00:00Z', secondsLeft: 5 });
      await until(() => h.socket().sent.length === 2);
      out.refresh = JSON.parse(h.socket().sent[1]);
      out.refreshRequests = h.log.tokenRequests.slice();
      h.client.close();

      // 4402 token expired: never the same token again; no new token -> tokenExpired, no retry.
      h = make({ tokens: ['tok-1'] });
      h.client.connect();
      await until(() => h.socket() && h.socket().sent.length === 1);
      h.feed(welcome);
      h.close(4402);
      await until(() => h.client.state === 'tokenExpired');
      out.expired = { requests: h.log.tokenRequests.slice(), sockets: h.sockets.length, states: h.log.states.slice() };
      // ... until the app signs in again: setToken reconnects with the new token and resumes.
      const before = h.sockets.length;
      h.client.setToken('tok-new');
      await until(() => h.sockets.length === before + 1 && h.socket().sent.length === 1);
      out.afterSignIn = JSON.parse(h.socket().sent[0]);
      h.client.close();

      // 4401 auth failed with a fresh token available: reconnect with the new one.
      h = make({ tokens: ['tok-1', 'tok-2'] });
      h.client.connect();
      await until(() => h.socket() && h.socket().sent.length === 1);
      const n = h.sockets.length;
      h.close(4401);
      await until(() => h.sockets.length === n + 1 && h.socket().sent.length === 1);
      out.rejected = { requests: h.log.tokenRequests.slice(), token: JSON.parse(h.socket().sent[0]).token };
      h.client.close();

      // 4400 bad message: terminal, stop.
      h = make();
      h.client.connect();
      await until(() => h.socket() && h.socket().sent.length === 1);
      const m = h.sockets.length;
      h.close(4400);
      await until(() => h.client.state === 'stopped');
      out.terminal = { sockets: h.sockets.length - m, states: h.log.states.slice() };

      // Backoff: delay = random * min(max, initial * 2^attempt); 4003 waits at least 5 s.
      h = make({ random: () => 0.999 });
      h.client.connect();
      await until(() => h.socket() && h.socket().sent.length === 1);
      for (let i = 0; i < 5; i++) {
        const k = h.sockets.length;
        h.close(1006);
        await until(() => h.sockets.length === k + 1 && h.socket().sent.length === 1, 3000);
      }
      h.close(4003);
      await until(() => h.client.state === 'reconnecting');
      out.delays = h.log.states.filter(s => s[0] === 'reconnecting').map(s => s[2]);
      h.client.close();
      return out;
    }""")
    assert result["refresh"]["type"] == "refresh" and result["refresh"]["token"] == "tok-2"
    assert result["refreshRequests"] == ["connect", "refresh"]
    assert result["expired"]["requests"] == ["connect", "expired"]
    assert result["expired"]["sockets"] == 1  # no reconnect with the old token
    assert result["expired"]["states"][-1][:2] == ["tokenExpired", 4402]
    assert "reconnecting" not in [s[0] for s in result["expired"]["states"]]
    assert result["afterSignIn"]["token"] == "tok-new"
    assert result["afterSignIn"]["resume"] == {"epoch": "e1", "offset": 0}
    assert result["rejected"] == {"requests": ["connect", "rejected"], "token": "tok-2"}
    assert result["terminal"]["sockets"] == 0 and result["terminal"]["states"][-1][:2] == ["stopped", 4400]
    assert result["delays"][:5] == [49, 99, 199, 399, 399]  # 50 * 2^n capped at 400, times 0.999
    assert result["delays"][5] >= 5000
    await sent_frames(harness)


async def test_while_hidden_it_pings_and_a_silent_socket_is_replaced(harness: Page) -> None:
    result = await harness.evaluate("""async () => {
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
      const h = make({ client: { hiddenPingMs: 30, pongTimeoutMs: 200 } });
      h.client.connect();
      await until(() => h.socket() && h.socket().sent.length === 1);
      h.feed({ type: 'welcome', connectionId: 'c', userId: 'alice', expiresAt: '2030-01-01T00:00:00Z',
               heartbeatIntervalMs: 25000, epoch: 'e1', offset: 5 });
      // Answered pings keep the socket; then the server goes silent.
      await until(() => h.socket().sent.length >= 3);
      for (const frame of h.socket().sent.slice(1)) h.feed({ type: 'pong', id: JSON.parse(frame).id,
                                                             serverTime: '2026-11-25T18:30:00Z' });
      const first = h.socket();
      await until(() => h.sockets.length === 2 && h.socket().sent.length >= 1, 3000);
      return { pings: first.sent.slice(1).map(f => JSON.parse(f).type), firstState: first.readyState,
               resume: JSON.parse(h.socket().sent[0]).resume, states: h.log.states.map(s => s[0]) };
    }""")
    assert set(result["pings"]) == {"ping"} and len(result["pings"]) >= 3
    assert result["firstState"] == 3  # the silent socket was closed by the client
    assert result["resume"] == {"epoch": "e1", "offset": 5}
    assert result["states"][:4] == ["connecting", "live", "reconnecting", "connecting"]
    await sent_frames(harness)


async def test_outputs_render_by_kind_including_video_and_file(harness: Page) -> None:
    kinds = await harness.evaluate("""async () => {
      const { renderOutput } = await import('/app/outputs.js');
      const out = (kind, mediaType, extra = {}) => renderOutput({ id: 'out_' + kind, kind, mediaType,
        url: '/v1/outputs/out_' + kind + '?exp=1&sig=x', sizeBytes: 2048, ...extra });
      const figures = [out('image', 'image/png', { width: 64, height: 64 }), out('text', 'text/plain', { text: 'hi' }),
        out('audio', 'audio/wav', { durationSeconds: 1.5 }), out('video', 'video/mp4', { durationSeconds: 2 }),
        out('file', 'application/zip', { filename: 'result.zip' })];
      return figures.map(f => ({ kind: f.dataset.kind, tag: f.firstElementChild.tagName,
        media: f.querySelector('img, pre, audio, video, a.output-file')?.tagName,
        controls: !!f.querySelector('audio[controls], video[controls]'),
        download: f.querySelector('a[download]')?.getAttribute('href'), text: f.textContent }));
    }""")
    media = {k["kind"]: k["media"] for k in kinds}
    assert media == {"image": "IMG", "text": "PRE", "audio": "AUDIO", "video": "VIDEO", "file": "A"}
    assert [k["controls"] for k in kinds] == [False, False, True, True, False]
    assert all(k["download"].startswith("/v1/outputs/") for k in kinds)
    assert "result.zip" in kinds[4]["text"]


async def test_cancel_sends_an_in_band_cancel_and_settles_on_its_answer(harness: Page) -> None:
    """``client.cancel(id)``: a valid ``cancel`` frame; resolves with the ``cancelResult`` of
    its own request id, rejects with the ``error``'s code; refused at once while offline."""
    result = await harness.evaluate("""async () => {
      const h = make();
      const offline = await h.client.cancel('gen_1').catch((e) => e.code);
      h.client.connect();
      await until(() => h.socket() && h.socket().sent.length === 1);
      h.feed({ type: 'welcome', connectionId: 'c', userId: 'alice', expiresAt: '2030-01-01T00:00:00Z',
               heartbeatIntervalMs: 25000, epoch: 'e1', offset: 0 });
      const ok = h.client.cancel('gen_1');
      const refused = h.client.cancel('gen_2').catch((e) => e.code);
      const [first, second] = h.socket().sent.slice(1).map((f) => JSON.parse(f));
      h.feed({ type: 'cancelResult', id: 'someone-else', generationId: 'gen_1', status: 'cancelled' });
      h.feed({ type: 'error', id: second.id, code: 'not_found', message: "No generation 'gen_2'", fatal: false });
      h.feed({ type: 'cancelResult', id: first.id, generationId: 'gen_1', status: 'cancelled' });
      const answer = await ok;
      h.client.close();
      return { offline, first, second, answer, refused: await refused, problems: h.log.problems };
    }""")
    assert result["offline"] == "not_connected"
    assert result["first"]["type"] == result["second"]["type"] == "cancel"
    assert (result["first"]["generationId"], result["second"]["generationId"]) == ("gen_1", "gen_2")
    assert result["answer"] == {"type": "cancelResult", "id": result["first"]["id"], "generationId": "gen_1",
                                "status": "cancelled"}
    assert result["refused"] == "not_found" and result["problems"] == []
    cancels = [f for f in await sent_frames(harness) if f["type"] == "cancel"]  # each valid against asyncapi.yaml
    assert len(cancels) >= 2
# -- the SSE wire (web/sse.js), on a scripted fetch ------------------------------------------------

WELCOME_JS = """({ type: 'welcome', connectionId: 'c-sse', userId: 'alice', expiresAt: '2030-01-01T00:00:00Z',
                   heartbeatIntervalMs: 25000, epoch: 'e1', offset: 0 })"""


async def test_every_server_example_is_handled_over_sse_whatever_the_chunking(harness: Page) -> None:
    examples = server_examples("sseStream")
    assert {e["type"] for e in examples} == {"welcome", "refreshed", "pong", "tokenExpiring", "generationUpdate",
                                              "generationProgress", "notification", "error", "close",
                                              "cancelResult"}
    results = await harness.evaluate("""async (examples) => {
      const out = [];
      for (const [i, example] of examples.entries()) {
        const h = make({ client: { transports: ['sse'] } });
        h.client.connect();
        await until(() => h.stream());
        const frames = [];
        if (example.type !== 'welcome') frames.push({ ...""" + WELCOME_JS + """,
          epoch: example.epoch || 'e1', offset: (example.offset || 1) - 1 });
        frames.push(example);
        // One event split at every byte (even between CR and LF), or whole, CRLF or LF, with comments.
        const eol = i % 2 ? '\\r\\n' : '\\n';
        const text = ':keep-alive' + eol + frames.map((f) => `event: ${f.type}${eol}data: ${JSON.stringify(f)}${eol}`
          + (f.offset && f.type !== 'welcome' ? `id: ${f.epoch}:${f.offset}${eol}` : '') + eol).join('');
        if (i % 3 === 0) for (const ch of text) h.stream().push(ch); else h.stream().push(text);
        // `close` is the stream's end, not a message: it closes with its code instead.
        const expected = example.type === 'close' ? frames.length - 1 : frames.length;
        await until(() => (h.log.events.length === expected && (example.type !== 'close'
          || h.log.states.some((s) => s[1] === example.code))) || h.log.problems.length);
        out.push({ type: example.type, events: h.log.events, problems: h.log.problems, state: h.client.state,
                   transport: h.client.transport, request: h.stream().req, states: h.log.states });
        h.client.close();
      }
      return out;
    }""", examples)
    messages = [(e, r) for e, r in zip(examples, results, strict=True) if e["type"] != "close"]
    assert_each_handled([e for e, _ in messages], [r for _, r in messages])
    for example, result in zip(examples, results, strict=True):
        if example["type"] == "close":
            assert result["problems"] == [] and "close" not in result["events"], result
            # 4001 reconnects and resumes; 4402 too, with the new token getToken gave
            assert [example["code"], "reconnecting"] in [[s[1], s[0]] for s in result["states"]], result
    for result in results:
        assert result["transport"] == "sse"
        request = result["request"]
        assert request["url"] == "http://fake/v1/sse?textDeltas=true" and request["method"] == "GET", request
        assert request["headers"]["Authorization"] == "Bearer tok-1"
        assert "Last-Event-ID" not in request["headers"]  # nothing to resume yet
        assert "tok-1" not in request["url"]  # no credential in a URL


async def test_falls_back_to_sse_resumes_there_and_sends_client_messages_over_post(harness: Page) -> None:
    result = await harness.evaluate("""async () => {
      const ev = (offset) => ({ type: 'notification', epoch: 'e1', offset, timestamp: `2026-11-25T18:30:0${offset}Z`,
                                level: 'info', message: 'n' + offset });
      // This tab saw e1:1 and e1:2 before (a reload, stored before positions had a timestamp);
      // now every WebSocket is refused.
      sessionStorage.clear();
      sessionStorage.setItem('livegate.position:', JSON.stringify({ epoch: 'e1', offset: 2 }));
      const h = make({ wsFail: 100, storage: sessionStorage,
                       client: { transports: ['websocket', 'sse'], fallbackAfter: 2 } });
      h.client.connect();
      await until(() => h.stream());
      const wsAttempts = h.sockets.length;
      const first = h.stream();
      first.event({ ...""" + WELCOME_JS + """, connectionId: 'c-sse-1', offset: 4, recovered: true });
      first.event(ev(2), 'e1:2'); first.event(ev(3), 'e1:3'); first.event(ev(4), 'e1:4');
      await until(() => h.client.state === 'live' && h.log.offsets.length === 2);
      // tokenExpiring on the stream -> refresh POSTed (new token); ping -> POST, pong on the stream.
      first.event({ type: 'tokenExpiring', expiresAt: '2030-01-01T00:00:00Z', secondsLeft: 30 });
      await until(() => h.sse.requests.some((r) => r.method === 'POST'));
      const pong = h.client.ping();
      await until(() => h.sse.requests.filter((r) => r.method === 'POST').length === 2);
      const posts = h.sse.requests.filter((r) => r.method === 'POST');
      first.event({ type: 'refreshed', id: JSON.parse(posts[0].body).id, expiresAt: '2030-01-01T01:00:00Z' });
      first.event({ type: 'pong', id: JSON.parse(posts[1].body).id, serverTime: '2026-11-25T18:30:00Z' });
      await pong;
      // The server ends the stream with a reconnect code: SSE again, from e1:4, with the new token.
      first.push('event: close\\ndata: {"code":4000,"reason":"server restart"}\\n\\n');
      await until(() => h.sse.streams.length === 2);
      const second = h.stream();
      second.event({ ...""" + WELCOME_JS + """, connectionId: 'c-sse-2', offset: 5, recovered: true });
      second.event(ev(5), 'e1:5');
      // A stream that just stops (a proxy timeout) reconnects too, without a close event.
      await until(() => h.log.offsets.length === 3);
      second.fail();
      await until(() => h.sse.streams.length === 3);
      return { log: h.log, wsAttempts, requests: h.sse.requests, transport: h.client.transport,
               position: h.client.position, firstAborted: first.aborted };
    }""")
    log = result["log"]
    assert result["wsAttempts"] == 2  # fallbackAfter=2 refused attempts
    assert log["transports"] == [["websocket", "connect"], ["sse", "fallback"]]
    assert log["offsets"] == [3, 4, 5] and log["duplicates"] == [2]
    assert log["resyncs"] == []  # recovered: the stored position was resumed over SSE
    gets = [r for r in result["requests"] if r["method"] == "GET"]
    posts = [r for r in result["requests"] if r["method"] == "POST"]
    assert [g["headers"].get("Last-Event-ID") for g in gets] == ["e1:2", "e1:4", "e1:5"]
    stamps = [parse_qs(urlsplit(g["url"]).query).get("lastEventTimestamp") for g in gets]
    assert stamps == [None, ["2026-11-25T18:30:04Z"], ["2026-11-25T18:30:05Z"]]  # the old stored one has none
    assert all(parse_qs(urlsplit(g["url"]).query)["textDeltas"] == ["true"] for g in gets)
    assert [g["headers"]["Authorization"] for g in gets] == ["Bearer tok-1", "Bearer tok-2", "Bearer tok-2"]
    assert [p["url"] for p in posts] == ["http://fake/v1/sse/c-sse-1/messages"] * 2
    assert [p["body"] and json.loads(p["body"])["type"] for p in posts] == ["refresh", "ping"]
    assert json.loads(posts[0]["body"])["token"] == "tok-2"
    assert posts[1]["headers"]["Authorization"] == "Bearer tok-2"  # the refreshed token from then on
    assert ["reconnecting", 4000] in [s[:2] for s in log["states"]]
    assert result["transport"] == "sse"
    assert result["position"] == {"epoch": "e1", "offset": 5, "timestamp": "2026-11-25T18:30:05Z"}
    assert log["problems"] == []
    await sent_frames(harness)


async def test_a_websocket_that_worked_is_kept_through_an_outage(harness: Page) -> None:
    result = await harness.evaluate("""async () => {
      const h = make({ client: { transports: ['websocket', 'sse'], fallbackAfter: 2 } });
      h.client.connect();
      await until(() => h.socket() && h.socket().sent.length === 1);
      h.feed({ ...""" + WELCOME_JS + """ });
      h.refuseSockets(3);   // a server restart: three attempts fail, the fourth gets through
      h.close(1006);
      await until(() => h.sockets.length === 5 && h.socket().sent.length === 1);
      const out = { transports: h.log.transports, streams: h.sse.streams.length,
                    resume: JSON.parse(h.socket().sent[0]).resume };
      h.client.close();
      return out;
    }""")
    assert result == {"transports": [["websocket", "connect"]], "streams": 0, "resume": {"epoch": "e1", "offset": 0}}


async def test_from_sse_back_to_a_websocket_without_loss_or_duplicate_delivery(harness: Page) -> None:
    result = await harness.evaluate("""async () => {
      const ev = (offset) => ({ type: 'generationProgress', epoch: 'e1', offset, timestamp: '2026-11-25T18:30:01Z',
                                generationId: 'g', fraction: offset / 10, step: offset });
      const h = make({ wsFail: 3, client: { transports: ['websocket', 'sse'], fallbackAfter: 2, upgradeRetryMs: 50 } });
      h.client.connect();
      await until(() => h.stream());
      const stream = h.stream();
      stream.event({ ...""" + WELCOME_JS + """ });
      stream.event(ev(1), 'e1:1'); stream.event(ev(2), 'e1:2');
      // The first background WebSocket is refused (wsFail 3 = 2 attempts + this one): still SSE.
      await until(() => h.sockets.length === 3 && h.socket().readyState === 3);
      const afterRefusedProbe = { transport: h.client.transport, streams: h.sse.streams.length };
      stream.event(ev(3), 'e1:3');
      // The next one opens and resumes from e1:3 while SSE keeps delivering 4 and 5.
      await until(() => h.sockets.length === 4 && h.socket().sent.length === 1);
      const probeAuth = JSON.parse(h.socket().sent[0]);
      stream.event(ev(4), 'e1:4'); stream.event(ev(5), 'e1:5');
      await until(() => h.log.offsets.length === 5);
      h.feed({ ...""" + WELCOME_JS + """, connectionId: 'c-ws', offset: 6, recovered: true });
      h.feed(ev(4)); h.feed(ev(5)); h.feed(ev(6));   // the replay after e1:3, then live
      h.feed(ev(7));
      stream.event(ev(8), 'e1:8');                   // too late: that stream is closed
      await until(() => h.log.offsets.length === 7);
      return { log: h.log, afterRefusedProbe, probeAuth, sseAborted: stream.aborted, transport: h.client.transport,
               state: h.client.state, streams: h.sse.streams.length, switches: h.client.stats.transportSwitches };
    }""")
    log = result["log"]
    assert result["afterRefusedProbe"] == {"transport": "sse", "streams": 1}
    assert result["probeAuth"]["resume"] == {"epoch": "e1", "offset": 3, "timestamp": "2026-11-25T18:30:01Z"}
    assert log["offsets"] == [1, 2, 3, 4, 5, 6, 7]  # each offset once, in order
    assert log["duplicates"] == [4, 5]
    assert log["transports"] == [["websocket", "connect"], ["sse", "fallback"], ["websocket", "upgrade"]]
    assert result["sseAborted"] and result["streams"] == 1
    assert result["transport"] == "websocket" and result["state"] == "live" and result["switches"] == 2
    assert log["resyncs"] == ["fresh"] and log["problems"] == []
    await sent_frames(harness)


async def test_a_refused_sse_request_maps_to_the_close_code_table(harness: Page) -> None:
    result = await harness.evaluate("""async () => {
      const out = {};
      // 401 token_expired -> 4402: a new token from getToken, then SSE again with it.
      let h = make({ client: { transports: ['sse'] } });
      h.sse.refuse = { status: 401, body: { type: 'about:blank', status: 401, code: 'token_expired' } };
      h.client.connect();
      await until(() => h.sse.streams.length === 1);
      out.expired = { requests: h.log.tokenRequests.slice(), states: h.log.states.map(s => s[0]),
                      auth: h.stream().req.headers.Authorization };
      h.client.close();
      // 403 origin_not_allowed -> 4403: stopped.
      h = make({ client: { transports: ['sse'] } });
      h.sse.refuse = { status: 403, body: { code: 'origin_not_allowed' } };
      h.client.connect();
      await until(() => h.client.state === 'stopped');
      out.forbidden = h.log.states.at(-1);
      // 404 (a gateway without SSE) and no other wire: reconnect with backoff.
      h = make({ client: { transports: ['sse'] } });
      h.sse.refuse = { status: 404, body: {} };
      h.client.connect();
      await until(() => h.sse.streams.length === 1);
      out.missing = h.log.states.map(s => s.slice(0, 2));
      h.client.close();
      return out;
    }""")
    assert result["expired"]["requests"] == ["connect", "expired"]
    assert result["expired"]["auth"] == "Bearer tok-2"
    assert "tokenExpired" not in result["expired"]["states"]
    assert result["forbidden"][:2] == ["stopped", 4403]
    assert ["reconnecting", 1006] in result["missing"]
