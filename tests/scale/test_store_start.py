"""A gateway started before its database (or restarted during its outage) waits for it
(``LIVEGATE_STORE_START_TIMEOUT``) instead of exiting at once (found by the chaos soak):
``livegate serve`` is started against a PostgreSQL that is not running yet, the database
comes up a few seconds later, and the gateway migrates it and answers ``/readyz``."""

from __future__ import annotations

import asyncio
from pathlib import Path

from livegate.testing.postgres_server import PostgresServer
from livegate.testing.process import GatewayProcess
from tests.scale._support import STARTUP_TIMEOUT, eventually, readiness


async def test_a_gateway_started_before_its_database_waits_for_it(tmp_path: Path) -> None:
    postgres = PostgresServer()
    gw = GatewayProcess(tmp_path / "gw", env={"LIVEGATE_DATABASE_URL": postgres.url}, startup_timeout=STARTUP_TIMEOUT)
    starting = asyncio.create_task(asyncio.to_thread(gw.start))
    try:
        await eventually(lambda: gw.log_tail(200).count("database is unavailable at start") >= 2, timeout=30.0,
                         what="the gateway retrying its database")
        assert not starting.done()
        await asyncio.to_thread(postgres.start)
        await starting
        await eventually(lambda: _ready(gw), timeout=30.0, what="the gateway ready on its database")
    finally:
        if not starting.done():
            starting.cancel()
        await asyncio.to_thread(gw.kill)
        await asyncio.to_thread(postgres.close)


async def _ready(gw: GatewayProcess) -> bool:
    status, _body = await readiness(gw)
    return status == 200
