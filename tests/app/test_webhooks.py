"""Signed webhooks through the public interfaces: a real gateway (SQLite and PostgreSQL), a
real receiving HTTP server on loopback (``WebhookReceiver``), signatures verified with the
``standardwebhooks`` library (never with livegate's code), deliveries read back with
``GET /v1/generations/{id}/webhooks`` and validated against openapi.yaml."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from livegate.client import ApiProblem, GenerationsClient
from livegate.testing.gateway import RunningGateway, running_gateway
from livegate.testing.webhook_receiver import WebhookReceiver

from .test_generations_http import TOOLS_TOML, body, problem, settled

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(b"o" * 32).decode()
FAST = {  # retries within a test's time: 3 attempts, delays of at most 0.2 s
    "webhook_allow": ("127.0.0.1/32",), "webhook_secret": SECRET, "webhook_per_generation": True,
    "webhook_backoff_base_seconds": 0.05, "webhook_backoff_factor": 2.0, "webhook_backoff_max_seconds": 0.2,
    "webhook_max_attempts": 3, "webhook_poll_seconds": 0.1, "webhook_timeout_seconds": 5.0,
}
Gateways = Callable[..., AbstractAsyncContextManager[RunningGateway]]


@pytest.fixture(params=["sqlite", "postgres"])
def gateways(request: pytest.FixtureRequest, tmp_path: Path) -> Gateways:
    """Start a gateway with webhook settings (``FAST`` + overrides) on SQLite or PostgreSQL."""
    database_url = None
    if request.param == "postgres":
        database_url = request.getfixturevalue("postgres_server").create_database("wh_" + secrets.token_hex(4))
    workflow = Path(__file__).resolve().parents[1] / "fixtures/comfyui/workflows/success.json"
    tools = tmp_path / "tools.toml"
    tools.write_text(TOOLS_TOML.format(workflow=workflow))

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[RunningGateway]:
        async with running_gateway(tmp_path / "data", tools_file=str(tools), database_url=database_url,
                                   **{**FAST, **overrides}) as gw:
            yield gw

    return make


async def create(client: httpx.AsyncClient, **extra: Any) -> httpx.Response:
    return await client.post("/v1/generations", json={"toolId": "demo", "inputs": {"prompt": "kite"}, **extra})


async def deliveries(client: httpx.AsyncClient, gen_id: str, until: Callable[[list[dict[str, Any]]], bool],
                     timeout: float = 15.0) -> list[dict[str, Any]]:
    """The generation's deliveries (validated against openapi.yaml) once ``until`` holds."""
    async with asyncio.timeout(timeout):
        while True:
            listed = body(await client.get(f"/v1/generations/{gen_id}/webhooks"), "WebhookDeliveryList")
            if until(listed["deliveries"]):
                return listed["deliveries"]  # type: ignore[no-any-return]
            await asyncio.sleep(0.05)


def settled_all(items: list[dict[str, Any]]) -> bool:
    return bool(items) and all(d["status"] != "pending" for d in items)


def verified(request: Any, secret: str = SECRET) -> dict[str, Any]:
    """The body, verified by the reference implementation of Standard Webhooks."""
    return Webhook(secret).verify(request.body, request.headers)  # type: ignore[no-any-return]


async def test_a_generation_webhook_is_signed_per_standard_webhooks(gateways: Gateways,
                                                                    webhook_receiver: WebhookReceiver) -> None:
    async with gateways() as gw, gw.http("alice") as alice:
        created = await create(alice, webhookUrl=webhook_receiver.url, webhookEvents=["running", "completed"])
        assert created.status_code == 202, created.text
        gen = created.json()
        done = await settled(alice, gen["id"])
        requests = await webhook_receiver.wait_for(2)
        events = [verified(r) for r in requests]
        assert sorted(e["type"] for e in events) == ["generation.completed", "generation.running"]
        final = next(e for e in events if e["type"] == "generation.completed")
        assert final["data"]["id"] == gen["id"] and final["data"]["status"] == "completed"
        assert final["data"]["outputs"] == done["outputs"] or len(final["data"]["outputs"]) == len(done["outputs"])
        assert all(r.method == "POST" and r.headers["content-type"] == "application/json" for r in requests)
        assert len({r.headers["webhook-id"] for r in requests}) == 2
        with pytest.raises(Exception, match="signature"):
            Webhook(OTHER_SECRET).verify(requests[0].body, requests[0].headers)
        listed = await deliveries(alice, gen["id"], lambda d: len(d) == 2 and settled_all(d))
        assert {(d["event"], d["status"], d["endpoint"], d["attempts"]) for d in listed} == {
            ("generation.running", "delivered", "generation", 1), ("generation.completed", "delivered", "generation", 1)}
        assert {d["id"] for d in listed} == {r.headers["webhook-id"] for r in requests}
        assert all(d["url"] == webhook_receiver.url and d["lastStatusCode"] == 204 for d in listed)
    async with gateways() as gw, gw.http("bob") as bob:  # another user's deliveries are not found
        problem(await bob.get(f"/v1/generations/{gen['id']}/webhooks"), 404, "not_found")


