"""Run control in the sandbox (issue 13), in a real browser: a queued run shows its queue
position, a run shows its deadline, and Cancel in a second tab (sent in-band over that
tab's stream) ends the run in both tabs."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import expect

from livegate.testing.gateway import RunningGateway, running_gateway
from tests.browser.conftest import (
    Pages,
    assert_sent_frames_valid,
    debug_state,
    received_frames,
    run_demo,
    server_frames_valid,
    sign_in,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser-run-control"),
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest_asyncio.fixture(loop_scope="module")
async def gateway(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    """One run at a time per user: a user's second run waits in the queue."""
    async with running_gateway(tmp_path, max_concurrency_per_user=1) as gw:
        yield gw


async def test_cancel_from_a_second_tab_ends_the_run_in_both_and_the_queue_shows(
    gateway: RunningGateway, pages: Pages
) -> None:
    context = await pages.context()
    tab1 = await pages.new("alice-tab1", context)
    tab2 = await pages.new("alice-tab2", context)
    for log in (tab1, tab2):
        await sign_in(log, gateway.http_url, "alice")
    page1 = tab1.page
    await page1.get_by_role("button", name="+ New window").click()
    await expect(page1.locator(".tool-window")).to_have_count(2)

    # The first run, with a deadline: its view shows when it will be cancelled.
    await page1.locator(".tool-window").nth(0).get_by_label("Deadline (seconds, optional)").fill("600")
    first = await run_demo(page1, duration=20, steps=20, window=0)
    run1 = page1.locator(f".run[data-generation-id={first}]")
    await expect(run1.locator(".status-badge")).to_have_text("Running")
    await expect(run1.locator(".deadline")).to_contain_text(re.compile(r"Deadline .*cancelled in (9|10) min"))

    # The second waits behind it (one run at a time per user): its position shows.
    second = await run_demo(page1, duration=0, steps=1, window=1)
    run2 = page1.locator(f".run[data-generation-id={second}]")
    await expect(run2.locator(".status-badge")).to_have_text("Queued")
    await expect(run2.locator(".queue-info")).to_have_text(re.compile(r"Next in the queue"))
    await expect(run2).to_have_attribute("data-queue-position", "1")

    # Tab 2 opens the running one from its history and cancels it there, over its stream.
    item = tab2.page.locator(f".history-item[data-generation-id={first}]")
    await expect(item).to_have_attribute("data-status", "running")
    await item.get_by_role("button", name="Open").click()
    view2 = tab2.page.locator(f".tool-window .run[data-generation-id={first}]")
    await expect(view2.locator(".deadline")).to_contain_text("Deadline")
    await view2.get_by_role("button", name="Cancel").click()
    for view in (run1, view2):
        await expect(view.locator(".status-badge")).to_have_text("Cancelled")
        await expect(view.locator(".cancel")).to_be_hidden()
    cancels = [m for m in tab2.sent_messages() if m["type"] == "cancel"]
    assert [m["generationId"] for m in cancels] == [first]  # in-band, not over HTTP
    assert await received_frames(tab2, lambda m: m["type"] == "cancelResult") == [
        {"type": "cancelResult", "id": cancels[0]["id"], "generationId": first, "status": "cancelled"}]

    # The queued run then starts (its position goes) and completes.
    await expect(run2.locator(".status-badge")).to_have_text("Completed")
    await expect(run2.locator(".queue-info")).to_be_hidden()
    for log in (tab1, tab2):
        assert await debug_state(log.page, "d.protocolErrors") == []
        server_frames_valid(log)
    assert_sent_frames_valid(tab1, tab2)
