"""The outbox of run ends across real processes (issue 14): two ``livegate serve`` on one
Redis (kept on disk: a restart keeps its data and its epoch, so no ``recovered: false``
would tell a client anything) and one PostgreSQL. Gateway A runs a demo run; Redis stops;
the run ends on A (recorded, not announceable); A is SIGKILLed with the update in its
memory; Redis comes back; gateway B announces the end to the user's WebSocket client."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from livegate.testing.postgres_server import PostgresServer
from livegate.testing.process import GatewayProcess
from livegate.testing.redis_server import RedisServer
from tests.scale._support import (
    ResumingClient,
    close_all,
    eventually,
    start_gateways,
    user_name,
    wait_until,
)

pytestmark = pytest.mark.redis
GRACE_SECONDS = 1.0  # LIVEGATE_ANNOUNCE_GRACE_SECONDS of the gateways


@dataclass
class Pair:
    redis: RedisServer
    runner: GatewayProcess  # A: runs the generations
    other: GatewayProcess  # B: runs none (LIVEGATE_RUN_WORKER=0), sweeps like every process


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    with RedisServer(appendonly=True) as redis, PostgresServer() as postgres:
        env = {"LIVEGATE_REDIS_URL": redis.url, "LIVEGATE_DATABASE_URL": postgres.create_database("outbox"),
               "LIVEGATE_ANNOUNCE_GRACE_SECONDS": str(GRACE_SECONDS)}
        [runner] = start_gateways(tmp_path / "a", 1, env)
        try:
            [other] = start_gateways(tmp_path / "b", 1, {**env, "LIVEGATE_RUN_WORKER": "0"})
        except BaseException:
            runner.kill()
            raise
        try:
            yield Pair(redis, runner, other)
        finally:
            for gw in (runner, other):
                print(f"--- gateway :{gw.port} (pid {gw.pid}) ---\n{gw.log_tail(30)}")
                gw.kill()


async def test_a_run_end_held_by_a_gateway_killed_while_redis_was_down_is_announced_by_another(pair: Pair) -> None:
    user = user_name("outbox")
    watcher = ResumingClient(pair.other.ws_url, pair.other.token(user))
    try:
        await watcher.start()
        async with httpx.AsyncClient(base_url=pair.other.http_url, timeout=10,
                                     headers={"Authorization": f"Bearer {pair.other.token(user)}"}) as client:
            created = await client.post("/v1/generations", json={"toolId": "demo", "inputs": {
                "prompt": "outbox", "durationSeconds": 2.0, "steps": 2, "outputs": ["text"]}})
            assert created.status_code == 202, created.text
            gen_id = created.json()["id"]

            def updates() -> list[str]:
                return [e["status"] for e in watcher.events
                        if e["type"] == "generationUpdate" and e["generationId"] == gen_id]

            await eventually(lambda: "running" in updates(), timeout=20.0, what="the run started on A")
            await asyncio.to_thread(pair.redis.stop)

            async def recorded() -> bool:
                return (await client.get(f"/v1/generations/{gen_id}")).json()["status"] == "completed"

            await wait_until(recorded, 20.0, "the run recorded as completed while Redis is down")
            assert "completed" not in updates()
            pair.runner.kill()  # SIGKILL: the update A kept for Redis dies with it
            await asyncio.to_thread(pair.redis.start)
            # B's sweep: after the grace (and, had A died holding the end's lease mid-publish,
            # after that lease: Outbox.lease_seconds).
            await eventually(lambda: "completed" in updates(), timeout=40.0, what="the end announced by B")
            record = (await client.get(f"/v1/generations/{gen_id}")).json()
        assert updates() == ["queued", "running", "completed"], updates()
        [end] = [e for e in watcher.events if e["type"] == "generationUpdate" and e["status"] == "completed"]
        assert [o["id"] for o in end["outputs"]] == [o["id"] for o in record["outputs"]]  # from the record
        assert all(w.get("recovered") is not False for w in watcher.welcomes)  # same epoch: nothing else told it
        assert not watcher.invalid, watcher.invalid[:3]
    finally:
        if not pair.redis.running():
            await asyncio.to_thread(pair.redis.start)
        await close_all([watcher])