async def test_retries_keep_the_webhook_id_until_the_receiver_succeeds(gateways: Gateways,
                                                                       webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.fail_next(2)
    async with gateways() as gw, gw.http("alice") as alice:
        gen = (await create(alice, webhookUrl=webhook_receiver.url)).json()
        requests = await webhook_receiver.wait_for(3)
        assert len({r.headers["webhook-id"] for r in requests}) == 1
        assert all(verified(r)["type"] == "generation.completed" for r in requests)
        (delivery,) = await deliveries(alice, gen["id"], settled_all)
        assert delivery["status"] == "delivered" and delivery["attempts"] == 3
        assert delivery["id"] == requests[0].headers["webhook-id"] and "nextAttemptAt" not in delivery


async def test_a_permanent_failure_is_recorded_and_visible(gateways: Gateways, webhook_receiver: WebhookReceiver) -> None:
    webhook_receiver.mode = "fail"
    async with gateways() as gw, gw.http("alice") as alice:
        gen = (await create(alice, webhookUrl=webhook_receiver.url)).json()
        (delivery,) = await deliveries(alice, gen["id"], settled_all)
        assert delivery["status"] == "failed" and delivery["attempts"] == FAST["webhook_max_attempts"]
        assert delivery["lastStatusCode"] == 500 and "500" in delivery["lastError"]
        assert len(webhook_receiver.requests) == FAST["webhook_max_attempts"]


async def test_per_generation_urls_need_the_setting(gateways: Gateways, webhook_receiver: WebhookReceiver) -> None:
    async with gateways(webhook_per_generation=False) as gw, gw.http("alice") as alice:
        problem(await create(alice, webhookUrl=webhook_receiver.url), 422, "webhooks_disabled")
        assert (await create(alice)).status_code == 202  # without one, create works as before


REFUSED = [
    "http://127.0.0.2/hook",  # loopback (only 127.0.0.1/32 is allowed here)
    "http://[::1]/hook",
    "http://10.1.2.3/hook", "http://172.16.0.1/hook", "http://192.168.1.1/hook",  # RFC 1918
    "http://[fd12:3456::1]/hook",  # unique-local
    "http://169.254.1.1/hook", "http://[fe80::1]/hook",  # link-local
    "http://100.64.0.1/hook",  # CGNAT
    "http://224.0.0.1/hook", "http://[ff02::1]/hook",  # multicast
    "http://0.0.0.0/hook", "http://[::]/hook",  # unspecified
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/",  # cloud metadata
    "http://[::ffff:10.0.0.1]/hook",  # an IPv4-mapped private address
    "ftp://example.com/hook", "file:///etc/passwd", "http://user:pw@127.0.0.1/hook",
]


async def test_refused_webhook_urls_are_422_at_create(gateways: Gateways) -> None:
    async with gateways() as gw, gw.http("alice") as alice:
        for url in REFUSED:
            refused = problem(await create(alice, webhookUrl=url), 422, "webhook_url_refused")
            assert refused["errors"][0]["path"] == "$.webhookUrl", (url, refused)


async def test_deployment_endpoints_get_the_statuses_they_ask_for(gateways: Gateways,
                                                                  webhook_receiver: WebhookReceiver) -> None:
    other = WebhookReceiver()
    await other.start()
    endpoints = [
        {"name": "billing", "url": webhook_receiver.url, "secret": OTHER_SECRET, "events": ["completed", "cancelled"]},
        {"name": "alerts", "url": other.url, "secret": SECRET, "events": ["failed"]},
        {"name": "internal", "url": "http://127.0.0.2:9/hook", "secret": SECRET, "events": ["completed"]},
    ]
    try:
        async with gateways(webhooks=json.dumps(endpoints), webhook_per_generation=False) as gw, \
                gw.http("alice") as alice:
            gen = (await create(alice)).json()
            await settled(alice, gen["id"])
            (request,) = await webhook_receiver.wait_for(1)
            event = verified(request, OTHER_SECRET)
            assert event["type"] == "generation.completed" and event["data"]["id"] == gen["id"]
            listed = await deliveries(alice, gen["id"], lambda d: len(d) == 2 and settled_all(d))
            by_name = {d["endpoint"]: d for d in listed}
            assert by_name["billing"]["status"] == "delivered" and "url" not in by_name["billing"]
            # refused at delivery (127.0.0.2 is not allow-listed): failed at once, for good
            internal = by_name["internal"]
            assert internal["status"] == "failed" and internal["attempts"] == 1
            assert "loopback" in internal["lastError"]
            assert other.requests == []  # the run did not fail
    finally:
        await other.stop()


async def test_redirects_are_not_followed(gateways: Gateways, webhook_receiver: WebhookReceiver) -> None:
    target = WebhookReceiver()
    await target.start()
    webhook_receiver.mode, webhook_receiver.redirect_to = "redirect", target.url
    try:
        async with gateways() as gw, gw.http("alice") as alice:
            gen = (await create(alice, webhookUrl=webhook_receiver.url)).json()
            (delivery,) = await deliveries(alice, gen["id"], settled_all)
            assert delivery["status"] == "failed" and delivery["lastStatusCode"] == 302
            assert "redirect" in delivery["lastError"] and target.requests == []
    finally:
        await target.stop()


@pytest.mark.parametrize("mode", ["huge", "slow"])
async def test_oversized_and_slow_answers_are_bounded(gateways: Gateways, webhook_receiver: WebhookReceiver,
                                                      mode: str) -> None:
    webhook_receiver.mode = mode  # a 1 MiB body; or 100 bytes trickling one per 0.2 s (20 s in all)
    async with gateways(webhook_max_response_bytes=1024, webhook_timeout_seconds=1.0, webhook_max_attempts=1) as gw, \
            gw.http("alice") as alice:
        gen = (await create(alice, webhookUrl=webhook_receiver.url)).json()
        (delivery,) = await deliveries(alice, gen["id"], settled_all)
        assert delivery["status"] == "failed", delivery
        expected = "over 1024 bytes" if mode == "huge" else "within 1 s"
        assert expected in delivery["lastError"], delivery


async def test_the_python_client_creates_with_a_webhook_and_reads_its_deliveries(
        gateways: Gateways, webhook_receiver: WebhookReceiver) -> None:
    async with gateways() as gw, GenerationsClient(gw.http_url, gw.token("alice")) as api:
        run = await api.create("demo", {"prompt": "kite"}, webhook_url=webhook_receiver.url,
                               webhook_events=["completed"])
        async with asyncio.timeout(15):
            while not (listed := (await api.webhooks(run.id)).deliveries) or listed[0].status == "pending":
                await asyncio.sleep(0.05)
        assert [(d.event, d.status, d.url) for d in listed] == [
            ("generation.completed", "delivered", webhook_receiver.url)]
        with pytest.raises(ApiProblem) as refused:
            await api.create("demo", {"prompt": "kite"}, webhook_url="http://169.254.169.254/")
        assert refused.value.code == "webhook_url_refused"


async def test_queued_and_cancelled_events_reach_the_endpoint_that_wants_them(
        gateways: Gateways, webhook_receiver: WebhookReceiver) -> None:
    endpoints = [{"name": "ops", "url": webhook_receiver.url, "secret": SECRET, "events": ["queued", "cancelled"]}]
    async with gateways(webhooks=json.dumps(endpoints)) as gw, gw.http("alice") as alice:
        gen = (await alice.post("/v1/generations", json={"toolId": "slow", "inputs": {}})).json()
        assert (await alice.post(f"/v1/generations/{gen['id']}/cancel")).status_code == 200
        requests = await webhook_receiver.wait_for(2)
        events = sorted((verified(r)["type"], verified(r)["data"]["id"]) for r in requests)
        assert events == [("generation.cancelled", gen["id"]), ("generation.queued", gen["id"])]
        listed = await deliveries(alice, gen["id"], lambda d: len(d) == 2 and settled_all(d))
        assert [d["event"] for d in listed] == ["generation.queued", "generation.cancelled"]
