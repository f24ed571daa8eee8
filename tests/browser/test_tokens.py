"""Tokens in the browser: a short-lived token is refreshed in-band (the socket stays open);
an expired token brings the sign-in prompt back instead of a reconnect loop."""

from __future__ import annotations

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
    run_demo,
    sign_in,
    wait_live,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser-tokens"),
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest_asyncio.fixture(loop_scope="module")
async def short_tokens(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    """tokenExpiring 3 s before expiry; the connection closes 0.5 s after it."""
    async with running_gateway(tmp_path, token_expiring_lead_seconds=3.0, token_grace_seconds=0.5) as gw:
        yield gw


async def test_a_short_lived_token_is_refreshed_without_closing_the_socket(
    short_tokens: RunningGateway, pages: Pages
) -> None:
    tab = await pages.new("dana")
    await sign_in(tab, short_tokens.http_url, "dana", ttl=4)
    page = tab.page
    # Each 4 s token is replaced in-band about 1 s after it was issued: wait for three.
    await page.wait_for_function(
        "() => window.__livegate.sent.filter(f => f.type === 'refresh').length >= 3", timeout=15_000)
    gen_id = await run_demo(page, duration=1.0, steps=3)
    await expect(page.locator(f".run[data-generation-id={gen_id}] .status-badge")).to_have_text("Completed")
    await page.wait_for_function(
        "() => window.__livegate.sent.filter(f => f.type === 'refresh').length >= 4", timeout=15_000)

    refreshed = [f for f in tab.received if '"type":"refreshed"' in f]
    assert len(refreshed) >= 3
    assert len(tab.sockets) == 1 and tab.closes == []  # one socket, never closed
    states = await debug_state(page, "d.states.map(s => s.state)")
    assert states == ["connecting", "live"]
    tokens = await debug_state(page, "d.sent.map(f => f.token).filter(Boolean)")
    assert len(set(tokens)) == len(tokens)  # every refresh carries a new token
    assert_sent_frames_valid(tab)


async def test_an_expired_token_leads_to_the_sign_in_prompt_not_a_reconnect_loop(
    short_tokens: RunningGateway, pages: Pages
) -> None:
    tab = await pages.new("erin")
    page = tab.page
    await page.goto(short_tokens.http_url + "/")
    await page.get_by_label("Paste a token").check()
    await page.get_by_label("Token (JWT)").fill(short_tokens.token("erin", ttl_seconds=3))
    await page.get_by_role("button", name="Sign in").click()
    await wait_live(page)

    # A pasted token cannot be renewed by the page: a banner asks for one, then it expires.
    await expect(page.locator("#banner")).to_contain_text("expires soon")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "tokenExpired")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#sign-in-reason")).to_contain_text("session expired")
    await page.screenshot(path=pages.artifacts_prefix() + "-sign-in-prompt.png")
    assert len(tab.sockets) == 1  # the old token was not retried
    assert await debug_state(page, "d.client.state") == "tokenExpired"
    assert [f for f in tab.received if '"code":"token_expired"' in f]

    # Signing in again reconnects once, with the new token, and resumes where it stopped.
    new_token = short_tokens.token("erin", ttl_seconds=600)
    await page.get_by_label("Token (JWT)").fill(new_token)
    await page.get_by_role("button", name="Sign in").click()
    await wait_live(page)
    await expect(page.locator("#banner")).to_be_hidden()
    assert len(tab.sockets) == 2
    auths = [f for f in tab.sent_messages() if f["type"] == "auth"]
    assert [a["token"] for a in auths][1] == new_token
    assert "resume" in auths[1]
    welcome = await debug_state(page, "d.welcomes[d.welcomes.length - 1]")
    assert welcome["recovered"] is True
    assert_sent_frames_valid(tab)
