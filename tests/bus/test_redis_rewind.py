"""Rewinds of Redis data show as a new epoch, never as reused offsets (docs/scaling.md,
"Rewinds"): a replica that missed writes promoted, a restart from an older AOF copy; and no
false positive: an intact restart, or a promoted replica that had every write, keeps the
epoch and resumes exactly.

Two buses stand for two gateway processes. They reach Redis through a floating address (a
proxy the test moves to the promoted replica, as a VIP or an L4 balancer would), so they
live through the failover (tests/scale/test_redis_failover.py does it with gateway processes
and Redis Sentinel); the replica's link is cut (tests/bus/_replica.py), so the writes made
meanwhile really never reach it.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from livegate.bus.base import Position, PublishItem
from livegate.bus.redis import RedisBus
from livegate.errors import BusUnavailable
from livegate.protocol.resume import Replay, Reset, plan_resume
from livegate.testing.redis_server import RedisServer
from tests.bus._replica import Pair, copy_aof, info, restart_from
from tests.bus._support import Recorder, eventually, stream_name

pytestmark = pytest.mark.redis

FAST = {"probe_interval": 0.1, "probe_timeout": 0.5, "reconnect_min_delay": 0.02, "reconnect_max_delay": 0.2,
        "poll_interval": 0.05, "socket_timeout": 1.0, "connect_timeout": 0.5, "settle_seconds": 1.0}


_ticks = itertools.count(1)
#: (stream, epoch, offset) -> the timestamp of the event published there (what a client that
#: received it sends back as resume.timestamp).
STAMPS: dict[tuple[str, str, int], str] = {}


def body(tag: str, n: int) -> bytes:
    """A body as service/publisher.py makes them: ``timestamp`` first (a distinct one each)."""
    tick = next(_ticks)
    stamp = f"2026-12-03T00:{tick // 60000 % 60:02d}:{tick // 1000 % 60:02d}.{tick % 1000:03d}Z"
    return b'{"timestamp":"%s","type":"notification","tag":"%s","n":%d}' % (stamp.encode(), tag.encode(), n)


async def publish(bus: RedisBus, stream: str, tag: str, count: int) -> list[Position]:
    positions = []
    for n in range(count):  # one call each: every gateway publishes on its own
        data = body(tag, n)
        (position,) = await bus.publish([PublishItem(stream, data)])
        STAMPS[(stream, position.epoch, position.offset)] = data[14:38].decode()
        positions.append(position)
    return positions


def stamp(stream: str, position: Position) -> str:
    return STAMPS[(stream, position.epoch, position.offset)]


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    made = Pair()
    try:
        yield await made.start()
    finally:
        await made.close()


@pytest.fixture
def aof_redis() -> Iterator[RedisServer]:
    with RedisServer(appendonly=True) as server:
        yield server


@pytest.fixture
async def gateways() -> AsyncIterator[list[RedisBus]]:
    made: list[RedisBus] = []
    yield made
    for bus in made:
        await bus.stop()


async def two_gateways(url: str, made: list[RedisBus]) -> tuple[RedisBus, RedisBus]:
    for _ in range(2):
        bus = RedisBus(url, **FAST)
        made.append(bus)
        await bus.start()
    return made[0], made[1]


async def healthy(*buses: RedisBus) -> bool:
    for bus in buses:
        if not all((await bus.health()).values()):
            return False
    return True


async def four_events_watched(one: RedisBus, two: RedisBus) -> tuple[str, Recorder, list[str], list[Position]]:
    """A stream a client watches on gateway one (its resets recorded), offsets 1..4
    published through both gateways and delivered."""
    resets: list[str] = []
    one.on_stream_reset = resets.append
    stream, client = stream_name(), Recorder()
    await one.subscribe(stream, client)
    before = await publish(one, stream, "a", 2) + await publish(two, stream, "b", 2)
    await client.wait_for(4)
    return stream, client, resets, before


def resume(read: Any, position: Position) -> Replay | Reset | object:
    return plan_resume(position.epoch, position.offset, epoch=read.epoch, first_available=read.first_available,
                       top=read.top)


async def test_a_promoted_replica_that_missed_writes_starts_a_new_epoch(
    pair: Pair, gateways: list[RedisBus]
) -> None:
    assert pair.address is not None
    one, two = await two_gateways(pair.address.url, gateways)
    resets: list[str] = []
    one.on_stream_reset = resets.append
    stream = stream_name()
    client = Recorder()  # a client connected to gateway one
    await one.subscribe(stream, client)
    kept = await publish(one, stream, "kept", 3)
    await pair.caught_up()
    await pair.cut_replication()  # what follows never reaches the replica
    lost = await publish(two, stream, "lost", 2) + await publish(one, stream, "lost", 2)
    await client.wait_for(lost[-1].offset)
    seen = Position(lost[-1].epoch, lost[-1].offset)  # the client's last position: 7
    assert [p.offset for p in kept + lost] == list(range(1, 8)) and {p.epoch for p in kept + lost} == {seen.epoch}

    await pair.fail_over()
    await eventually(lambda: healthy(one, two), timeout=10.0, what="both gateways on the promoted replica")
    after = await publish(one, stream, "after", 5) + await publish(two, stream, "after", 5)
    # Offsets 4.. of the old epoch were lost with the primary: the new events are a new
    # epoch, never the old epoch's offsets again.
    assert all(p.epoch != seen.epoch for p in after), after
    assert [p.offset for p in after] == list(range(1, 11))
    read = await two.read(stream, seen.offset)
    assert isinstance(resume(read, seen), Reset)
    await eventually(lambda: resets == [stream], timeout=15.0, what="gateway one resets its live stream (its clients reconnect)")
    # An old position the data still holds is no proof either: the stream's epoch changed.
    assert isinstance(resume(read, kept[-1]), Reset)


async def test_through_sentinel_a_lagging_replica_promoted_starts_a_new_epoch(gateways: list[RedisBus]) -> None:
    pair = Pair(sentinel=True)
    try:
        await pair.start()
        assert pair.sentinel is not None
        one, two = await two_gateways(pair.sentinel.url, gateways)
        stream, client, resets, _before = await four_events_watched(one, two)
        await pair.caught_up()
        await pair.cut_replication()
        lost = await publish(two, stream, "lost", 2) + await publish(one, stream, "lost", 1)
        await client.wait_for(7)
        seen = Position(lost[-1].epoch, lost[-1].offset)

        await pair.fail_over()  # Sentinel promotes the replica; the buses follow by themselves
        await eventually(lambda: healthy(one, two), timeout=15.0, what="both gateways on Sentinel's new primary")
        after = await publish(one, stream, "after", 4)
        assert all(p.epoch != seen.epoch for p in after) and [p.offset for p in after] == [1, 2, 3, 4]
        assert isinstance(resume(await two.read(stream, seen.offset), seen), Reset)
        await eventually(lambda: resets == [stream], timeout=15.0, what="gateway one resets its live stream")
    finally:
        await pair.close()


async def test_a_promoted_replica_that_had_every_write_keeps_the_epoch(pair: Pair, gateways: list[RedisBus]) -> None:
    assert pair.address is not None
    one, two = await two_gateways(pair.address.url, gateways)
    stream, client, resets, before = await four_events_watched(one, two)
    await pair.caught_up()

    await pair.fail_over()
    await eventually(lambda: healthy(one, two), timeout=10.0, what="both gateways on the promoted replica")
    after = await publish(two, stream, "c", 2) + await publish(one, stream, "d", 1)
    assert [(p.epoch, p.offset) for p in after] == [(before[0].epoch, n) for n in (5, 6, 7)]
    read = await one.read(stream, 4)
    assert resume(read, before[-1]) == Replay(after=4)
    assert [e.offset for e in read.events] == [5, 6, 7]
    await client.wait_for(7)
    assert client.offsets == list(range(1, 8)) and resets == []


async def test_a_restart_from_an_older_aof_copy_starts_a_new_epoch(
    aof_redis: RedisServer, gateways: list[RedisBus]
) -> None:
    one, two = await two_gateways(aof_redis.url, gateways)
    stream, other = stream_name(), stream_name("other")
    client = Recorder()
    await one.subscribe(stream, client)
    kept = await publish(one, stream, "kept", 3)
    await publish(two, other, "kept", 1)
    copy = await copy_aof(aof_redis)
    try:
        lost = await publish(two, stream, "lost", 3) + await publish(one, stream, "lost", 1)
        await client.wait_for(lost[-1].offset)
        seen = Position(lost[-1].epoch, lost[-1].offset)

        await restart_from(aof_redis, copy)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    await eventually(lambda: healthy(one, two), timeout=10.0, what="both gateways back")
    after = await publish(one, stream, "after", 6)
    assert all(p.epoch != seen.epoch for p in after) and [p.offset for p in after] == list(range(1, 7))
    assert isinstance(resume(await two.read(stream, seen.offset), seen), Reset)
    # Every stream of the data set is void, also one nobody touched since.
    (position,) = await two.publish([PublishItem(other, body("after", 0))])
    assert position.offset == 1 and position.epoch != kept[0].epoch


async def test_a_copy_older_than_the_last_restarts_is_still_a_rewind(
    aof_redis: RedisServer, gateways: list[RedisBus]
) -> None:
    """The copy is of an earlier server run than the one the gateways last saw (two restarts
    since): their witness is of a run the restored data never knew, and still proves it."""
    one, two = await two_gateways(aof_redis.url, gateways)
    stream = stream_name()
    kept = await publish(one, stream, "kept", 2)
    copy = await copy_aof(aof_redis)
    try:
        for round_ in range(2):  # intact restarts: same epoch, offsets go on
            await asyncio.to_thread(aof_redis.restart)
            await eventually(lambda: healthy(one, two), timeout=10.0, what="both gateways back")
            more = await publish(two, stream, f"run {round_}", 2)
            assert {p.epoch for p in more} == {kept[0].epoch}
        seen = more[-1]
        assert seen.offset == 6
        await restart_from(aof_redis, copy)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    await eventually(lambda: healthy(one, two), timeout=10.0, what="both gateways back")
    after = await publish(one, stream, "after", 4)
    assert all(p.epoch != seen.epoch for p in after) and [p.offset for p in after] == [1, 2, 3, 4]


async def test_an_intact_restart_keeps_the_epoch_and_resumes_exactly(
    aof_redis: RedisServer, gateways: list[RedisBus]
) -> None:
    one, two = await two_gateways(aof_redis.url, gateways)
    stream, client, resets, before = await four_events_watched(one, two)
    replid = (await info(aof_redis.url))["master_replid"]

    await asyncio.to_thread(aof_redis.restart)  # SIGTERM: the AOF is complete
    assert (await info(aof_redis.url))["master_replid"] != replid  # a new server run all the same
    await eventually(lambda: healthy(one, two), timeout=10.0, what="both gateways back")
    after = await publish(two, stream, "c", 2)
    assert [(p.epoch, p.offset) for p in after] == [(before[0].epoch, 5), (before[0].epoch, 6)]
    read = await one.read(stream, 4)
    assert resume(read, before[-1]) == Replay(after=4)
    assert [e.offset for e in read.events] == [5, 6]
    # A client holding event 4 says so (resume.timestamp): the stream holds that very event.
    checked = await one.read(stream, 4, claimed_epoch=before[-1].epoch, claimed_timestamp=stamp(stream, before[-1]))
    assert resume(checked, before[-1]) == Replay(after=4) and [e.offset for e in checked.events] == [5, 6]
    await client.wait_for(6)
    assert client.offsets == list(range(1, 7)) and resets == []


async def _unwitnessed_rewind(
    aof_redis: RedisServer, gateways: list[RedisBus]
) -> tuple[str, Position, str, RedisBus, RedisBus, list[str]]:
    """A gateway publishes offsets 1-2, then 3-5 that the AOF copy lacks, and stops; Redis
    comes back from the copy; two fresh gateways (no witness), the second watching the
    stream. Returns (stream, the client's position 5, the timestamp of the event it holds
    there, the fresh gateway, the watching one, the watcher's resets)."""
    old = RedisBus(aof_redis.url, **FAST)
    await old.start()
    stream = stream_name()
    try:
        await publish(old, stream, "kept", 2)
        copy = await copy_aof(aof_redis)
        seen = (await publish(old, stream, "lost", 3))[-1]
        seen_stamp = stamp(stream, seen)  # before a new event at offset 5 replaces it in STAMPS
    finally:
        await old.stop()
    try:
        await restart_from(aof_redis, copy)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    fresh, other = await two_gateways(aof_redis.url, gateways)
    # ready once the data has settled (publishes are refused until then)
    await eventually(lambda: healthy(fresh, other), timeout=10.0, what="both gateways ready")
    resets: list[str] = []
    other.on_stream_reset = resets.append
    await other.subscribe(stream, Recorder())
    return stream, seen, seen_stamp, fresh, other, resets


async def test_a_rewind_nobody_witnessed_is_caught_by_a_resume_ahead_of_the_top(
    aof_redis: RedisServer, gateways: list[RedisBus]
) -> None:
    """The gateways that saw the lost writes restarted too: no witness. A client that saw
    them resumes ahead of the stream's top in its epoch: the stream starts a new epoch then,
    so the offsets it saw are never handed out again in the epoch it knows."""
    stream, seen, _stamp, fresh, other, resets = await _unwitnessed_rewind(aof_redis, gateways)
    (refill,) = await publish(fresh, stream, "unwitnessed", 1)
    assert (refill.epoch, refill.offset) == (seen.epoch, 3)  # nobody could know yet

    read = await fresh.read(stream, seen.offset, claimed_epoch=seen.epoch)
    assert read.epoch != seen.epoch and read.top == 0 and isinstance(resume(read, seen), Reset)
    after = await publish(other, stream, "after", 3)
    assert {p.epoch for p in after} == {read.epoch} and [p.offset for p in after] == [1, 2, 3]
    await eventually(lambda: resets == [stream], timeout=15.0, what="the other gateway's live stream reset")
    # Without the claim (or in another epoch) nothing changes: a plain read is only a look.
    assert (await fresh.read(stream, 9)).epoch == read.epoch
    assert (await fresh.read(stream, 9, claimed_epoch="not-" + read.epoch)).epoch == read.epoch


@pytest.mark.parametrize("written_again", [3, 4], ids=["up-to-the-client", "past-the-client"])
async def test_a_rewind_written_again_up_to_or_past_a_client_is_caught_by_its_timestamp(
    aof_redis: RedisServer, gateways: list[RedisBus], written_again: int
) -> None:
    """No witness (the gateways restarted with Redis), and new publishes reached the offset of a
    client that saw the lost events before it resumed: its offset alone looks fine. The
    timestamp of the event it holds there (resume.timestamp) is not the stream's: new epoch."""
    stream, seen, seen_stamp, fresh, other, resets = await _unwitnessed_rewind(aof_redis, gateways)
    rewritten = await publish(fresh, stream, "unwitnessed", written_again)
    assert [(p.epoch, p.offset) for p in rewritten] == [(seen.epoch, 3 + i) for i in range(written_again)]
    at_seen = rewritten[seen.offset - 3]
    # A client that received the event now at offset 5 resumes exactly (no false alarm)...
    honest = await fresh.read(stream, seen.offset, claimed_epoch=seen.epoch, claimed_timestamp=stamp(stream, at_seen))
    assert honest.epoch == seen.epoch and resume(honest, seen) == Replay(after=seen.offset)
    # ... and so does one without a timestamp (nothing to check): it would miss offsets 3..5.
    assert (await fresh.read(stream, seen.offset, claimed_epoch=seen.epoch)).epoch == seen.epoch

    read = await fresh.read(stream, seen.offset, claimed_epoch=seen.epoch, claimed_timestamp=seen_stamp)
    assert read.epoch != seen.epoch and read.top == 0 and isinstance(resume(read, seen), Reset)
    after = await publish(other, stream, "after", 2)
    assert {p.epoch for p in after} == {read.epoch} and [p.offset for p in after] == [1, 2]
    await eventually(lambda: resets == [stream], timeout=15.0, what="the other gateway's live stream reset")


async def _first_publish_after_failover(
    pair: Pair, gateways: list[RedisBus], settle: float
) -> tuple[Position, Position, list[str]]:
    """Gateway ``one`` published the writes the replica missed; gateway ``two`` saw none of them
    and is the first to publish after the failover, while ``one``'s subscriber is still in
    its reconnect pause. Returns (the last lost position, two's first position after, the
    refusals it met before)."""
    refusals: list[str] = []
    assert pair.address is not None
    slow = {**FAST, "reconnect_min_delay": 0.5, "reconnect_max_delay": 0.5}  # pauses 0.25-0.75 s
    one = RedisBus(pair.address.url, **{**slow, "settle_seconds": settle})
    two = RedisBus(pair.address.url, **{**FAST, "settle_seconds": settle})
    for bus in (one, two):
        gateways.append(bus)
        await bus.start()
    stream = stream_name()
    await publish(two, stream, "kept", 3)
    await pair.caught_up()
    await pair.cut_replication()
    seen = (await publish(one, stream, "lost", 2))[-1]
    await pair.fail_over()
    # Refused while its pooled connection died with the primary, and (with a settle time)
    # while the data settles: retried as a publisher would (503 + Retry-After over HTTP).
    async with asyncio.timeout(15):
        while True:
            try:
                (first,) = await publish(two, stream, "after", 1)
                return seen, first, refusals
            except BusUnavailable as exc:
                refusals.append(str(exc))
                await asyncio.sleep(0.05)


async def test_a_gateway_that_saw_nothing_of_the_lost_writes_waits_for_the_witnesses(
    pair: Pair, gateways: list[RedisBus]
) -> None:
    """Right after a failover the data settles (LIVEGATE_REDIS_SETTLE_SECONDS): publishes are
    refused (retry shortly) until every live gateway's subscriber has shown what it saw, so
    the first one accepted is already in the new epoch that gateway one's witness starts."""
    seen, first, refusals = await _first_publish_after_failover(pair, gateways, settle=4.0)
    assert first.epoch != seen.epoch and first.offset == 1
    assert any("settling" in refusal for refusal in refusals), refusals  # refused, not held


async def test_without_settling_the_first_publisher_would_reuse_a_lost_offset(
    pair: Pair, gateways: list[RedisBus]
) -> None:
    """The control of the test above: with no settle time, the gateway that saw nothing appends
    at offset 4 of the old epoch, an offset clients saw with another event (until gateway
    one's subscriber calls in and voids the epoch)."""
    seen, first, _refusals = await _first_publish_after_failover(pair, gateways, settle=0.0)
    assert (first.epoch, first.offset) == (seen.epoch, 4)
