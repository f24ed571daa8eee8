"""The sandbox's run view shows the webhook deliveries of a run (read over HTTP from
``GET /v1/generations/{id}/webhooks``): one delivered to a real loopback receiver, one
refused at delivery (a loopback address the allow-list does not admit) and so failed."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import expect
from standardwebhooks import Webhook

from livegate.testing.gateway import RunningGateway, running_gateway
from livegate.testing.webhook_receiver import WebhookReceiver
from tests.browser.conftest import Pages, run_demo, sign_in

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser-webhooks"),
    pytest.mark.asyncio(loop_scope="module"),
]
SECRET = "whsec_" + base64.b64encode(b"b" * 32).decode()


@pytest_asyncio.fixture(loop_scope="module")
async def receiver() -> AsyncIterator[WebhookReceiver]:
    server = WebhookReceiver()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def webhook_gateway(tmp_path: Path, receiver: WebhookReceiver) -> AsyncIterator[RunningGateway]:
    endpoints = [
        {"name": "billing", "url": receiver.url, "secret": SECRET, "events": ["completed"]},
        {"name": "audit", "url": "http://127.0.0.2:9/hook", "secret": SECRET, "events": ["completed"]},
    ]
    async with running_gateway(tmp_path, webhooks=json.dumps(endpoints), webhook_allow=("127.0.0.1/32",),
                               webhook_poll_seconds=0.2) as gw:
        yield gw


async def test_the_run_view_shows_delivered_and_failed_webhooks(
        webhook_gateway: RunningGateway, receiver: WebhookReceiver, pages: Pages) -> None:
    tab = await pages.new("alice")
    await sign_in(tab, webhook_gateway.http_url, "alice")
    page = tab.page
    gen_id = await run_demo(page, duration=0.3, steps=2)
    run = page.locator(f".run[data-generation-id={gen_id}]")
    await expect(run.locator(".status-badge")).to_have_text("Completed")
    webhooks = run.locator(".webhooks")
    await expect(webhooks).to_be_visible()
    billing = webhooks.locator(".webhook[data-endpoint=billing]")
    audit = webhooks.locator(".webhook[data-endpoint=audit]")
    await expect(billing).to_have_attribute("data-status", "delivered")
    await expect(billing.locator(".webhook-badge")).to_have_text("Delivered")
    await expect(billing).to_contain_text("generation.completed")
    await expect(audit).to_have_attribute("data-status", "failed")
    await expect(audit).to_contain_text("loopback")
    await expect(webhooks).to_have_attribute("data-status", "failed")
    (request,) = await receiver.wait_for(1)
    assert Webhook(SECRET).verify(request.body, request.headers)["data"]["id"] == gen_id
