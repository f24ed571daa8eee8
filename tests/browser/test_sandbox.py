"""The sandbox in a real browser: a run live, several tabs and users, Cancel, resync."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from playwright.async_api import expect

from livegate.testing.gateway import RunningGateway
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
    pytest.mark.xdist_group("browser-sandbox"),
    pytest.mark.asyncio(loop_scope="module"),
]


async def test_a_user_runs_the_demo_and_sees_progress_then_image_text_and_audio(
    gateway: RunningGateway, pages: Pages
) -> None:
    tab = await pages.new("alice")
    await sign_in(tab, gateway.http_url, "alice")
    page = tab.page
    gen_id = await run_demo(page, duration=2.4, steps=6, prompt="a lighthouse at dusk")
    run = page.locator(f".run[data-generation-id={gen_id}]")

    # Progress advances step by step: the step label, the bar, a preview and streamed text.
    # (The service coalesces progress to 20/s, so under load a step may be folded into the next.)
    await expect(run.locator(".step")).to_have_text(re.compile(r"Step [1-3] of 6"))
    await expect(run.locator(".preview")).to_be_visible()
    await expect(run.locator(".partial-text")).not_to_be_empty()
    await expect(run.locator(".step")).to_have_text(re.compile(r"Step [4-5] of 6"))
    mid_fraction = float(await run.locator("progress").evaluate("el => el.value"))
    assert 0 < mid_fraction < 1

    # Completion: image, text and audio rendered by kind; the outputs load (signed URLs).
    await expect(run.locator(".status-badge")).to_have_text("Completed")
    image = run.locator("figure[data-kind=image] img")
    await expect(image).to_be_visible()
    await page.wait_for_function(
        "id => { const img = document.querySelector(`.run[data-generation-id=${id}] figure[data-kind=image] img`);"
        " return img && img.complete && img.naturalWidth === 512; }", arg=gen_id)
    await expect(run.locator("figure[data-kind=text] pre")).to_contain_text("lighthouse at dusk")
    audio = run.locator("figure[data-kind=audio] audio")
    await expect(audio).to_have_attribute("controls", "")
    await page.wait_for_function(
        "id => { const a = document.querySelector(`.run[data-generation-id=${id}] audio`);"
        " return a && a.readyState >= 1 && a.duration > 1; }", arg=gen_id)
    await expect(run.locator(".cancel")).to_be_hidden()

    # The history panel shows the run, completed, with a thumbnail.
    item = page.locator(f".history-item[data-generation-id={gen_id}]")
    await expect(item).to_have_attribute("data-status", "completed")
    await expect(item.locator(".thumb img")).to_be_visible()

    # Every event of the server's stream reached the page once, in order; nothing unknown.
    welcome = await debug_state(page, "d.welcomes[0]")
    stream = await server_stream(gateway.ws_url, gateway.token("alice"), welcome["epoch"])
    assert await debug_state(page, "d.offsets") == [e["offset"] for e in stream if e["offset"] > welcome["offset"]]
    steps = await debug_state(page, f"d.events.filter(e => e.generationId === '{gen_id}' && e.type === "
                                    "'generationProgress').map(e => e.step)")
    assert steps == [e["step"] for e in stream if e["type"] == "generationProgress"]
    assert steps[-1] == 6 and len(steps) >= 4 and steps == sorted(set(steps))
    assert await debug_state(page, "d.protocolErrors") == []
    assert server_frames_valid(tab)
    assert assert_sent_frames_valid(tab) >= 1


async def test_two_tabs_of_a_user_show_the_same_run_live_and_another_user_sees_none_of_it(
    gateway: RunningGateway, pages: Pages
) -> None:
    alice_context = await pages.context()
    tab1 = await pages.new("alice-tab1", alice_context)
    tab2 = await pages.new("alice-tab2", alice_context)
    bob = await pages.new("bob")  # its own browser context: other cookies, storage, sockets
    for log, user in ((tab1, "alice"), (tab2, "alice"), (bob, "bob")):
        await sign_in(log, gateway.http_url, user)

    gen_id = await run_demo(tab1.page, duration=3.0, steps=6)

    # Tab 2 sees the run appear in its history, running, and opens it while it runs.
    item = tab2.page.locator(f".history-item[data-generation-id={gen_id}]")
    await expect(item).to_have_attribute("data-status", "running")
    await item.get_by_role("button", name="Open").click()
    view2 = tab2.page.locator(f".tool-window .run[data-generation-id={gen_id}]")
    await expect(view2.locator(".status-badge")).to_have_text("Running")
    await expect(view2.locator(".preview")).to_be_visible()
    await expect(view2.locator(".step")).to_have_text(re.compile(r"Step [3-6] of 6|Done"))

    # Both tabs end with the same completed run and its outputs.
    for log in (tab1, tab2):
        run = log.page.locator(f".tool-window .run[data-generation-id={gen_id}]")
        await expect(run.locator(".status-badge")).to_have_text("Completed")
        await expect(run.locator("figure.output")).to_have_count(3)
    steps1 = await debug_state(tab1.page, f"d.events.filter(e => e.generationId === '{gen_id}').map(e => e.offset)")
    steps2 = await debug_state(tab2.page, f"d.events.filter(e => e.generationId === '{gen_id}').map(e => e.offset)")
    assert steps1 == steps2 and len(steps1) >= 8  # queued, running, 6 progress, completed

    # Bob: nothing of it arrived, his history is empty, and the run is not his to fetch.
    assert not [f for f in bob.received if gen_id in f]
    assert await debug_state(bob.page, "d.events.length") == 0
    await expect(bob.page.locator(".history-item")).to_have_count(0)
    status = await bob.page.evaluate(
        "async id => { const s = JSON.parse(sessionStorage.getItem('livegate.session'));"
        " const r = await fetch('/v1/generations/' + id, {headers: {Authorization: 'Bearer ' + s.token}});"
        " return r.status; }", gen_id)
    assert status == 404
    assert_sent_frames_valid(tab1, tab2, bob)
    for log in (tab1, tab2, bob):
        server_frames_valid(log)
        assert await debug_state(log.page, "d.protocolErrors") == []


async def test_cancel_from_the_ui_stops_the_run(gateway: RunningGateway, pages: Pages) -> None:
    tab = await pages.new("alice")
    await sign_in(tab, gateway.http_url, "alice")
    page = tab.page
    gen_id = await run_demo(page, duration=20, steps=20)
    run = page.locator(f".run[data-generation-id={gen_id}]")
    await expect(run.locator(".step")).to_have_text(re.compile(r"Step [2-9] of 20"))
    await run.get_by_role("button", name="Cancel").click()
    await expect(run.locator(".status-badge")).to_have_text("Cancelled")
    await expect(run.locator(".cancel")).to_be_hidden()
    await expect(page.locator(f".history-item[data-generation-id={gen_id}]")).to_have_attribute(
        "data-status", "cancelled")

    async with gateway.http("alice") as http:
        generation = (await http.get(f"/v1/generations/{gen_id}")).json()
    assert generation["status"] == "cancelled"
    assert generation["outputs"] == []
    # The cancellation is the run's last event: no progress after it, far from the end.
    events = await debug_state(page, f"d.events.filter(e => e.generationId === '{gen_id}')")
    assert events[-1]["type"] == "generationUpdate" and events[-1]["status"] == "cancelled"
    assert max(e["step"] or 0 for e in events if e["type"] == "generationProgress") < 20
    assert_sent_frames_valid(tab)


async def test_keyboard_only_on_a_narrow_window_with_labelled_controls(gateway: RunningGateway, pages: Pages) -> None:
    context = await pages.context(viewport={"width": 360, "height": 740})
    tab = await pages.new("narrow", context)
    page = tab.page
    await page.goto(gateway.http_url + "/")
    # Sign in with the keyboard only: the user id field, then Enter.
    await page.get_by_label("User id").focus()
    await page.keyboard.press("Control+A")
    await page.keyboard.type("kim")
    await page.keyboard.press("Enter")
    await page.locator("#connection[data-state=live]").wait_for()
    await page.locator(".tool-window form").wait_for()

    # Every control has an accessible name; nothing overflows sideways at 360 px.
    unlabelled = await page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
      .filter(el => el.offsetParent !== null)
      .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                    && !el.closest('fieldset')?.querySelector('legend') && !el.textContent.trim())
      .map(el => el.outerHTML.slice(0, 80))""")
    assert unlabelled == []
    assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")

    # Tab through the form to Run, press Enter: the run starts and completes.
    await page.locator(".tool-window").get_by_label("Duration (s)").fill("0.5")
    focused = ""
    for _ in range(40):  # bounded: the Run button is a few Tabs away
        await page.keyboard.press("Tab")
        focused = await page.evaluate("() => document.activeElement.textContent.trim()")
        if focused == "Run":
            break
    assert focused == "Run"
    await page.keyboard.press("Enter")
    await expect(page.locator(".tool-window .run .status-badge")).to_have_text("Completed")
    await expect(page.locator(".tool-window figure.output")).to_have_count(3)
    assert await page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth")


