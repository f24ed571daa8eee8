"""The sandbox when WebSockets do not get through: web/client.js falls back to Server-Sent
Events (asyncapi.yaml ``sseStream``), resumes across a network drop, carries a tab's stored
position over to SSE after a reload, and returns to a WebSocket once one gets through again
— every event of the server's stream exactly once.

WebSockets are blocked in the page with ``page.route_web_socket`` (every handshake closed
abnormally, as a proxy that kills upgrades does); the nginx variant, where the proxy itself
refuses the upgrade, is in test_cluster_sandbox.py. The server's stream is read independently
by a raw WebSocket client (``server_stream``) and compared offset by offset with what the
page processed.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page, Request, WebSocketRoute, expect

from livegate.testing.gateway import RunningGateway, running_gateway
from livegate.testing.spec_validation import assert_valid_message
from livegate.testing.tcp_proxy import ChaosProxy
from tests.browser.conftest import PageLog, Pages, debug_state, run_demo, server_stream, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser-sse"),
    pytest.mark.asyncio(loop_scope="module"),
]

WS_PATH = re.compile(r".*/v1/ws$")
WAIT_SECONDS = 15.0


@pytest_asyncio.fixture(loop_scope="module")
async def gateway(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    """tokenExpiring 3 s before expiry, so a short token is refreshed during a test."""
    async with running_gateway(tmp_path, token_expiring_lead_seconds=3.0, token_grace_seconds=0.5) as gw:
        yield gw


@dataclass
class WebSocketBlock:
    """``page.route_web_socket`` on /v1/ws: while ``blocked``, every handshake is closed
    abnormally before the gateway sees it; afterwards sockets pass through to the gateway."""

    blocked: bool = True
    refused: int = 0
    passed: int = 0

    async def handle(self, route: WebSocketRoute) -> None:
        if self.blocked:
            self.refused += 1
            await route.close(code=1006, reason="blocked by the test")
        else:
            self.passed += 1
            route.connect_to_server()


@dataclass
class SseRequests:
    """The page's SSE requests: stream GETs (with their Last-Event-ID) and POSTed messages."""

    streams: list[dict[str, Any]] = field(default_factory=list)
    posts: list[dict[str, Any]] = field(default_factory=list)

    def record(self, request: Request) -> None:
        if re.search(r"/v1/sse(\?.*)?$", request.url) and request.method == "GET":
            self.streams.append({"url": request.url, "lastEventId": request.headers.get("last-event-id"),
                                 "authorization": request.headers.get("authorization", "")})
        elif re.search(r"/v1/sse/[^/]+/messages$", request.url) and request.method == "POST":
            self.posts.append({"url": request.url, "body": request.post_data})


async def blocked_page(pages: Pages, name: str) -> tuple[PageLog, WebSocketBlock, SseRequests]:
    tab = await pages.new(name)
    block, requests = WebSocketBlock(), SseRequests()
    await tab.page.route_web_socket(WS_PATH, block.handle)
    tab.page.on("request", requests.record)
    return tab, block, requests


async def assert_exactly_the_server_stream(page: Page, gateway: RunningGateway, user: str) -> list[dict[str, Any]]:
    """The page processed every event of the user's stream after its first welcome, once, in
    order; it reported no protocol problem and sent only valid client messages."""
    welcome = await debug_state(page, "d.welcomes[0]")
    stream = await server_stream(gateway.ws_url, gateway.token(user), welcome["epoch"])
    expected = [e["offset"] for e in stream if e["offset"] > welcome["offset"]]
    assert await debug_state(page, "d.offsets") == expected
    assert expected == list(range(welcome["offset"] + 1, welcome["offset"] + 1 + len(expected)))
    assert await debug_state(page, "d.protocolErrors") == []
    for frame in await debug_state(page, "d.sent"):
        assert_valid_message(frame, "client")
    return stream


async def wait_for_step(page: Page, gen_id: str, step: int) -> None:
    await page.wait_for_function(
        "([id, step]) => window.__livegate.events.some(e => e.generationId === id && e.step >= step)",
        arg=[gen_id, step], timeout=WAIT_SECONDS * 1000)


