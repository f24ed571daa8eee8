"""The reference pages (docs/reference/*.html, served at /docs) render both specs in a real
browser, from disk and from the gateway, with every network request refused."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml
from playwright.async_api import async_playwright

from livegate.testing.gateway import running_gateway

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]

pytestmark = pytest.mark.browser


def _message_titles() -> list[str]:
    doc = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
    return [m["title"] for m in doc["components"]["messages"].values()]


def _operation_summaries() -> list[str]:
    doc = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    return [op["summary"] for path in doc["paths"].values() for op in path.values()
            if isinstance(op, dict) and "summary" in op]


async def _render(base: str, *, allow_origin: str | None) -> dict[str, str]:
    """Open both pages under ``base``; fail on any request leaving ``allow_origin`` (or, for
    file://, on any non-file request). Returns each page's visible text."""
    texts: dict[str, str] = {}
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            outside: list[str] = []
            errors: list[str] = []

            async def guard(route):  # type: ignore[no-untyped-def]
                url = route.request.url
                local = url.startswith(("file://", "data:")) or (
                    allow_origin is not None and url.startswith(allow_origin))
                if local:
                    await route.continue_()
                else:
                    outside.append(url)
                    await route.abort()

            await page.route("**/*", guard)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            for name, ready in (("asyncapi", ".aui-root, #introduction"), ("openapi", ".redoc-wrap, .api-content")):
                await page.goto(f"{base}/{name}.html")
                await page.wait_for_selector(ready, timeout=20_000)
                texts[name] = await page.inner_text("body")
            assert not outside, f"reference pages reached the network: {outside}"
            assert not errors, f"page errors: {errors}"
        finally:
            await browser.close()
    return texts


def _assert_complete(texts: dict[str, str]) -> None:
    missing = [t for t in _message_titles() if t not in texts["asyncapi"]]
    assert not missing, f"messages not rendered: {missing}"
    missing_ops = [s for s in _operation_summaries() if s not in texts["openapi"]]
    assert not missing_ops, f"operations not rendered: {missing_ops}"


async def test_reference_pages_render_from_disk() -> None:
    _assert_complete(await _render((ROOT / "docs" / "reference").as_uri(), allow_origin=None))


async def test_reference_pages_are_served_at_docs(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        async with httpx.AsyncClient(base_url=gw.http_url) as client:
            index = await client.get("/docs/")
            assert index.status_code == 200 and "reference/asyncapi.html" in index.text
        _assert_complete(await _render(f"{gw.http_url}/docs/reference", allow_origin=gw.http_url))
