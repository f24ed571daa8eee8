"""ShardedBus beyond the shared contract (which it passes as ``redis-sharded``): streams
live on exactly one shard, batches keep item order across shards, one shard down fails
loudly with the right prefix, and the reset callback reaches every shard."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from livegate.bus import create_bus
from livegate.bus.base import PublishItem
from livegate.bus.redis import RedisBus
from livegate.bus.sharded import ShardedBus
from livegate.config import Config
from livegate.errors import BusUnavailable
from livegate.testing.redis_server import RedisServer
from tests.bus._support import Recorder, eventually, stream_name

FAST = {"probe_interval": 0.1, "probe_timeout": 0.5, "reconnect_min_delay": 0.02, "reconnect_max_delay": 0.2,
        "poll_interval": 0.05, "socket_timeout": 1.0, "connect_timeout": 0.5, "settle_seconds": 0.5}


def body(n: int) -> bytes:
    return b'{"type":"progress","n":%d}' % n


@pytest.fixture
def two_servers() -> Iterator[list[RedisServer]]:
    with RedisServer() as a, RedisServer() as b:
        yield [a, b]


@pytest.fixture
async def sharded(two_servers: list[RedisServer]) -> AsyncIterator[ShardedBus]:
    bus = ShardedBus([RedisBus(s.url, **FAST) for s in two_servers])  # type: ignore[arg-type]
    await bus.start()
    yield bus
    await bus.stop()


def split_streams(bus: ShardedBus, count: int = 40) -> tuple[list[str], list[str]]:
    streams = [stream_name() for _ in range(count)]
    first = [s for s in streams if bus.shard_index(s) == 0]
    second = [s for s in streams if bus.shard_index(s) == 1]
    assert first and second, "40 random names all hashed to one shard"
    return first, second


async def test_each_stream_lives_on_one_shard_and_batches_keep_item_order(
    sharded: ShardedBus, two_servers: list[RedisServer]
) -> None:
    first, second = split_streams(sharded)
    a, b = first[0], second[0]
    positions = await sharded.publish([PublishItem(s, body(i)) for i, s in enumerate([a, b, a, b, b, a])])
    assert [p.offset for p in positions] == [1, 1, 2, 2, 3, 3]
    assert positions[0].epoch != positions[1].epoch  # two streams, each its own epoch
    for server, mine, other in ((two_servers[0], a, b), (two_servers[1], b, a)):
        client = aioredis.Redis.from_url(server.url)
        try:
            assert await client.exists(f"lg:{{{mine}}}:s", f"lg:{{{mine}}}:m") == 2
            assert await client.exists(f"lg:{{{other}}}:s", f"lg:{{{other}}}:m") == 0
        finally:
            await client.aclose()
    got = Recorder()
    await sharded.subscribe(b, got)
    await sharded.publish([PublishItem(b, body(9))])
    await got.wait_for(4)
    assert (await sharded.read(b, 2)).top == 4


async def test_one_shard_down_fails_loudly_and_the_other_keeps_serving(
    sharded: ShardedBus, two_servers: list[RedisServer]
) -> None:
    first, second = split_streams(sharded)
    a, b = first[0], second[0]
    await sharded.publish([PublishItem(a, body(0)), PublishItem(b, body(0))])
    two_servers[1].stop()
    await eventually(lambda: _health_is(sharded, {"bus": False, "subscriber": False}), what="unready")
    with pytest.raises(BusUnavailable) as caught:
        await sharded.publish([PublishItem(a, body(1)), PublishItem(b, body(1)), PublishItem(a, body(2))])
    assert [p.offset for p in caught.value.published] == [2]  # the prefix before b's item
    assert (await sharded.read(a, 0)).top == 3  # a's shard applied its items; only 1 reported
    with pytest.raises(BusUnavailable):
        await sharded.read(b, 0)
    two_servers[1].start()
    await eventually(lambda: _health_is(sharded, {"bus": True, "subscriber": True}), timeout=10.0,
                     what="ready again")
    assert [p.offset for p in await sharded.publish([PublishItem(b, body(2))])] == [1]  # memory-only: new epoch


async def test_the_reset_callback_reaches_every_shard(sharded: ShardedBus, two_servers: list[RedisServer]) -> None:
    resets: list[str] = []
    sharded.on_stream_reset = resets.append  # set once, on the sharded bus (as the gateway does)
    first, second = split_streams(sharded)
    for index, stream in ((0, first[0]), (1, second[0])):
        await sharded.subscribe(stream, Recorder())
        await sharded.publish([PublishItem(stream, body(0)), PublishItem(stream, body(1))])
        client = aioredis.Redis.from_url(two_servers[index].url)
        try:
            await client.delete(f"lg:{{{stream}}}:m", f"lg:{{{stream}}}:s")  # history lost behind our back
        finally:
            await client.aclose()
        await sharded.publish([PublishItem(stream, body(2))])
        await eventually(lambda s=stream: s in resets, what=f"reset of {stream} on shard {index}")
    assert resets == [first[0], second[0]]


async def _health_is(bus: ShardedBus, expected: dict[str, bool]) -> bool:
    return await bus.health() == expected


def test_comma_separated_urls_select_the_sharded_bus() -> None:
    one = create_bus(Config(redis_url="redis://127.0.0.1:1/0"))
    assert isinstance(one, RedisBus)
    many = create_bus(Config(redis_url="redis://127.0.0.1:1/0, redis://127.0.0.1:2/0"))
    assert isinstance(many, ShardedBus) and [s.url for s in many.shards] == [  # type: ignore[attr-defined]
        "redis://127.0.0.1:1/0", "redis://127.0.0.1:2/0"]
