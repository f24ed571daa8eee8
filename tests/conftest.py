"""Fixtures shared across test packages. Keep each one self-contained."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from livegate.testing.redis_server import RedisServer


# -- Redis (tests/bus, tests/scale) ----------------------------------------------------------
@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One memory-only ``redis-server`` per test session (per xdist worker), for tests that
    leave it running. Tests that stop or restart Redis start their own ``RedisServer``.
    Without the binary this fails (never skips): CI installs ``redis-server``."""
    from livegate.testing.redis_server import RedisServer

    with RedisServer() as server:
        yield server
