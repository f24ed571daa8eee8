"""Browser tests: Debian's Chromium driven by Playwright (async API), against real gateways.

One browser per test module (each module runs in its own event loop, ``loop_scope="module"``);
every test gets fresh browser contexts, so tests stay independent. Each test saves a
screenshot of every page it opened into ``test-artifacts/``; when a test fails, the pages'
console logs (and the frames their sockets sent) are written next to the screenshots. At
teardown every frame any page's socket sent is validated against asyncapi.yaml.

Never ``playwright install``: the browser is ``/usr/bin/chromium`` (Debian package).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import websockets
from playwright.async_api import Browser, BrowserContext, Page, WebSocket, async_playwright
from playwright.async_api import Error as PlaywrightError

from livegate.testing.gateway import RunningGateway, running_gateway
from livegate.testing.spec_validation import assert_valid_message

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TIMEOUT_MS = 15_000


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{report.when}", report)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class PageLog:
    """What one page did: console lines, page errors, frames its sockets sent/received."""

    name: str
    page: Page
    console: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    sockets: list[WebSocket] = field(default_factory=list)
    closes: list[str] = field(default_factory=list)

    def sent_messages(self) -> list[dict[str, Any]]:
        return [json.loads(f) for f in self.sent]


class Pages:
    """Opens pages in fresh contexts, records them, and screenshots them at the end."""

    def __init__(self, browser: Browser, request: pytest.FixtureRequest) -> None:
        self.browser = browser
        self.request = request
        self.logs: list[PageLog] = []
        self.contexts: list[BrowserContext] = []

    async def context(self, **kwargs: Any) -> BrowserContext:
        context = await self.browser.new_context(**{"viewport": {"width": 1200, "height": 900}, **kwargs})
        context.set_default_timeout(TIMEOUT_MS)
        self.contexts.append(context)
        return context

    async def new(self, name: str, context: BrowserContext | None = None) -> PageLog:
        context = context or await self.context()
        page = await context.new_page()
        log = PageLog(name, page)
        page.on("console", lambda msg: log.console.append(f"[{msg.type}] {msg.text}"))
        page.on("pageerror", lambda exc: log.console.append(f"[pageerror] {exc}"))

        def on_socket(ws: WebSocket) -> None:
            log.sockets.append(ws)
            ws.on("framesent", lambda payload: log.sent.append(
                payload if isinstance(payload, str) else payload.decode()))
            ws.on("framereceived", lambda payload: log.received.append(
                payload if isinstance(payload, str) else "(binary)"))
            ws.on("close", lambda _ws: log.closes.append(ws.url))

        page.on("websocket", on_socket)
        self.logs.append(log)
        return log

    def artifacts_prefix(self) -> str:
        """``test-artifacts/<test name>``: for extra screenshots taken mid-test."""
        ARTIFACTS.mkdir(exist_ok=True)
        return str(ARTIFACTS / re.sub(r"[^\w.-]+", "_", self.request.node.name))

    async def finish(self) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        test = re.sub(r"[^\w.-]+", "_", self.request.node.name)
        node = self.request.node
        failed = any(getattr(getattr(node, f"rep_{w}", None), "failed", False) for w in ("setup", "call"))
        for log in self.logs:
            base = ARTIFACTS / f"{test}-{log.name}"
            try:
                await log.page.evaluate("() => window.scrollTo(0, 0)")  # sticky header at the top
                await log.page.screenshot(path=f"{base}.png", full_page=True)
            except PlaywrightError as exc:  # a closed page: say so in the log instead
                log.console.append(f"(no screenshot: {exc})")
            if failed:
                text = "\n".join(log.console) + "\n\n-- frames sent --\n" + "\n".join(log.sent) \
                    + "\n\n-- frames received (last 50) --\n" + "\n".join(log.received[-50:])
                Path(f"{base}.console.log").write_text(re.sub(r'"token":"[^"]*"', '"token":"<redacted>"', text))
            else:
                Path(f"{base}.console.log").unlink(missing_ok=True)  # from an earlier failed run
        for context in self.contexts:
            await context.close()
        # Client conformance, for every page of every test: each frame sent is a valid
        # asyncapi.yaml client message (an error at teardown names the frame).
        assert_sent_frames_valid(*self.logs)


@pytest_asyncio.fixture(loop_scope="module")
async def pages(browser: Browser, request: pytest.FixtureRequest) -> AsyncIterator[Pages]:
    opened = Pages(browser, request)
    try:
        yield opened
    finally:
        await opened.finish()


@pytest_asyncio.fixture(loop_scope="module")
async def gateway(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with running_gateway(tmp_path) as gw:
        yield gw


def assert_sent_frames_valid(*logs: PageLog) -> int:
    """Every frame the pages' sockets sent is a valid client message of asyncapi.yaml."""
    count = 0
    for log in logs:
        for frame in log.sent:
            message = assert_valid_message(frame, "client")
            assert message["type"] in {"auth", "refresh", "ping", "cancel"}, message
            count += 1
    return count


