"""Three gateway processes while their Redis fails: stopped and restarted (with its data,
and empty), pub/sub connections killed, and a pub/sub partition nobody is told about.
Readiness must say so, publishes must fail loudly and never count as delivered, the
gateways must recover by themselves, and every client either gets exactly what it missed
or ``recovered: false``."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import websockets

from livegate.bus.redis import RedisBus
from livegate.errors import BusUnavailable
from livegate.metrics import Metrics
from livegate.protocol import codec, messages
from livegate.protocol.http import NotificationInput
from livegate.service.publisher import Publisher
from livegate.testing.process import GatewayProcess
from livegate.testing.spec_validation import assert_valid_message, schema_errors
from tests.scale._support import (
    STARTUP_TIMEOUT,
    BlackholeProxy,
    ResumingClient,
    Tab,
    assert_exact_stream,
    close_all,
    eventually,
    notification,
    publish,
    publish_recorded,
    readiness,
    user_name,
    wait_until,
)
from tests.scale.conftest import Cluster

pytestmark = [pytest.mark.redis, pytest.mark.xdist_group("scale-redis")]
REDIS_APPENDONLY = True  # the module's Redis keeps its data across restart() unless wiped


async def _all_ready(gateways: list[GatewayProcess], ready: bool) -> bool:
    answers = await asyncio.gather(*(readiness(gw) for gw in gateways))
    return all((status == 200) == ready and body["checks"].get("subscriber") is ready for status, body in answers)


async def _clients_on_each(cluster: Cluster, user: str) -> list[ResumingClient]:
    clients = [ResumingClient(gw.ws_url, gw.token(user)) for gw in cluster.gateways]
    await asyncio.gather(*(c.start() for c in clients))
    return clients


async def _subscriber_names(admin: aioredis.Redis) -> list[str]:
    return [c["name"] for c in await admin.client_list(_type="pubsub")]


def _gateway_subscribers(names: list[str], gateways: list[GatewayProcess]) -> bool:
    pids = {str(gw.pid) for gw in gateways}
    return {n.split(":")[2] for n in names if n.startswith("livegate:") and n.endswith(":sub")} >= pids


async def test_redis_outage_fails_loudly_and_the_gateways_recover_by_themselves(cluster: Cluster) -> None:
    gws, user = cluster.gateways, user_name("outage")
    pids = [gw.pid for gw in gws]
    clients = await _clients_on_each(cluster, user)
    offline = ResumingClient(gws[1].ws_url, gws[1].token(user))
    bus = RedisBus(cluster.redis.url, socket_timeout=1.0, connect_timeout=0.5)
    try:
        await offline.start()
        expected: dict[int, str] = {}
        epoch = await publish_recorded(gws[0], user, "before", 5, expected)
        await asyncio.gather(*(c.wait_events(5) for c in [*clients, offline]))
        position = (epoch, 5)
        await offline.close()
        await bus.start()
        in_process = Publisher(bus, Metrics())

        await asyncio.to_thread(cluster.redis.stop)
        await wait_until(lambda: _all_ready(gws, False), 10.0, "every /readyz 503 with Redis down")
        for gw in gws:
            status, body = await readiness(gw)
            assert status == 503 and body["checks"]["bus"] is False and not schema_errors(body, "Health")

        # Publishes fail loudly: a problem body to the HTTP publisher...
        for i, gw in enumerate(gws):
            response = await publish(gw, [notification(user, f"lost #{i}")])
            assert response.status_code == 503, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
            problem = response.json()
            assert not schema_errors(problem, "Problem"), schema_errors(problem, "Problem")
            assert problem["code"] == "bus_unavailable" and not problem.get("results")
            assert response.headers.get("retry-after") == "1"
        # ... BusUnavailable to the in-process caller, with nothing reported published ...
        with pytest.raises(BusUnavailable) as caught:
            await in_process.publish([(user, NotificationInput(level="info", message="lost in-process"))])
        assert caught.value.published == []
        # ... and a new connection is told, not left hanging (4006: reconnect with backoff).
        async with websockets.connect(gws[2].ws_url, max_queue=None, compression=None) as ws:
            await ws.send(codec.encode_text(messages.Auth(token=gws[2].token(user))))
            error = assert_valid_message(await asyncio.wait_for(ws.recv(), 10))
            assert error["type"] == "error" and error["code"] == "unavailable"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4006

        await asyncio.to_thread(cluster.redis.start)  # the AOF kept the stream
        await wait_until(lambda: _all_ready(gws, True), 15.0, "every /readyz 200 again")
        assert [gw.pid for gw in gws] == pids, "a gateway was restarted"
        # The failed publishes were never applied: the next offset is 6, in the same epoch.
        assert await publish_recorded(gws[2], user, "after", 5, expected) == epoch
        assert sorted(expected) == list(range(1, 11))
        await asyncio.gather(*(c.wait_events(10) for c in clients))
        for client in clients:
            assert not client.invalid, client.invalid[:3]
            assert_exact_stream(client.frames, expected, epoch)  # one connection, all ten
            assert len(client.welcomes) == 1
        # A resume across the outage replays exactly.
        resumed = ResumingClient(gws[0].ws_url, gws[0].token(user), resume=position)
        clients.append(resumed)
        await resumed.start()
        assert resumed.welcomes[0]["recovered"] is True
        await resumed.wait_events(5)
        assert_exact_stream(resumed.frames, {o: m for o, m in expected.items() if o > 5}, epoch)
    finally:
        await bus.stop()
        await close_all([*clients, offline])


def _since_last_reset(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    starts = [i for i, f in enumerate(frames) if f["type"] == "welcome" and f.get("recovered") is False]
    assert starts, "no welcome with recovered: false"
    return frames[starts[-1]:]


async def test_redis_losing_its_data_gives_a_new_epoch_and_recovered_false(cluster: Cluster) -> None:
    gws, user = cluster.gateways, user_name("wiped")
    clients = await _clients_on_each(cluster, user)
    try:
        before: dict[int, str] = {}
        old_epoch = await publish_recorded(gws[0], user, "before", 5, before)
        await asyncio.gather(*(c.wait_events(5) for c in clients))

        await asyncio.to_thread(cluster.redis.restart, keep_data=False)
        await wait_until(lambda: _all_ready(gws, True), 15.0, "every /readyz 200 after the restart")
        # Each process finds the stream under a new epoch and closes its connections (4006);
        # they reconnect, resume from the old position and are told it is gone.
        await eventually(lambda: all(any(w.get("recovered") is False for w in c.welcomes) for c in clients),
                         timeout=15.0, what="every client told recovered: false")
        for client in clients:
            assert 4006 in client.close_codes
            reset = next(w for w in client.welcomes if w.get("recovered") is False)
            assert reset["epoch"] != old_epoch and reset["offset"] == 0
            assert_exact_stream(client.frames[: client.frames.index(reset)], before, old_epoch)

        after: dict[int, str] = {}
        new_epoch = await publish_recorded(gws[1], user, "after", 3, after)
        assert new_epoch != old_epoch and sorted(after) == [1, 2, 3]
        await eventually(lambda: all(len(_since_last_reset(c.frames)) >= 4 for c in clients), timeout=10.0,
                         what="the new epoch's events delivered")
        for client in clients:
            assert not client.invalid, client.invalid[:3]
            assert_exact_stream(_since_last_reset(client.frames), after, new_epoch)
        # A client that was away asks for the old position: recovered: false, never a partial replay.
        away = ResumingClient(gws[2].ws_url, gws[2].token(user), resume=(old_epoch, 3))
        clients.append(away)
        await away.start()
        assert away.welcomes[0]["recovered"] is False and away.welcomes[0]["epoch"] == new_epoch
    finally:
        await close_all(clients)


async def test_killed_pubsub_connections_are_reestablished_and_back_filled(cluster: Cluster) -> None:
    gws, user = cluster.gateways, user_name("killed")
    clients = await _clients_on_each(cluster, user)
    admin = aioredis.Redis.from_url(cluster.redis.url)
    try:
        await eventually(lambda: _subscribers_ready(admin, gws), timeout=10.0, what="named subscribers")
        expected: dict[int, str] = {}
        epoch = await publish_recorded(gws[0], user, "before", 3, expected)
        # Kill every pub/sub connection while events keep coming (through each process).
        killed = 0
        for i in range(30):
            if i == 5:
                killed = await admin.client_kill_filter(_type="pubsub")
            await publish_recorded(gws[i % 3], user, f"during {i}", 2, expected)
        assert killed >= 3
        await eventually(lambda: _subscribers_ready(admin, gws), timeout=10.0, what="subscribers back")
        await asyncio.gather(*(c.wait_events(len(expected)) for c in clients))
        for client in clients:
            assert_exact_stream(client.frames, expected, epoch)  # back-filled, same connection
            assert len(client.welcomes) == 1
        assert await _all_ready(gws, True)
        # ... and every process says so on /metrics (an operator's view of the same recovery).
        async with httpx.AsyncClient(timeout=5) as http_client:
            for gw in gws:
                text = (await http_client.get(f"{gw.http_url}/metrics")).text
                reconnects = [line for line in text.splitlines()
                              if line.startswith('livegate_bus_recoveries_total{kind="reconnects"}')]
                assert reconnects and float(reconnects[0].split()[-1]) >= 1, text[-2000:]
    finally:
        await admin.aclose()
        await close_all(clients)


async def _subscribers_ready(admin: aioredis.Redis, gateways: list[GatewayProcess]) -> bool:
    return _gateway_subscribers(await _subscriber_names(admin), gateways)


@pytest.fixture
def proxied_gateway(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[GatewayProcess, BlackholeProxy]]:
    """A fourth gateway that reaches the cluster's Redis through a proxy that can partition
    its pub/sub connection without closing anything."""
    proxy = BlackholeProxy(cluster.net, cluster.redis.port)
    gw = GatewayProcess(tmp_path / "proxied", env={"LIVEGATE_REDIS_URL": proxy.url}, startup_timeout=STARTUP_TIMEOUT)
    try:
        yield gw.start(), proxy
    finally:
        print(gw.log_tail(40))
        gw.kill()
        proxy.close()


async def test_a_silently_dead_subscription_fails_readiness_and_is_reestablished(
    cluster: Cluster, proxied_gateway: tuple[GatewayProcess, BlackholeProxy]
) -> None:
    gw, proxy = proxied_gateway
    user = user_name("silent")
    tab = Tab(gw.ws_url, gw.token(user))
    try:
        await tab.open()
        expected: dict[int, str] = {}
        epoch = await publish_recorded(cluster.gateways[0], user, "before", 1, expected)
        await tab.wait_events(1)

        # the bus's pub/sub socket and the SSE relay's (livegate.bus.redis.relay) stay open; nothing passes
        assert proxy.blackhole_subscribers() == 2
        await publish_recorded(cluster.gateways[1], user, "unheard", 3, expected)
        # The probe notices within probe_interval + probe_timeout (2 s + 3 s by default; the
        # bound leaves room for a loaded machine).
        await wait_until(lambda: _not_ready(gw), 12.0, "/readyz 503 for the deaf process")
        assert await _all_ready(cluster.gateways, True)  # the others are fine
        await publish_recorded(cluster.gateways[2], user, "still unheard", 2, expected)
        status, body = await readiness(gw)
        assert status == 503 and body["checks"]["subscriber"] is False and body["checks"]["bus"] is True

        proxy.heal()
        await wait_until(lambda: _all_ready([gw], True), 15.0, "/readyz 200 once re-established")
        await tab.wait_events(len(expected))
        assert_exact_stream(tab.frames, expected, epoch)  # back-filled on the same connection
    finally:
        await tab.close()


async def _not_ready(gw: GatewayProcess) -> bool:
    status, body = await readiness(gw)
    return status == 503 and body["checks"]["subscriber"] is False


async def test_a_run_ending_while_redis_is_down_is_announced_once_it_is_back(cluster: Cluster) -> None:
    """The record says `completed` while Redis is down (same data, same epoch when it is back:
    no `recovered: false` would tell the client): the service keeps the update and publishes it
    once the bus is back, exactly once, after the run's earlier updates."""
    gws, user = cluster.gateways, user_name("ends-offline")
    watcher = ResumingClient(gws[1].ws_url, gws[1].token(user))
    headers = {"Authorization": f"Bearer {gws[0].token(user)}"}
    try:
        await watcher.start()
        async with httpx.AsyncClient(base_url=gws[0].http_url, headers=headers, timeout=10) as client:
            created = await client.post("/v1/generations", json={"toolId": "demo", "inputs": {
                "prompt": "outage", "durationSeconds": 2.0, "steps": 2, "outputs": ["text"]}})
            assert created.status_code == 202, created.text
            gen_id = created.json()["id"]

            def updates() -> list[str]:
                return [e["status"] for e in watcher.events
                        if e["type"] == "generationUpdate" and e["generationId"] == gen_id]

            await eventually(lambda: "running" in updates(), timeout=15.0, what="the run started")
            await asyncio.to_thread(cluster.redis.stop)

            async def recorded() -> bool:
                return (await client.get(f"/v1/generations/{gen_id}")).json()["status"] == "completed"

            await wait_until(recorded, 20.0, "the run recorded as completed while Redis is down")
            assert "completed" not in updates()
            await asyncio.to_thread(cluster.redis.start)
            await eventually(lambda: "completed" in updates(), timeout=20.0, what="the end announced")
        assert updates() == ["queued", "running", "completed"], updates()
        assert len(watcher.welcomes) == 1 or all(w.get("recovered") is not False for w in watcher.welcomes)
        assert not watcher.invalid, watcher.invalid[:3]
    finally:
        if not cluster.redis.running():
            await asyncio.to_thread(cluster.redis.start)
        await close_all([watcher])
