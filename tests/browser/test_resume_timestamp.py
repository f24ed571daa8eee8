"""web/client.js in the sandbox resumes with the ``timestamp`` of the event at its position
(asyncapi.yaml ``StreamPosition.timestamp``), exactly as the gateway sent it: in
``auth.resume`` after a WebSocket is cut (the frames the page's socket sent, from Playwright's
``framesent``), and as the ``lastEventTimestamp`` query parameter of the SSE request that
resumes a cut stream (the page's requests). The expected value is the gateway's own: the
stream read independently by a raw WebSocket client (``server_stream``)."""

from __future__ import annotations

import random
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import expect

from livegate.testing.gateway import RunningGateway
from livegate.testing.tcp_proxy import ChaosProxy
from tests.browser.conftest import (
    PageLog,
    Pages,
    debug_state,
    server_frames_valid,
    server_stream,
    sign_in,
)
from tests.browser.test_sse_sandbox import blocked_page

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser-resume-timestamp"),
    pytest.mark.asyncio(loop_scope="module"),
]

WAIT_MS = 15_000


async def publish_three(gateway: RunningGateway, tab: PageLog, user: str) -> tuple[str, int, str]:
    """Three notifications to ``user``; once the page has them: its epoch, the offset of the
    last one and that event's timestamp as the gateway's stream holds it."""
    await gateway.publish(user, *({"type": "notification", "level": "info", "message": f"n{i}"} for i in range(3)))
    await tab.page.wait_for_function("() => window.__livegate.offsets.length >= 3", timeout=WAIT_MS)
    welcome = await debug_state(tab.page, "d.welcomes[0]")
    top = welcome["offset"] + 3
    assert await debug_state(tab.page, "d.client.position.offset") == top
    stream = await server_stream(gateway.ws_url, gateway.token(user), welcome["epoch"])
    return welcome["epoch"], top, next(e["timestamp"] for e in stream if e["offset"] == top)


async def test_a_cut_websocket_resumes_with_the_timestamp_of_the_last_event(gateway: RunningGateway,
                                                                            pages: Pages) -> None:
    proxy = await ChaosProxy([gateway.port]).start()
    try:
        tab = await pages.new("tia")
        await sign_in(tab, f"http://127.0.0.1:{proxy.port}", "tia")
        epoch, top, stamp = await publish_three(gateway, tab, "tia")
        received = server_frames_valid(tab, lambda m: m["type"] == "notification" and m["offset"] == top)
        assert [m["timestamp"] for m in received] == [stamp]  # what the page got is the stream's own

        proxy.cut(len(proxy.open_links()), random.Random(4))
        await tab.page.wait_for_function("() => window.__livegate.welcomes.length >= 2", timeout=WAIT_MS)
        auths = [m for m in tab.sent_messages() if m["type"] == "auth"]
        assert "resume" not in auths[0]
        assert auths[1]["resume"] == {"epoch": epoch, "offset": top, "timestamp": stamp}
        assert (await debug_state(tab.page, "d.welcomes[1]"))["recovered"] is True
        # The tab's stored position (what a reload resumes from) carries it too.
        stored = await tab.page.evaluate("() => JSON.parse(sessionStorage.getItem('livegate.position:tia'))")
        assert stored == {"epoch": epoch, "offset": top, "timestamp": stamp}
    finally:
        await proxy.stop()


async def test_a_cut_sse_stream_resumes_with_last_event_timestamp(gateway: RunningGateway, pages: Pages) -> None:
    proxy = await ChaosProxy([gateway.port]).start()
    try:
        tab, _block, requests = await blocked_page(pages, "sia")
        await sign_in(tab, f"http://127.0.0.1:{proxy.port}", "sia")
        await expect(tab.page.locator("#connection")).to_contain_text("Live · SSE")
        epoch, top, stamp = await publish_three(gateway, tab, "sia")

        proxy.cut(len(proxy.open_links()), random.Random(5))  # no close event: the client reconnects
        await tab.page.wait_for_function("() => window.__livegate.welcomes.length >= 2", timeout=WAIT_MS)
        first, resumed = requests.streams[0], requests.streams[-1]
        assert "lastEventTimestamp" not in first["url"] and first["lastEventId"] is None
        assert resumed["lastEventId"] == f"{epoch}:{top}"
        assert parse_qs(urlsplit(resumed["url"]).query)["lastEventTimestamp"] == [stamp]
        welcomes = await debug_state(tab.page, "d.welcomes")
        assert welcomes[-1]["recovered"] is True
        assert await debug_state(tab.page, "d.transports.map(t => t.transport)") == ["websocket", "sse"]
    finally:
        await proxy.stop()
