"""RedisBus beyond the shared contract: outages, lost and silent subscriptions, restarts,
the key layout, and clean shutdown. Each test that breaks Redis starts its own server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from livegate.bus.base import PublishItem
from livegate.bus.redis import RedisBus
from livegate.errors import BusUnavailable
from livegate.testing.redis_server import RedisServer, RedisServerNotFound
from tests.bus._proxy import TcpProxy
from tests.bus._support import Recorder, assert_contiguous, eventually, stream_name

FAST = {"probe_interval": 0.1, "probe_timeout": 0.5, "reconnect_min_delay": 0.02, "reconnect_max_delay": 0.2,
        "poll_interval": 0.05, "socket_timeout": 1.0, "connect_timeout": 0.5, "settle_seconds": 0.5}


def body(n: int) -> bytes:
    return b'{"type":"progress","n":%d,"pad":"%s"}' % (n, b"x" * 40)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A memory-only server this test may stop, freeze or restart."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def own_redis_aof() -> Iterator[RedisServer]:
    """A server with an append-only file: a restart keeps the data."""
    with RedisServer(appendonly=True) as server:
        yield server


class Buses:
    def __init__(self) -> None:
        self.buses: list[RedisBus] = []

    async def make(self, url: str, **settings: Any) -> RedisBus:
        bus = RedisBus(url, **{**FAST, **settings})
        self.buses.append(bus)
        await bus.start()
        return bus


@pytest.fixture
async def buses() -> AsyncIterator[Buses]:
    made = Buses()
    yield made
    for bus in made.buses:
        await bus.stop()


@pytest.fixture
async def admin(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def publish(bus: RedisBus, stream: str, start: int, count: int) -> list[int]:
    positions = await bus.publish([PublishItem(stream, body(start + i)) for i in range(count)])
    return [p.offset for p in positions]


async def healthy(bus: RedisBus) -> bool:
    return all((await bus.health()).values())


# -- the helper itself -------------------------------------------------------------------------


def test_a_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import livegate.testing.redis_server as module

    monkeypatch.setattr(module.shutil, "which", lambda _name: None)
    monkeypatch.setattr(module, "_FALLBACK_DIR", "/nonexistent")
    with pytest.raises(RedisServerNotFound, match="apt-get install redis-server"):
        RedisServer()


# -- layout ------------------------------------------------------------------------------------


async def test_one_users_keys_share_a_cluster_slot_and_expire(
    redis_server: RedisServer, buses: Buses, admin: aioredis.Redis
) -> None:
    bus = await buses.make(redis_server.url, max_age_seconds=30.0, idle_ttl_seconds=3600.0)
    stream = stream_name()
    await publish(bus, stream, 0, 3)
    meta, log = f"lg:{{{stream}}}:m", f"lg:{{{stream}}}:s"
    assert key_slot(meta.encode()) == key_slot(log.encode()) == key_slot(f"lg:{{{stream}}}:c".encode())
    assert await admin.hget(meta, "top") == b"3"
    assert 3_500_000 < await admin.pttl(meta) <= 3_600_000
    assert 80_000 < await admin.pttl(log) <= 90_000  # max_age + 60 s margin
    entries = await admin.xrange(log)
    assert [int(fields[b"o"]) for _id, fields in entries] == [1, 2, 3]
    assert all(int(_id.split(b"-")[0]) > 1_600_000_000_000 for _id, _ in entries)  # ids are Redis ms time


async def test_history_memory_per_stream_is_bounded(
    redis_server: RedisServer, buses: Buses, admin: aioredis.Redis
) -> None:
    bus = await buses.make(redis_server.url, max_events=1000)
    stream = stream_name()
    payload = json.dumps({"type": "token", "generation_id": "g-0123456789", "text": "y" * 240}).encode()
    assert 280 <= len(payload) <= 320
    for _ in range(15):
        await bus.publish([PublishItem(stream, payload) for _ in range(100)])
    log = f"lg:{{{stream}}}:s"
    assert await admin.xlen(log) == 1000
    usage = await admin.memory_usage(log, samples=0) + await admin.memory_usage(f"lg:{{{stream}}}:m", samples=0)
    print(f"MEMORY USAGE of one stream with 1000 x {len(payload)}-byte events: {usage} bytes")
    assert usage < 1000 * (len(payload) + 200)


# -- scripts -----------------------------------------------------------------------------------


async def test_publish_and_read_survive_a_script_cache_flush(
    redis_server: RedisServer, buses: Buses, admin: aioredis.Redis
) -> None:
    bus = await buses.make(redis_server.url)
    a, b = stream_name("a"), stream_name("b")
    assert await publish(bus, a, 0, 1) == [1]
    await admin.script_flush()
    positions = await bus.publish([PublishItem(a, body(1)), PublishItem(b, body(0)), PublishItem(a, body(2))])
    assert [p.offset for p in positions] == [2, 1, 3]
    await admin.script_flush()
    assert (await bus.read(a, 1)).top == 3


# -- gaps and back-fill ------------------------------------------------------------------------


async def test_a_gap_in_pubsub_is_filled_from_history_in_order(
    redis_server: RedisServer, buses: Buses, admin: aioredis.Redis
) -> None:
    """Events that reached the stream but not the channel (as if pub/sub dropped them)
    are read from history before the next live one."""
    bus = await buses.make(redis_server.url)
    stream = stream_name()
    got = Recorder()
    await bus.subscribe(stream, got)
    await publish(bus, stream, 0, 2)
    await got.wait_for(2)
    meta, log = f"lg:{{{stream}}}:m", f"lg:{{{stream}}}:s"
    for offset in (3, 4):  # appended behind the bus's back: no PUBLISH
        await admin.hincrby(meta, "top", 1)
        await admin.xadd(log, {"o": offset, "d": body(offset), "k": "-", "t": f"{time.time():.6f}"})
    await publish(bus, stream, 4, 1)  # offset 5 arrives live, 3 and 4 come from history first
    await got.wait_for(5)
    assert_contiguous(got.offsets, 1, 5)
    assert bus.stats["backfilled"] >= 2  # 3, 4 (and 5 when the fill read saw it first)


async def test_duplicates_from_pubsub_are_dropped(
    redis_server: RedisServer, buses: Buses, admin: aioredis.Redis
) -> None:
    bus = await buses.make(redis_server.url)
    stream = stream_name()
    got = Recorder()
    await bus.subscribe(stream, got)
    await publish(bus, stream, 0, 2)
    await got.wait_for(2)
    epoch = (await bus.read(stream, None)).epoch
    await admin.publish(f"lg:{{{stream}}}:c", f"{epoch} 2 {time.time():.6f} 1\n-".encode() + body(2))
    await publish(bus, stream, 2, 1)
    await got.wait_for(3)
    assert got.offsets == [1, 2, 3]
    assert bus.stats["duplicates"] == 1


async def test_a_killed_subscriber_reconnects_and_back_fills(
    redis_server: RedisServer, buses: Buses, admin: aioredis.Redis
) -> None:
    bus = await buses.make(redis_server.url)
    streams = [stream_name() for _ in range(3)]
    recorders = [Recorder() for _ in streams]
    for stream, recorder in zip(streams, recorders, strict=True):
        await bus.subscribe(stream, recorder)
        await publish(bus, stream, 0, 1)
    reconnects = bus.stats["reconnects"]
    assert await admin.client_kill_filter(_type="pubsub") >= 1
    for n in range(1, 21):  # some of these land while nobody is subscribed
        await bus.publish([PublishItem(stream, body(n)) for stream in streams])
    for recorder in recorders:
        await recorder.wait_for(21)
        assert_contiguous(recorder.offsets, 1, 21)
    assert bus.stats["reconnects"] > reconnects
    assert bus.counters()["reconnects"] == bus.stats["reconnects"]
    await eventually(lambda: healthy(bus), what="healthy again")


async def test_a_stalled_subscription_is_caught_by_the_probe(redis_server: RedisServer, buses: Buses) -> None:
    proxy = await TcpProxy("127.0.0.1", redis_server.port).start()
    try:
        bus = await buses.make(proxy.url)
        stream = stream_name()
        got = Recorder()
        await bus.subscribe(stream, got)
        await publish(bus, stream, 0, 1)
        await got.wait_for(1)
        assert proxy.stall_subscribers() == 1
        started = time.monotonic()
        await publish(bus, stream, 1, 5)  # swallowed by the stalled connection
        await got.wait_for(6, timeout=5.0)
        assert_contiguous(got.offsets, 1, 6)
        assert time.monotonic() - started < 3.0  # probe_interval 0.1 + probe_timeout 0.5 + reconnect
        assert bus.stats["stale"] >= 1 and bus.stats["backfilled"] >= 5
        await eventually(lambda: healthy(bus), what="healthy again")
    finally:
        await proxy.stop()


async def test_a_forgotten_subscription_is_caught_by_the_probe(redis_server: RedisServer, buses: Buses) -> None:
    """Redis dropped the subscriber but the socket looks open: PUBLISH reaches 0 clients."""
    proxy = await TcpProxy("127.0.0.1", redis_server.port).start()
    try:
        bus = await buses.make(proxy.url, probe_timeout=30.0)  # only the receiver count can tell
        stream = stream_name()
        got = Recorder()
        await bus.subscribe(stream, got)
        assert proxy.forget_subscribers() == 1
        await publish(bus, stream, 0, 3)
        await got.wait_for(3, timeout=5.0)
        assert_contiguous(got.offsets, 1, 3)
        assert bus.stats["stale"] >= 1
    finally:
        await proxy.stop()


async def test_a_partitioned_subscriber_is_unready_and_retried_until_it_heals(
    redis_server: RedisServer, buses: Buses
) -> None:
    """The pub/sub path is blackholed, the command path is not: the stalled connection is
    replaced, the new ones get no SUBSCRIBE confirmation and are replaced in turn, health
    says so all along; once the path heals the bus subscribes and back-fills."""
    proxy = await TcpProxy("127.0.0.1", redis_server.port).start()
    try:
        bus = await buses.make(proxy.url)
        stream = stream_name()
        got = Recorder()
        await bus.subscribe(stream, got)
        await publish(bus, stream, 0, 1)
        await got.wait_for(1)
        assert proxy.blackhole_subscribers() == 1
        await publish(bus, stream, 1, 3)
        await eventually(lambda: _health_is(bus, {"bus": True, "subscriber": False}), what="unready")
        stale = bus.stats["stale"]
        await eventually(lambda: bus.stats["stale"] >= stale + 2, what="unconfirmed connections replaced")
        assert await bus.health() == {"bus": True, "subscriber": False}
        assert got.offsets == [1]
        proxy.blackhole_subscribers(False)
        await eventually(lambda: healthy(bus), timeout=5.0, what="healthy after the partition")
        await got.wait_for(4)
        assert_contiguous(got.offsets, 1, 4)
    finally:
        await proxy.stop()


async def test_subscribe_and_unsubscribe_churn_keeps_a_steady_listener_whole(
    redis_server: RedisServer, buses: Buses, admin: aioredis.Redis
) -> None:
    bus = await buses.make(redis_server.url)
    stream = stream_name()
    steady = Recorder()
    steady_subscription = await bus.subscribe(stream, steady)
    total = 200

    async def churn(seed: int) -> None:
        for _ in range(15):
            subscription = await bus.subscribe(stream, Recorder())
            await asyncio.sleep(0.001 * (seed % 3))
            await subscription.close()

    async def churn_other_stream() -> None:
        other = stream_name("other")
        for _ in range(15):
            subscription = await bus.subscribe(other, Recorder())
            await subscription.close()

    async def publisher() -> None:
        for n in range(total):
            await publish(bus, stream, n, 1)

    await asyncio.gather(publisher(), churn_other_stream(), *(churn(i) for i in range(5)))
    await steady.wait_for(total)
    assert_contiguous(steady.offsets, 1, total)
    assert (await admin.pubsub_numsub(f"lg:{{{stream}}}:c"))[0][1] == 1
    await steady_subscription.close()
    await eventually(lambda: _numsub_is(admin, f"lg:{{{stream}}}:c", 0), what="unsubscribed")


async def _numsub_is(admin: aioredis.Redis, channel: str, count: int) -> bool:
    return bool((await admin.pubsub_numsub(channel))[0][1] == count)


async def test_two_processes_share_streams(redis_server: RedisServer, buses: Buses) -> None:
    one, two = await buses.make(redis_server.url), await buses.make(redis_server.url)
    stream = stream_name()
    got_one, got_two = Recorder(), Recorder()
    await one.subscribe(stream, got_one)
    await two.subscribe(stream, got_two)
    await publish(one, stream, 0, 3)
    await publish(two, stream, 3, 3)
    await got_one.wait_for(6)
    await got_two.wait_for(6)
    assert got_one.events == got_two.events
    assert (await one.read(stream, 0)).events == (await two.read(stream, 0)).events == got_one.events


# -- outages -----------------------------------------------------------------------------------


async def test_outage_fails_fast_and_recovers_without_a_new_bus(own_redis_aof: RedisServer, buses: Buses) -> None:
    server = own_redis_aof
    bus = await buses.make(server.url)
    resets: list[str] = []
    bus.on_stream_reset = resets.append
    stream = stream_name()
    got = Recorder()
    await bus.subscribe(stream, got)
    await publish(bus, stream, 0, 3)
    await got.wait_for(3)

    server.stop()
    await eventually(lambda: _health_is(bus, {"bus": False, "subscriber": False}), what="unhealthy")
    for call in (lambda: publish(bus, stream, 3, 2), lambda: bus.read(stream, 0),
                 lambda: bus.subscribe(stream_name(), Recorder())):
        started = time.monotonic()
        with pytest.raises(BusUnavailable) as caught:
            await call()
        assert time.monotonic() - started < 3.0
        assert caught.value.published == []

    server.start()
    await eventually(lambda: healthy(bus), timeout=10.0, what="healthy after restart")
    assert await publish(bus, stream, 3, 3) == [4, 5, 6]  # the data survived: same epoch, next offsets
    await got.wait_for(6)
    assert_contiguous(got.offsets, 1, 6)
    assert resets == []


async def test_a_hung_server_times_out_instead_of_hanging(own_redis: RedisServer, buses: Buses) -> None:
    bus = await buses.make(own_redis.url)
    stream = stream_name()
    got = Recorder()
    await bus.subscribe(stream, got)
    own_redis.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(BusUnavailable):
            await publish(bus, stream, 0, 1)
        assert time.monotonic() - started < 2.5
        assert (await bus.health())["bus"] is False
    finally:
        own_redis.thaw()
    await eventually(lambda: healthy(bus), timeout=10.0, what="healthy after thaw")
    # The timed-out publish may still have been applied (its reply was lost): never
    # reported, but delivered in order like any other event.
    offsets = await publish(bus, stream, 1, 2)
    await got.wait_for(offsets[-1])
    assert_contiguous(got.offsets, 1, offsets[-1])


async def test_redis_losing_its_data_resets_live_streams(own_redis: RedisServer, buses: Buses) -> None:
    bus = await buses.make(own_redis.url)
    resets: list[str] = []
    bus.on_stream_reset = resets.append
    stream, quiet = stream_name(), stream_name("quiet")
    got = Recorder()
    await bus.subscribe(stream, got)
    await bus.subscribe(quiet, Recorder())
    old = await bus.publish([PublishItem(stream, body(i)) for i in range(3)])
    await got.wait_for(3)

    own_redis.restart(keep_data=False)
    # The reader reconnects, back-fills, and finds both streams under new epochs.
    await eventually(lambda: sorted(resets) == sorted([stream, quiet]), timeout=10.0, what="streams reset")
    read = await bus.read(stream, 0)
    assert read.epoch != old[0].epoch and read.top == 0
    (position,) = await bus.publish([PublishItem(stream, body(9))])
    assert (position.epoch, position.offset) == (read.epoch, 1)
    await eventually(lambda: len(got.events) == 4, what="the new epoch's first event")  # not wait_for(1): 1..3 are old
    assert got.events[-1].data.startswith('{"epoch":"' + read.epoch + '","offset":1,')
    assert bus.stats["resets"] == 2


async def test_an_epoch_change_seen_live_resets_the_stream(
    redis_server: RedisServer, buses: Buses, admin: aioredis.Redis
) -> None:
    bus = await buses.make(redis_server.url)
    resets: list[str] = []
    bus.on_stream_reset = resets.append
    stream = stream_name()
    got = Recorder()
    await bus.subscribe(stream, got)
    await publish(bus, stream, 0, 2)
    await got.wait_for(2)
    await admin.delete(f"lg:{{{stream}}}:m", f"lg:{{{stream}}}:s")  # e.g. evicted or expired
    (position,) = await bus.publish([PublishItem(stream, body(5))])
    assert position.offset == 1
    await eventually(lambda: resets == [stream], what="reset seen")
    await eventually(lambda: got.events[-1].data.startswith('{"epoch":"' + position.epoch + '"'),
                     what="the new epoch's first event delivered")


async def _health_is(bus: RedisBus, expected: dict[str, bool]) -> bool:
    return await bus.health() == expected


# -- lifecycle ---------------------------------------------------------------------------------


async def test_stop_leaves_no_task_and_no_connection(redis_server: RedisServer, admin: aioredis.Redis) -> None:
    await admin.client_setname("admin")
    before = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
    bus = RedisBus(redis_server.url, **FAST)
    await bus.start()
    stream = stream_name()
    subscription = await bus.subscribe(stream, Recorder())
    await publish(bus, stream, 0, 3)
    await bus.read(stream, 0)
    await subscription.close()
    await bus.stop()
    assert {t for t in asyncio.all_tasks() if t is not asyncio.current_task()} - before == set()

    async def only_admin_connected() -> bool:
        clients = await admin.client_list()
        return [c["name"] for c in clients] == ["admin"]

    await eventually(only_admin_connected, what="every bus connection closed")


async def test_a_bus_started_while_redis_is_down_comes_up_later(buses: Buses) -> None:
    server = RedisServer()
    try:
        bus = await buses.make(server.url)  # nothing listens on the port yet
        assert await bus.health() == {"bus": False, "subscriber": False}
        with pytest.raises(BusUnavailable):
            await bus.read(stream_name(), None)
        server.start()
        await eventually(lambda: healthy(bus), timeout=10.0, what="healthy once Redis is up")
        stream = stream_name()
        got = Recorder()
        await bus.subscribe(stream, got)
        await publish(bus, stream, 0, 2)
        await got.wait_for(2)
    finally:
        for bus in buses.buses:
            await bus.stop()
        buses.buses.clear()
        server.close()
