"""Two gateway processes on two Redis shards (``LIVEGATE_REDIS_URL`` lists both): users
are spread over the shards, and each user's tabs on both processes see one stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from livegate.bus.sharded import shard_index
from livegate.testing.process import GatewayProcess
from livegate.testing.redis_server import RedisServer
from tests.scale._support import (
    Tab,
    assert_exact_stream,
    close_all,
    notification,
    publish_ok,
    start_gateways,
    user_name,
)

pytestmark = [pytest.mark.redis]


@pytest.fixture
def sharded_gateways(tmp_path: Path) -> Iterator[tuple[list[RedisServer], list[GatewayProcess]]]:
    with RedisServer() as a, RedisServer() as b:
        gateways = start_gateways(tmp_path, 2, {"LIVEGATE_REDIS_URL": f"{a.url},{b.url}"})
        try:
            yield [a, b], gateways
        finally:
            for gw in gateways:
                gw.terminate()


async def test_users_on_two_shards_each_get_one_stream_on_every_process(
    sharded_gateways: tuple[list[RedisServer], list[GatewayProcess]],
) -> None:
    servers, gws = sharded_gateways
    users: dict[int, str] = {}
    for _ in range(200):
        user = user_name("shard")
        users.setdefault(shard_index(user, 2), user)
        if len(users) == 2:
            break
    assert sorted(users) == [0, 1]
    tabs = {u: [Tab(gw.ws_url, gw.token(u)) for gw in gws] for u in users.values()}
    try:
        for user_tabs in tabs.values():
            await asyncio.gather(*(t.open() for t in user_tabs))
        expected: dict[str, dict[int, str]] = {u: {} for u in users.values()}
        epochs: dict[str, str] = {}
        for round_, gw in enumerate(gws):
            items = [notification(u, f"{u} r{round_} #{i}") for i in range(5) for u in users.values()]
            for item, (epoch, offset) in zip(items, await publish_ok(gw, items), strict=True):
                expected[item["userId"]][offset] = item["event"]["message"]
                assert epochs.setdefault(item["userId"], epoch) == epoch
        for user, user_tabs in tabs.items():
            await asyncio.gather(*(t.wait_events(10) for t in user_tabs))
            for tab in user_tabs:
                assert_exact_stream(tab.frames, expected[user], epochs[user])
        for index, user in users.items():  # each stream's keys on its own shard only
            for server_index, server in enumerate(servers):
                client = aioredis.Redis.from_url(server.url)
                try:
                    assert await client.exists(f"lg:{{{user}}}:s") == (server_index == index)
                finally:
                    await client.aclose()
    finally:
        await close_all([t for user_tabs in tabs.values() for t in user_tabs])