async def test_with_websockets_blocked_a_whole_run_arrives_over_sse_and_the_token_is_refreshed(
    gateway: RunningGateway, pages: Pages
) -> None:
    tab, block, requests = await blocked_page(pages, "sam")
    page = tab.page
    await sign_in(tab, gateway.http_url, "sam", ttl=5)
    indicator = page.locator("#connection")
    await expect(indicator).to_have_attribute("data-transport", "sse")
    await expect(indicator).to_contain_text("Live · SSE")
    assert block.refused >= 2 and block.passed == 0  # fallbackAfter (2) refused attempts first

    gen_id = await run_demo(page, duration=2.0, steps=6, prompt="a harbour in fog")
    run = page.locator(f".run[data-generation-id={gen_id}]")
    await expect(run.locator(".step")).to_have_text(re.compile(r"Step [1-5] of 6"))
    await expect(run.locator(".status-badge")).to_have_text("Completed")
    await expect(run.locator("figure.output")).to_have_count(3)
    await expect(run.locator("figure[data-kind=text] pre")).to_contain_text("a harbour in fog")
    await page.screenshot(path=pages.artifacts_prefix() + "-completed-over-sse.png")

    # The 5 s token was refreshed over POST and the stream stayed up: one stream, one welcome.
    await page.wait_for_function(
        "() => window.__livegate.sent.filter(f => f.type === 'refresh').length >= 2", timeout=WAIT_SECONDS * 1000)
    await expect(indicator).to_contain_text("Live · SSE")
    assert len(requests.streams) == 1 and len(await debug_state(page, "d.welcomes")) == 1
    assert [p["url"].rsplit("/", 2)[-2] for p in requests.posts] == \
        [(await debug_state(page, "d.welcomes[0].connectionId"))] * len(requests.posts)
    assert all("token" not in s["url"] and s["authorization"].startswith("Bearer ") for s in requests.streams)

    stream = await assert_exactly_the_server_stream(page, gateway, "sam")
    statuses = [e["status"] for e in stream if e.get("generationId") == gen_id and e["type"] == "generationUpdate"]
    assert statuses == ["queued", "running", "completed"]
    assert await debug_state(page, "d.transports.map(t => t.transport)") == ["websocket", "sse"]
    assert await debug_state(page, "d.duplicates") == []


async def test_a_network_drop_mid_run_over_sse_resumes_exactly(gateway: RunningGateway, pages: Pages) -> None:
    proxy = await ChaosProxy([gateway.port]).start()
    try:
        tab, _block, requests = await blocked_page(pages, "ned")
        page = tab.page
        await sign_in(tab, f"http://127.0.0.1:{proxy.port}", "ned")
        await expect(page.locator("#connection")).to_contain_text("Live · SSE")
        gen_id = await run_demo(page, duration=4.0, steps=12)
        await wait_for_step(page, gen_id, 2)

        # The network goes away (every TCP link cut, no new one possible) while the run goes on.
        context = page.context
        await context.set_offline(True)
        proxy.cut(len(proxy.open_links()), random.Random(12))
        await page.locator("#connection[data-state=reconnecting]").wait_for()
        seen = await debug_state(page, "d.offsets.length")
        async with asyncio.timeout(WAIT_SECONDS):
            while True:  # bounded: until the server has published events the page has not seen
                async with gateway.http("ned") as http:
                    generation = (await http.get(f"/v1/generations/{gen_id}")).json()
                if generation["status"] == "completed" or (generation.get("progress") or {}).get("step", 0) >= 6:
                    break
                await asyncio.sleep(0.1)
        assert await debug_state(page, "d.offsets.length") == seen  # nothing arrived while offline
        await context.set_offline(False)

        # (the backoff grew while offline: the next attempt may be seconds away)
        await expect(page.locator(f".run[data-generation-id={gen_id}] .status-badge")).to_have_text(
            "Completed", timeout=WAIT_SECONDS * 1000)
        await expect(page.locator("#connection")).to_contain_text("Live · SSE")
        await assert_exactly_the_server_stream(page, gateway, "ned")
        welcomes = await debug_state(page, "d.welcomes")
        assert welcomes[-1]["recovered"] is True and len(welcomes) >= 2
        resumed = [s["lastEventId"] for s in requests.streams[1:]]
        assert resumed and all(r and r.startswith(welcomes[0]["epoch"] + ":") for r in resumed), requests.streams
        assert await debug_state(page, "d.duplicates") == []
        assert await debug_state(page, "d.resyncs") == ["fresh"]
    finally:
        await proxy.stop()


