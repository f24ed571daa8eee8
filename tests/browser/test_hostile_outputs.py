"""A hostile output cannot run script on the gateway's origin (issue 14): an SVG or HTML
output with script is served as an attachment with ``nosniff`` and a ``sandbox`` CSP, and
the sandbox refuses a ``javascript:`` output URL (or preview) that reached its socket."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import expect

from livegate.protocol import http
from livegate.store import OutputRow
from livegate.testing.gateway import RunningGateway
from tests.browser.conftest import Pages, run_demo, sign_in

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]

BEACON = "/v1/pwned"  # any request to it means hostile script ran
SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" onload="fetch(\'' + BEACON.encode() + b'?svg\')">'
       b'<script>fetch("' + BEACON.encode() + b'?svg-script")</script><circle r="4"/></svg>')
HTML = b'<!doctype html><script>fetch("' + BEACON.encode() + b'?html")</script><img src=x onerror="fetch(\'/v1/pwned?img\')">'


async def _hostile_output(gw: RunningGateway, user: str, media_type: str, data: bytes, filename: str) -> str:
    service = gw.gateway.generations
    assert service is not None
    output_id = service.outputs.new_id()
    row = OutputRow(id=output_id, user_id=user, generation_id="gen_0000000000000000", kind="file",
                    media_type=media_type, size_bytes=len(data), filename=filename, created_at=time.time())
    await service.store.write_output(row, data)
    return str(service.outputs.describe(row).url)


async def test_svg_and_html_outputs_with_script_never_run(gateway: RunningGateway, pages: Pages) -> None:
    tab = await pages.new("alice")
    page = tab.page
    beacons: list[str] = []
    page.on("request", lambda request: beacons.append(request.url) if BEACON in request.url else None)
    await sign_in(tab, gateway.http_url, "alice")
    for media_type, data, name in (("image/svg+xml", SVG, "x.svg"), ("text/html", HTML, "x.html"),
                                   ("application/xhtml+xml", HTML, "x.xhtml")):
        url = await _hostile_output(gateway, "alice", media_type, data, name)
        async with httpx.AsyncClient(base_url=gateway.http_url) as client:
            response = await client.get(url)
        assert response.status_code == 200
        assert response.headers["content-disposition"].startswith("attachment;"), response.headers
        assert response.headers["x-content-type-options"] == "nosniff"
        assert "sandbox" in response.headers["content-security-policy"]
        # Opened directly in the browser: a download, never a rendered document.
        try:
            async with page.expect_download(timeout=5000):
                await page.goto(gateway.http_url + url)
        except PlaywrightError as exc:
            assert "Download is starting" in str(exc), exc
        # Embedded as an image on the sandbox's page: an <img> never runs script either.
        await page.goto(gateway.http_url + "/")
        await page.evaluate("url => new Promise(done => { const i = new Image(); i.onload = i.onerror = done;"
                            " i.src = url; document.body.append(i); })", url)
    await page.wait_for_timeout(300)  # let any (wrongly) started script issue its request
    assert beacons == [], beacons


async def test_a_javascript_url_in_a_generation_update_is_refused(gateway: RunningGateway, pages: Pages) -> None:
    tab = await pages.new("bob")
    page = tab.page
    await sign_in(tab, gateway.http_url, "bob")
    await page.evaluate("() => { window.__pwned = 0; }")
    gen_id = await run_demo(page, duration=20, steps=20)
    hostile_output = http.Output(id="out_0000000000000000", kind="file", media_type="text/html",  # type: ignore[arg-type]
                                 url="javascript:window.__pwned=1;fetch('/v1/pwned?js')", filename="click-me.html")
    # The publish API refuses it (Output.url has a pattern) ...
    async with httpx.AsyncClient(base_url=gateway.http_url) as client:
        refused = await client.post("/v1/events", headers={
            "Authorization": f"Bearer {gateway.gateway.config.service_token}"}, json={"events": [{
                "userId": "bob", "event": {"type": "generationUpdate", "generationId": gen_id, "toolId": "demo",
                                           "status": "completed", "outputs": [{
                                               "id": "out_x", "kind": "file", "mediaType": "text/html",
                                               "url": "javascript:alert(1)"}]}}]})
    assert refused.status_code == 422, refused.text
    # ... and if one reaches the socket anyway (an older publisher, a compromised backend),
    # the sandbox renders no link to it and no preview from it.
    progress = http.GenerationProgressInput(generation_id=gen_id, fraction=0.5,
                                            preview=http.Preview(media_type="image/png", url="javascript:window.__pwned=2"))
    update = http.GenerationUpdateInput(generation_id=gen_id, tool_id="demo", status="completed",  # type: ignore[arg-type]
                                        outputs=[hostile_output])
    await gateway.gateway.publisher.publish([("bob", progress), ("bob", update)])
    run = page.locator(f".run[data-generation-id={gen_id}]")
    await expect(run.locator(".status-badge")).to_have_text("Completed")
    await expect(run.locator("figure.output-refused")).to_have_count(1)
    hrefs: list[Any] = await page.evaluate(
        "() => [...document.querySelectorAll('a[href], img[src], audio[src], video[src]')]"
        ".map(e => e.getAttribute('href') || e.getAttribute('src'))")
    assert not [h for h in hrefs if str(h).lower().startswith("javascript:")], hrefs
    for link in await run.locator("a").all():
        await link.click(timeout=2000)
    assert await page.evaluate("() => window.__pwned") == 0