async def sign_in(log: PageLog, base_url: str, user: str, *, ttl: int | None = None, query: str = "") -> None:
    """Open the sandbox (``/?<query>``) and sign in as a dev user; wait until the connection is live."""
    page = log.page
    await page.goto(base_url + "/" + (f"?{query}" if query else ""))
    await page.get_by_label("User id").fill(user)
    if ttl is not None:
        await page.get_by_text("Advanced").click()
        await page.get_by_label("Token lifetime (seconds)").fill(str(ttl))
    await page.get_by_role("button", name="Sign in").click()
    await wait_live(page)


async def wait_live(page: Page) -> None:
    await page.locator("#connection[data-state=live]").wait_for()


async def run_demo(
    page: Page, *, duration: float = 1.5, steps: int = 6, window: int = 0, prompt: str | None = None
) -> str:
    """Fill the demo form of tool window ``window`` and Run; return the generation id."""
    win = page.locator(".tool-window").nth(window)
    if prompt is not None:
        await win.get_by_label("Prompt").fill(prompt)
    await win.get_by_label("Steps").fill(str(steps))
    await win.get_by_label("Duration (s)").fill(str(duration))
    # A window shows one run: wait for the run element of *this* click, not an earlier one.
    previous = await win.locator(".run").get_attribute("data-generation-id") if await win.locator(".run").count() else None
    await win.get_by_role("button", name="Run").click()
    selector = ".run" if previous is None else f".run:not([data-generation-id={previous}])"
    run = win.locator(selector)
    await run.wait_for()
    gen_id = await run.get_attribute("data-generation-id")
    assert gen_id and gen_id.startswith("gen_") and gen_id != previous, gen_id
    return gen_id


async def debug_state(page: Page, expression: str) -> Any:
    return await page.evaluate(f"() => {{ const d = window.__livegate; return {expression}; }}")


def server_frames_valid(
    log: PageLog, predicate: Callable[[dict[str, Any]], bool] = lambda m: True
) -> list[dict[str, Any]]:
    """Every frame the page received validates against asyncapi.yaml (server side)."""
    return [m for m in (assert_valid_message(f) for f in log.received) if predicate(m)]


async def received_frames(log: PageLog, predicate: Callable[[dict[str, Any]], bool], *, count: int = 1,
                          timeout: float = 10.0) -> list[dict[str, Any]]:
    """The valid server frames matching ``predicate``, once at least ``count`` have arrived (an
    answer may reach the page after the stream event the page's view already shows)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = server_frames_valid(log, predicate)
        if len(found) >= count or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.02)  # frames are collected by Playwright's websocket events


async def server_stream(ws_url: str, token: str, epoch: str) -> list[dict[str, Any]]:
    """Every event of the token's user stream, read by an independent raw WebSocket client
    that resumes from offset 0 of ``epoch`` (a full replay; every frame validated)."""
    async with websockets.connect(ws_url, compression=None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token, "resume": {"epoch": epoch, "offset": 0}}))
        welcome = assert_valid_message(await asyncio.wait_for(ws.recv(), 5))
        assert welcome["type"] == "welcome" and welcome["recovered"] is True, welcome
        events: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while len(events) < welcome["offset"]:
                message = assert_valid_message(await ws.recv())
                if "offset" in message and message["type"] != "welcome":
                    events.append(message)
        return events
