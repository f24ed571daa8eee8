"""Store fixtures: ``kit`` is parametrised over every dialect (SQLite file, real PostgreSQL).

Each test gets an empty database of its own: a file under ``tmp_path`` or a fresh
PostgreSQL database on the session's server.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from livegate.store import SqlStore, sqlite_url

BACKENDS = ["sqlite", "postgres"]


class StoreKit:
    """Makes stores on one database: ``await kit.make()`` as often as a test needs
    processes (each is its own engine and pool, like another gateway process)."""

    def __init__(self, backend: str, url: str) -> None:
        self.backend = backend
        self.url = url
        self.stores: list[SqlStore] = []

    async def make(self, *, open: bool = True, **options: Any) -> SqlStore:
        store = SqlStore(self.url, connect_timeout=3.0, **options)
        self.stores.append(store)
        if open:
            await store.open()
        return store

    async def scalar(self, sql: str, **params: Any) -> Any:
        """One value by plain SQL on a connection of its own (what is really stored)."""
        store = await self.make()
        async with store._tx(write=False) as conn:
            return (await conn.execute(text(sql), params)).scalar()

    async def close(self) -> None:
        for store in self.stores:
            await store.close()


@pytest.fixture(params=BACKENDS)
async def kit(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreKit]:
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        url = server.create_database("t_" + secrets.token_hex(6))
    else:
        url = sqlite_url(tmp_path / "livegate.sqlite3")
    kit = StoreKit(request.param, url)
    try:
        yield kit
    finally:
        await kit.close()


@pytest.fixture
async def store(kit: StoreKit) -> SqlStore:
    return await kit.make()
