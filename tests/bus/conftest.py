"""Bus fixtures: ``kit`` is parametrised over every backend (memory and Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from livegate.bus.base import Bus
from livegate.testing.redis_server import RedisServer
from tests.bus._support import BusKit

BACKENDS = ["memory", "redis", "redis-sharded"]


@pytest.fixture(scope="session")
def second_redis_server() -> Iterator[RedisServer]:
    """The other shard of ``redis-sharded`` (the first is the session's ``redis_server``)."""
    with RedisServer() as server:
        yield server


@pytest.fixture(params=BACKENDS)
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[BusKit]:
    servers: list[RedisServer] = []
    if request.param.startswith("redis"):
        servers.append(request.getfixturevalue("redis_server"))
    if request.param == "redis-sharded":
        servers.append(request.getfixturevalue("second_redis_server"))
    kit = BusKit(request.param, servers)
    try:
        yield kit
    finally:
        await kit.close()


@pytest.fixture
async def bus(kit: BusKit) -> Bus:
    return await kit.make()
