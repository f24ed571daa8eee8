"""Two ``livegate serve`` processes on Redis Sentinel while the primary dies and Sentinel
promotes a replica that missed the last writes (issue 14, docs/scaling.md "Rewinds"): the
gateways follow Sentinel by themselves, the stream continues under a new epoch, and every
client that saw the lost events is told ``recovered: false``; none ever gets an old offset
reused for a new event."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from livegate.testing.process import GatewayProcess
from tests.bus._replica import Pair
from tests.scale._support import (
    ResumingClient,
    assert_exact_stream,
    close_all,
    eventually,
    publish_recorded,
    readiness,
    start_gateways,
    user_name,
)

pytestmark = pytest.mark.redis


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    made = Pair(sentinel=True)
    try:
        yield await made.start()
    finally:
        await made.close()


async def _all_ready(gateways: list[GatewayProcess]) -> bool:
    return all(status == 200 for status, _body in await asyncio.gather(*(readiness(gw) for gw in gateways)))


async def test_sentinel_promoting_a_lagging_replica_gives_a_new_epoch_never_reused_offsets(
    pair: Pair, tmp_path: Path
) -> None:
    assert pair.sentinel is not None
    gateways = await asyncio.to_thread(start_gateways, tmp_path, 2, {"LIVEGATE_REDIS_URL": pair.sentinel.url})
    user = user_name("failover")
    clients = [ResumingClient(gw.ws_url, gw.token(user)) for gw in gateways]
    try:
        await asyncio.gather(*(c.start() for c in clients))
        before: dict[int, str] = {}
        old_epoch = await publish_recorded(gateways[0], user, "kept", 3, before)
        await pair.caught_up()
        await pair.cut_replication()
        await publish_recorded(gateways[1], user, "lost", 2, before)
        await publish_recorded(gateways[0], user, "lost", 2, before)
        await asyncio.gather(*(c.wait_events(7) for c in clients))
        for client in clients:
            assert_exact_stream(client.frames, before, old_epoch)

        await pair.fail_over()
        await eventually(lambda: _all_ready(gateways), timeout=30.0, what="both gateways ready on the new primary")
        # Each gateway finds the stream void (its witness shows the promoted data lost writes)
        # and closes its connections; they resume from offset 7 and are told it is gone.
        await eventually(lambda: all(any(w.get("recovered") is False for w in c.welcomes) for c in clients),
                         timeout=20.0, what="every client told recovered: false")
        after: dict[int, str] = {}
        new_epoch = await publish_recorded(gateways[0], user, "after", 3, after)
        assert new_epoch != old_epoch and sorted(after) == [1, 2, 3]
        await eventually(lambda: all(len(c.events) >= 10 for c in clients), timeout=15.0,
                         what="the new epoch's events delivered")
        for client in clients:
            assert not client.invalid, client.invalid[:3]
            reset = next(i for i, f in enumerate(client.frames) if f["type"] == "welcome" and f.get("recovered") is False)
            assert client.frames[reset]["epoch"] == new_epoch
            assert_exact_stream(client.frames[:reset], before, old_epoch)
            assert_exact_stream(client.frames[reset:], after, new_epoch)
        away = ResumingClient(gateways[1].ws_url, gateways[1].token(user), resume=(old_epoch, 7))
        clients.append(away)
        await away.start()
        assert away.welcomes[0]["recovered"] is False and away.welcomes[0]["epoch"] == new_epoch
    finally:
        await close_all(clients)
        for gw in gateways:
            await asyncio.to_thread(gw.kill)