async def test_a_hidden_page_sends_app_level_pings_and_gets_pongs(gateway: RunningGateway, pages: Pages) -> None:
    tab = await pages.new("hidden")
    await sign_in(tab, gateway.http_url, "hana")
    page = tab.page
    await page.evaluate("""() => {
      window.__livegate.client.options.hiddenPingMs = 200;
      Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
      document.dispatchEvent(new Event('visibilitychange'));
    }""")
    await page.wait_for_function("() => window.__livegate.sent.filter(f => f.type === 'ping').length >= 3")
    await page.wait_for_function("() => window.__livegate.client.stats.framesReceived >= 4")  # welcome + pongs
    pongs = [f for f in tab.received if '"type":"pong"' in f]
    assert len(pongs) >= 2
    pings = [f for f in tab.sent_messages() if f["type"] == "ping"]
    assert {p["id"] for p in pings} >= {json.loads(p)["id"] for p in pongs}
    assert len(tab.sockets) == 1
    assert_sent_frames_valid(tab)


async def test_history_lost_on_the_server_makes_the_page_resync_over_http(
    gateway: RunningGateway, pages: Pages
) -> None:
    tab = await pages.new("resync")
    await sign_in(tab, gateway.http_url, "lee")
    page = tab.page
    await page.evaluate("() => window.__livegate.client.close()")  # the page misses what follows
    await expect(page.locator("#connection")).to_have_attribute("data-state", "idle")
    async with gateway.http("lee") as http:
        created = (await http.post("/v1/generations", json={"toolId": "demo", "inputs": {
            "prompt": "missed while away", "durationSeconds": 0, "steps": 1}})).json()
        for _ in range(100):  # bounded wait for the run to finish on the server
            if (await http.get(f"/v1/generations/{created['id']}")).json()["status"] == "completed":
                break
            await asyncio.sleep(0.05)
    # Resume from a position the server cannot honour (an epoch it does not know).
    await page.evaluate("() => { const c = window.__livegate.client; c.cursor.reset('lost-epoch', 3); c.connect(); }")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    await expect(page.locator(".toast")).to_contain_text("history was lost")
    item = page.locator(f".history-item[data-generation-id={created['id']}]")
    await expect(item).to_have_attribute("data-status", "completed")
    assert await debug_state(page, "d.resyncs") == ["fresh", "notRecovered"]
    welcome = await debug_state(page, "d.welcomes[d.welcomes.length - 1]")
    assert welcome["recovered"] is False
    assert_sent_frames_valid(tab)


