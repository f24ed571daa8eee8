"""A webhook delivery outlives the process that scheduled it (PostgreSQL): the gateway that
recorded the run and made the first, failing attempts is SIGKILLed while the receiver still
fails; another process, started afterwards on the same database, delivers the same event
with the same ``webhook-id`` once the receiver answers 2xx."""

from __future__ import annotations

import asyncio
import base64
import secrets
from pathlib import Path

import httpx
from standardwebhooks import Webhook

from livegate.testing.postgres_server import PostgresServer
from livegate.testing.process import GatewayProcess
from livegate.testing.webhook_receiver import WebhookReceiver
from tests.scale._support import STARTUP_TIMEOUT

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
TOOLS = """
[[tools]]
id = "demo"
kind = "demo"
title = "Demo"
[tools.settings]
duration_seconds = 0.1
steps = 2
"""


async def test_a_delivery_survives_the_sigkill_of_the_process_that_scheduled_it(
        tmp_path: Path, postgres_server: PostgresServer) -> None:
    receiver = WebhookReceiver()
    await receiver.start()
    receiver.mode = "fail"
    tools = tmp_path / "tools.toml"
    tools.write_text(TOOLS)
    env = {
        "LIVEGATE_DATABASE_URL": postgres_server.create_database("wh_kill_" + secrets.token_hex(3)),
        "LIVEGATE_TOOLS_FILE": str(tools), "LIVEGATE_WEBHOOK_SECRET": SECRET,
        "LIVEGATE_WEBHOOK_PER_GENERATION": "1", "LIVEGATE_WEBHOOK_ALLOW": "127.0.0.1/32",
        # retries every <= 0.5 s for as long as the test needs; a lease of 2 * 1 + 5 s
        "LIVEGATE_WEBHOOK_BACKOFF_BASE": "0.2", "LIVEGATE_WEBHOOK_BACKOFF_FACTOR": "2",
        "LIVEGATE_WEBHOOK_BACKOFF_MAX": "0.5", "LIVEGATE_WEBHOOK_MAX_ATTEMPTS": "1000",
        "LIVEGATE_WEBHOOK_TIMEOUT": "1", "LIVEGATE_WEBHOOK_POLL_SECONDS": "0.2",
    }
    first = GatewayProcess(tmp_path / "a", env=env, startup_timeout=STARTUP_TIMEOUT)
    second = GatewayProcess(tmp_path / "b", env=env, startup_timeout=STARTUP_TIMEOUT)
    try:
        await asyncio.to_thread(first.start)
        async with httpx.AsyncClient(base_url=first.http_url, timeout=10,
                                     headers={"Authorization": f"Bearer {first.token('alice')}"}) as client:
            created = await client.post("/v1/generations", json={
                "toolId": "demo", "inputs": {"prompt": "kite"}, "webhookUrl": receiver.url})
            assert created.status_code == 202, created.text
            gen_id = created.json()["id"]
        failed = await receiver.wait_for(2, timeout=30)  # the scheduling process keeps trying
        await asyncio.to_thread(first.kill)  # SIGKILL: no handover, maybe a lease left behind
        seen = len(receiver.requests)
        receiver.mode = "ok"
        await asyncio.to_thread(second.start)
        requests = await receiver.wait_for(seen + 1, timeout=60)  # delivered by the other process
        delivered = requests[-1]
        assert delivered.headers["webhook-id"] == failed[0].headers["webhook-id"]
        event = Webhook(SECRET).verify(delivered.body, delivered.headers)
        assert event["type"] == "generation.completed" and event["data"]["id"] == gen_id
        async with httpx.AsyncClient(base_url=second.http_url, timeout=10,
                                     headers={"Authorization": f"Bearer {second.token('alice')}"}) as client:
            async with asyncio.timeout(30):
                while True:
                    (delivery,) = (await client.get(f"/v1/generations/{gen_id}/webhooks")).json()["deliveries"]
                    if delivery["status"] != "pending":
                        break
                    await asyncio.sleep(0.1)
        # (an attempt the killed process made but had no time to record is not counted: the
        # receiver saw it, and deduplicates it by its webhook-id)
        assert delivery["status"] == "delivered" and delivery["lastStatusCode"] == 204, delivery
        assert delivery["id"] == delivered.headers["webhook-id"] and delivery["attempts"] >= 2
    finally:
        for gw in (first, second):
            if gw.running():
                await asyncio.to_thread(gw.kill)
        await receiver.stop()