async def test_back_to_a_websocket_once_it_gets_through_without_loss(gateway: RunningGateway, pages: Pages) -> None:
    tab, block, requests = await blocked_page(pages, "wes")
    page = tab.page
    await sign_in(tab, gateway.http_url, "wes", query="upgradeRetryMs=700")
    indicator = page.locator("#connection")
    await expect(indicator).to_contain_text("Live · SSE")
    gen_id = await run_demo(page, duration=4.0, steps=12)
    await wait_for_step(page, gen_id, 3)
    refused = block.refused
    block.blocked = False  # the proxy lets WebSockets through again

    await expect(indicator).to_contain_text("Live · WebSocket")
    await expect(indicator).to_have_attribute("data-transport", "websocket")
    await expect(page.locator(f".run[data-generation-id={gen_id}] .status-badge")).to_have_text(
        "Completed", timeout=WAIT_SECONDS * 1000)
    assert block.passed == 1 and block.refused == refused
    await assert_exactly_the_server_stream(page, gateway, "wes")
    transports = await debug_state(page, "d.transports.map(t => [t.transport, t.reason])")
    assert transports == [["websocket", "connect"], ["sse", "fallback"], ["websocket", "upgrade"]]
    # The switch happened mid-run: events of the run came over both wires.
    switched_at = await debug_state(page, "d.transports[2].offset")
    run_offsets = await debug_state(page, f"d.events.filter(e => e.generationId === '{gen_id}').map(e => e.offset)")
    assert run_offsets[0] <= switched_at < run_offsets[-1], (switched_at, run_offsets)
    # The WebSocket resumed from the position the SSE stream had reached: the offsets both
    # carried around the switch were dropped once, and the SSE stream was not reopened.
    auth = next(m for m in tab.sent_messages() if m["type"] == "auth")
    assert auth["resume"]["epoch"] == (await debug_state(page, "d.welcomes[0].epoch"))
    assert len(requests.streams) == 1
    welcomes = await debug_state(page, "d.welcomes")
    assert len(welcomes) == 2 and welcomes[1]["recovered"] is True
    assert await debug_state(page, "d.resyncs") == ["fresh"]


async def test_a_reload_behind_a_proxy_that_blocks_websockets_resumes_the_tabs_position_over_sse(
    gateway: RunningGateway, pages: Pages
) -> None:
    tab, block, requests = await blocked_page(pages, "rae")
    page = tab.page
    block.blocked = False  # at first the WebSocket gets through
    await sign_in(tab, gateway.http_url, "rae")
    await expect(page.locator("#connection")).to_contain_text("Live · WebSocket")
    gen_id = await run_demo(page, duration=4.0, steps=12)
    await wait_for_step(page, gen_id, 3)

    # The tab moves behind a proxy that kills WebSockets and is reloaded mid-run: the client
    # starts from the position this tab kept, and carries it over to SSE.
    block.blocked = True
    before = await page.evaluate("() => JSON.parse(sessionStorage.getItem('livegate.position:rae'))")
    await page.reload()
    await expect(page.locator("#connection")).to_contain_text("Live · SSE", timeout=WAIT_SECONDS * 1000)
    # (events may still have come over the WebSocket between reading `before` and the reload)
    epoch, _, offset = requests.streams[0]["lastEventId"].rpartition(":")
    stored = {"epoch": epoch, "offset": int(offset)}
    assert epoch == before["epoch"] and stored["offset"] >= before["offset"] > 0, (before, requests.streams[0])
    await page.wait_for_function(
        "id => window.__livegate.events.some(e => e.generationId === id && e.status === 'completed')",
        arg=gen_id, timeout=WAIT_SECONDS * 1000)

    welcome = await debug_state(page, "d.welcomes[0]")
    assert welcome["recovered"] is True and await debug_state(page, "d.resyncs") == []
    stream = await server_stream(gateway.ws_url, gateway.token("rae"), stored["epoch"])
    expected = [e["offset"] for e in stream if e["offset"] > stored["offset"]]
    assert await debug_state(page, "d.offsets") == expected  # from the stored position on, once each
    assert await debug_state(page, "d.transports.map(t => t.transport)") == ["websocket", "sse"]
    assert await debug_state(page, "d.protocolErrors") == [] and await debug_state(page, "d.duplicates") == []