async def test_several_tool_windows_run_at_once(gateway: RunningGateway, pages: Pages) -> None:
    tab = await pages.new("windows")
    await sign_in(tab, gateway.http_url, "max")
    page = tab.page
    await page.get_by_role("button", name="+ New window").click()
    await expect(page.locator(".tool-window")).to_have_count(2)
    first = await run_demo(page, duration=2.0, steps=4, window=0, prompt="a red barn")
    second = await run_demo(page, duration=2.0, steps=4, window=1, prompt="a blue boat")
    assert first != second
    for index, (gen_id, words) in enumerate(((first, "red barn"), (second, "blue boat"))):
        run = page.locator(".tool-window").nth(index).locator(".run")
        assert await run.get_attribute("data-generation-id") == gen_id
        await expect(run.locator(".status-badge")).to_have_text("Completed")
        await expect(run.locator("figure[data-kind=text] pre")).to_contain_text(words)
    # They overlapped: the second started before the first completed.
    events = await debug_state(page, "d.events.filter(e => e.type === 'generationUpdate')"
                                     ".map(e => [e.generationId, e.status])")
    assert events.index([second, "running"]) < events.index([first, "completed"])
    await expect(page.locator(".history-item")).to_have_count(2)
    await page.locator(".tool-window").nth(1).get_by_role("button", name="Close this window").click()
    await expect(page.locator(".tool-window")).to_have_count(1)


