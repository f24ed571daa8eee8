"""Bus fixtures: ``kit`` is parametrised over every backend (memory and Redis)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from livegate.bus.base import Bus
from tests.bus._support import BusKit

BACKENDS = ["memory", "redis"]


@pytest.fixture(params=BACKENDS)
async def kit(request: pytest.FixtureRequest) -> AsyncIterator[BusKit]:
    server = request.getfixturevalue("redis_server") if request.param == "redis" else None
    kit = BusKit(request.param, server)
    try:
        yield kit
    finally:
        await kit.close()


@pytest.fixture
async def bus(kit: BusKit) -> Bus:
    return await kit.make()
