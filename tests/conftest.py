"""Fixtures shared across test packages. Keep each one self-contained."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from livegate.testing.postgres_server import PostgresServer
    from livegate.testing.redis_server import RedisServer
    from livegate.testing.webhook_receiver import WebhookReceiver


# -- Redis (tests/bus, tests/scale) ----------------------------------------------------------
@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One memory-only ``redis-server`` per test session (per xdist worker), for tests that
    leave it running. Tests that stop or restart Redis start their own ``RedisServer``.
    Without the binary this fails (never skips): CI installs ``redis-server``."""
    from livegate.testing.redis_server import RedisServer

    with RedisServer() as server:
        yield server


# -- PostgreSQL (tests/store, tests/service) ------------------------------------------------
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL per test session (per xdist worker); tests take a fresh
    database each with ``postgres_server.create_database(...)``. Tests that kill the
    server start their own. Without the binaries this fails (never skips)."""
    from livegate.testing.postgres_server import PostgresServer

    with PostgresServer() as server:
        yield server


# -- webhooks (tests/app/test_webhooks.py, tests/webhooks) -----------------------------------
@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    """A real webhook endpoint on 127.0.0.1 that records requests and fails when told."""
    from livegate.testing.webhook_receiver import WebhookReceiver

    server = WebhookReceiver()
    await server.start()
    yield server
    await server.stop()
