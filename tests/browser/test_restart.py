"""The gateway is stopped and restarted under a page mid-run.

A real ``livegate serve`` child (GatewayProcess) on a Redis bus (a real ``redis-server``),
so the user stream and its history outlive the gateway process. Two runs prove two endings:

* a ComfyUI run (against ``FakeComfyUI``, which lives in the test process and so survives the
  gateway): the restarted gateway re-attaches to the prompt by id and the page sees the same
  run go on and complete, with its outputs;
* a ``demo`` run: its work lived in the gateway process, and a demo run is deterministic,
  so the restarted gateway takes it over and runs it again from its first step; the page
  resumes, sees the run start over and complete, and then runs a second generation to
  completion, live.

The page's offsets are compared with the server's stream, read by an independent raw
WebSocket client that resumes from offset 0 of the same epoch (a full replay).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import expect

from livegate.testing.fake_comfyui import FakeComfyUI
from livegate.testing.process import GatewayProcess
from livegate.testing.redis_server import RedisServer
from tests.browser.conftest import (
    Pages,
    assert_sent_frames_valid,
    debug_state,
    run_demo,
    server_frames_valid,
    server_stream,
    sign_in,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser-restart"),
    pytest.mark.redis,
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    with RedisServer() as server:
        yield server


WORKFLOW = Path(__file__).resolve().parents[2] / "src" / "livegate" / "tools" / "workflows" / "success.json"


@pytest_asyncio.fixture(loop_scope="module")
async def comfyui() -> AsyncIterator[FakeComfyUI]:
    async with FakeComfyUI(speed=1.0) as fake:
        yield fake


@pytest_asyncio.fixture(loop_scope="module")
async def gateway_process(tmp_path: Path, redis: RedisServer, comfyui: FakeComfyUI) -> AsyncIterator[GatewayProcess]:
    tools = tmp_path / "tools.toml"
    tools.write_text(f"""
[[tools]]
id = "demo"
kind = "demo"
title = "Demo (no network)"

[[tools]]
id = "comfyui-capture"
kind = "comfyui"
title = "ComfyUI: tinted capture"
timeout_seconds = 60