async def test_a_notification_shows_as_a_toast_for_its_user_only(gateway: RunningGateway, pages: Pages) -> None:
    ann = await pages.new("ann")
    ben = await pages.new("ben")
    await sign_in(ann, gateway.http_url, "ann")
    await sign_in(ben, gateway.http_url, "ben")
    await gateway.publish("ann", {"type": "notification", "level": "warning", "title": "Maintenance",
                                  "message": "The image tool restarts in 5 minutes."})
    toast = ann.page.locator(".toast-warning")
    await expect(toast).to_contain_text("Maintenance: The image tool restarts in 5 minutes.")
    await expect(toast).to_have_attribute("role", "status")
    await gateway.publish("ben", {"type": "notification", "level": "info", "message": "only for ben"})
    await expect(ben.page.locator(".toast-info")).to_contain_text("only for ben")
    assert await debug_state(ben.page, "d.events.map(e => e.type)") == ["notification"]
    assert await debug_state(ann.page, "d.events.map(e => e.type)") == ["notification"]


async def test_a_reload_resumes_from_the_position_kept_in_this_tab(gateway: RunningGateway, pages: Pages) -> None:
    tab = await pages.new("reload")
    await sign_in(tab, gateway.http_url, "rae")
    page = tab.page
    gen_id = await run_demo(page, duration=3.0, steps=6)
    await expect(page.locator(f".run[data-generation-id={gen_id}] .step")).to_have_text(re.compile(r"Step [2-4] of 6"))
    before = await debug_state(page, "d.client.position")
    await page.reload()
    await page.locator("#connection[data-state=live]").wait_for()  # signed in from this tab's session
    auths = [f for f in tab.sent_messages() if f["type"] == "auth"]
    assert len(auths) == 2 and auths[1]["resume"]["epoch"] == before["epoch"]
    assert auths[1]["resume"]["offset"] >= before["offset"]
    # The stored position carries the timestamp of the event at it, exactly as received, when
    # the page received that event (not when its offset was only named in `supersedes`).
    resumed = auths[1]["resume"]
    at = server_frames_valid(tab, lambda m: m["type"] != "welcome" and m.get("offset") == resumed["offset"])
    assert resumed.get("timestamp") == (at[0]["timestamp"] if at else None), (resumed, at)
    assert (await debug_state(page, "d.welcomes[0]"))["recovered"] is True
    await expect(page.locator(f".history-item[data-generation-id={gen_id}]")).to_have_attribute(
        "data-status", "completed")
    # After the reload the page got exactly the offsets after its resume position, once each.
    offsets = await debug_state(page, "d.offsets")
    assert offsets and offsets[0] == auths[1]["resume"]["offset"] + 1 and offsets == sorted(set(offsets))
