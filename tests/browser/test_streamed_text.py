"""Streamed text in the sandbox (asyncapi.yaml, "Streamed text"): an OpenAI chat run against
the fake OpenAI server, a long answer with emoji outside the BMP. The page asks for
``textDeltas``, web/client.js rebuilds the text from ``textDelta`` + ``textOffset``, and the
run view's streamed text equals the final text output; a second tab that opens while the
answer streams takes the prefix from GET and ends with the same text."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import expect

from livegate.testing.fake_openai import FakeOpenAI
from livegate.testing.gateway import RunningGateway, running_gateway
from tests.browser.conftest import Pages, debug_state, server_frames_valid, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser-text"),
    pytest.mark.asyncio(loop_scope="module"),
]

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "openai"

# The text the view shows while the run streams, recorded on every change of the element.
RECORD_TEXT = """id => {
  window.__streamed = [];
  const run = document.querySelector(`.run[data-generation-id=${id}]`);
  const text = run.querySelector('.partial-text');
  new MutationObserver(() => window.__streamed.push(text.textContent))
    .observe(text, {childList: true, characterData: true, subtree: true});
}"""


@pytest_asyncio.fixture(loop_scope="module")
async def chat_gateway(tmp_path: Path) -> AsyncIterator[tuple[RunningGateway, FakeOpenAI, str]]:
    async with FakeOpenAI(FIXTURES) as openai:
        expected = openai.long_answer(500, seconds=5)
        tools = tmp_path / "tools.toml"
        tools.write_text(f"""
[[tools]]
id = "chat"
kind = "openai"
title = "Chat"
timeout_seconds = 60
[tools.settings]
mode = "chat"
base_url = "{openai.base_url}/v1"
api_key = "sk-test"
timeout_seconds = 10
""")
        async with running_gateway(tmp_path / "data", tools_file=str(tools)) as gw:
            yield gw, openai, expected


async def test_the_sandbox_shows_streamed_text_equal_to_the_final_text(
        chat_gateway: tuple[RunningGateway, FakeOpenAI, str], pages: Pages) -> None:
    gateway, _openai, expected = chat_gateway
    tab = await pages.new("alice")
    await sign_in(tab, gateway.http_url, "alice")
    page = tab.page
    window = page.locator(".tool-window").first
    await window.get_by_role("textbox", name="Prompt", exact=True).fill("Tell me about the lighthouse 🌅")
    await window.get_by_role("button", name="Run").click()
    run = window.locator(".run")
    await run.wait_for()
    gen_id = await run.get_attribute("data-generation-id")
    await page.evaluate(RECORD_TEXT, gen_id)
    await expect(run.locator(".partial-text")).to_contain_text("lighthouse keeper")

    # A second tab opens mid-stream: it has no prefix, takes it from GET, then follows.
    late = await pages.new("alice-late", tab.page.context)
    await sign_in(late, gateway.http_url, "alice")
    item = late.page.locator(f".history-item[data-generation-id={gen_id}]")
    await expect(item).to_have_attribute("data-status", "running")
    await item.get_by_role("button", name="Open").click()
    late_run = late.page.locator(f".tool-window .run[data-generation-id={gen_id}]")
    await late_run.wait_for()
    await late.page.evaluate(RECORD_TEXT, gen_id)

    await expect(run.locator(".status-badge")).to_have_text("Completed", timeout=60_000)
    await expect(late_run.locator(".status-badge")).to_have_text("Completed", timeout=30_000)
    final = await run.locator("figure[data-kind=text] pre").text_content()
    assert final == expected
    streamed = await page.evaluate("() => window.__streamed")
    assert len(streamed) > 3 and streamed[-1] == final, "the streamed text must end equal to the final text"
    assert all(final.startswith(s) for s in streamed), "every streamed text is a prefix of the final one"
    late_streamed = await late.page.evaluate("() => window.__streamed")
    assert late_streamed and late_streamed[-1] == final
    assert all(final.startswith(s) for s in late_streamed)

    # The page asked for deltas and received them (no partialText on the wire), every frame valid.
    assert any(json.loads(f).get("textDeltas") is True for f in tab.sent if '"auth"' in f)
    progress = server_frames_valid(tab, lambda m: m["type"] == "generationProgress")
    assert progress and all("partialText" not in m for m in progress)
    assert any("textDelta" in m for m in progress)
    assert await debug_state(page, "d.protocolErrors") == []
    assert await debug_state(late.page, "d.protocolErrors") == []