[tools.settings]
base_url = "{comfyui.base_url}"
workflow = "{WORKFLOW}"
""")
    process = GatewayProcess(tmp_path / "gw", env={"LIVEGATE_REDIS_URL": redis.url, "LIVEGATE_TOOLS_FILE": str(tools)},
                             dev=True)  # the sandbox signs in with POST /v1/dev/token
    await asyncio.to_thread(process.start)
    try:
        yield process
    finally:
        await asyncio.to_thread(process.kill)


async def test_restart_mid_run_reconnects_resumes_and_accounts_for_every_event(
    gateway_process: GatewayProcess, pages: Pages
) -> None:
    tab = await pages.new("alice")
    page = tab.page
    await sign_in(tab, gateway_process.http_url, "alice")
    gen_id = await run_demo(page, duration=6, steps=12)
    run = page.locator(f".run[data-generation-id={gen_id}]")
    await expect(run.locator(".step")).to_have_text(re.compile(r"Step ([3-9]|1[01]) of 12"))

    await asyncio.to_thread(gateway_process.terminate)  # SIGTERM: 4000 to every client
    indicator = page.locator("#connection")
    await expect(indicator).to_have_text(re.compile(r"Reconnecting in \d+ s"))
    await page.screenshot(path=str(Path(pages.artifacts_prefix() + "-reconnecting.png")))
    await asyncio.to_thread(gateway_process.start)  # same port, same Redis

    # The page resumes (recovered) and follows the taken-over run to its end.
    await expect(indicator).to_have_attribute("data-state", "live", timeout=30_000)
    await expect(run.locator(".status-badge")).to_have_text("Completed", timeout=30_000)
    welcomes = await debug_state(page, "d.welcomes")
    assert len(welcomes) == 2 and welcomes[1]["recovered"] is True
    states = await debug_state(page, "d.states")
    assert any(s["state"] == "reconnecting" and s["closeCode"] == 4000 for s in states), states
    auths = [f for f in tab.sent_messages() if f["type"] == "auth"]
    assert auths[-1]["resume"]["epoch"] == welcomes[0]["epoch"]

    # ... and stays live: a new run completes on the restarted gateway.
    second = await run_demo(page, duration=1.0, steps=4)
    await expect(page.locator(f".run[data-generation-id={second}] .status-badge")).to_have_text("Completed")

    # Offsets: the page got exactly the server's stream after its first welcome, once each.
    stream = await server_stream(gateway_process.ws_url, gateway_process.token("alice"), welcomes[0]["epoch"])
    start = welcomes[0]["offset"]
    expected = [e["offset"] for e in stream if e["offset"] > start]
    received = await debug_state(page, "d.offsets")
    assert received == expected, (received, expected)
    mine = [e for e in stream if e.get("generationId") == gen_id]
    steps = [e["step"] for e in mine if e["type"] == "generationProgress"]
    # advancing (progress may coalesce), started over once by the takeover, to the last step
    restarts = [i for i in range(1, len(steps)) if steps[i] < steps[i - 1]]
    assert len(restarts) == 1 and steps[-1] == 12, steps
    before, after = steps[:restarts[0]], steps[restarts[0]:]
    assert before == sorted(set(before)) and after == sorted(set(after)) and len(before) >= 3
    statuses = [e["status"] for e in mine if e["type"] == "generationUpdate"]
    assert statuses == ["queued", "running", "completed"]  # exactly one terminal update
    page_steps = await debug_state(
        page, f"d.events.filter(e => e.generationId === '{gen_id}' && e.step).map(e => e.step)")
    assert page_steps == steps
    assert await debug_state(page, "d.protocolErrors") == []
    server_frames_valid(tab)
    assert_sent_frames_valid(tab)


async def test_restart_mid_comfyui_run_re_attaches_and_the_page_sees_it_complete(
    gateway_process: GatewayProcess, comfyui: FakeComfyUI, pages: Pages
) -> None:
    tab = await pages.new("alice")
    page = tab.page
    await sign_in(tab, gateway_process.http_url, "alice")
    window = page.locator(".tool-window").first
    await window.get_by_label("Tool").select_option("comfyui-capture")
    await window.get_by_role("button", name="Run").click()
    run = window.locator(".run")
    await run.wait_for()
    gen_id = await run.get_attribute("data-generation-id")

    # Hold the prompt in the middle of node 4 (23 progress ticks) and restart the gateway.
    await comfyui.wait_for(lambda: comfyui.running_prompt_id is not None and comfyui.current_node == "4")
    comfyui.pause()
    await expect(run.locator(".status-badge")).to_have_text("Running")
    await asyncio.to_thread(gateway_process.terminate)
    await expect(page.locator("#connection")).to_have_text(re.compile(r"Reconnecting in \d+ s"))
    await asyncio.to_thread(gateway_process.start)
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live", timeout=30_000)
    comfyui.resume()

    # The same run goes on after the restart and completes, outputs and all.
    await expect(run.locator(".status-badge")).to_have_text("Completed", timeout=30_000)
    await expect(run.locator("figure[data-kind=image] img")).to_be_visible()
    welcomes = await debug_state(page, "d.welcomes")
    assert len(welcomes) == 2 and welcomes[1]["recovered"] is True

    stream = await server_stream(gateway_process.ws_url, gateway_process.token("alice"), welcomes[0]["epoch"])
    expected = [e["offset"] for e in stream if e["offset"] > welcomes[0]["offset"]]
    assert await debug_state(page, "d.offsets") == expected
    mine = [e for e in stream if e.get("generationId") == gen_id]
    assert [e["status"] for e in mine if e["type"] == "generationUpdate"] == ["queued", "running", "completed"]
    progress_after_restart = [e for e in mine if e["type"] == "generationProgress"
                              and e["offset"] > max(w["offset"] for w in welcomes[:1])]
    assert progress_after_restart
    page_offsets = await debug_state(page, f"d.events.filter(e => e.generationId === '{gen_id}').map(e => e.offset)")
    assert page_offsets == [e["offset"] for e in mine]
    assert await debug_state(page, "d.protocolErrors") == []
    server_frames_valid(tab)
    assert_sent_frames_valid(tab)
