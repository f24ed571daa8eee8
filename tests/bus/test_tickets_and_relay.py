"""The two small backends of the SSE wire, one suite over memory and Redis (as the bus
suite): single-use tickets (:mod:`livegate.bus.tickets`) and node-to-node requests
(:mod:`livegate.bus.relay`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from livegate.bus.redis.relay import RedisRelay
from livegate.bus.redis.tickets import RedisTickets
from livegate.bus.relay import LocalRelay, Relay
from livegate.bus.tickets import MemoryTickets, TicketStore
from livegate.errors import BusUnavailable
from livegate.testing.redis_server import RedisServer


@pytest.fixture(params=["memory", "redis"])
async def tickets(request: pytest.FixtureRequest) -> AsyncIterator[TicketStore]:
    store: TicketStore
    if request.param == "memory":
        store = MemoryTickets()
    else:
        store = RedisTickets(request.getfixturevalue("redis_server").url)
    await store.start()
    try:
        yield store
    finally:
        await store.stop()


async def test_a_ticket_is_taken_once(tickets: TicketStore) -> None:
    await tickets.put("t1", b"alice", 30)
    assert await tickets.take("t1") == b"alice"
    assert await tickets.take("t1") is None
    assert await tickets.take("never") is None


async def test_concurrent_takes_get_it_once(tickets: TicketStore) -> None:
    await tickets.put("race", b"v", 30)
    outcomes = await asyncio.gather(*(tickets.take("race") for _ in range(10)))
    assert outcomes.count(b"v") == 1 and outcomes.count(None) == 9


async def test_a_ticket_expires(tickets: TicketStore) -> None:
    await tickets.put("short", b"v", 0.05)
    await asyncio.sleep(0.1)  # past the deadline the test set itself
    assert await tickets.take("short") is None


def test_the_memory_store_is_bounded() -> None:
    from livegate.bus import tickets as module

    store = MemoryTickets()

    async def fill() -> None:
        for i in range(module.MAX_MEMORY_TICKETS + 10):
            await store.put(f"t{i}", b"v", 30)

    asyncio.run(fill())
    assert len(store._entries) <= module.MAX_MEMORY_TICKETS


async def test_redis_down_is_bus_unavailable() -> None:
    with RedisServer() as server:
        store = RedisTickets(server.url)
        await store.start()
        server.stop()
        with pytest.raises(BusUnavailable):
            await store.put("t", b"v", 30)
        await store.stop()


def _echo(node: str) -> object:
    return lambda payload: node.encode() + b":" + payload


@pytest.fixture(params=["local", "redis"])
async def relays(request: pytest.FixtureRequest) -> AsyncIterator[list[Relay]]:
    if request.param == "local":
        made: list[Relay] = [LocalRelay("n1")]
    else:
        made = [RedisRelay(request.getfixturevalue("redis_server").url, "n1")]
    for relay in made:
        await relay.start(_echo(relay.node))  # type: ignore[arg-type]
    try:
        yield made
    finally:
        for relay in made:
            await relay.stop()


async def test_a_node_answers_its_own_requests_and_nobody_answers_for_a_missing_node(relays: list[Relay]) -> None:
    first = relays[0]
    assert await first.call("n1", b"hi", 2.0) == b"n1:hi"
    assert await first.call("gone", b"hi", 2.0) is None


async def test_another_node_answers_in_order(redis_server: RedisServer) -> None:
    first, second = RedisRelay(redis_server.url, "n1"), RedisRelay(redis_server.url, "n2")
    for relay in (first, second):
        await relay.start(_echo(relay.node))  # type: ignore[arg-type]
    try:
        answers = await asyncio.gather(*(first.call("n2", str(i).encode(), 5.0) for i in range(20)))
        assert answers == [f"n2:{i}".encode() for i in range(20)]
        assert await second.call("n1", b"back", 5.0) == b"n1:back"
    finally:
        for relay in (first, second):
            await relay.stop()
