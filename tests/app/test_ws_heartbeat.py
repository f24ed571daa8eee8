"""Server heartbeat (WebSocket ping): a peer that stops answering is closed after the timeout;
one that answers stays, however idle."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from livegate.testing.gateway import running_gateway

from .conftest import note


async def _until(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_deaf_connection_is_closed_after_the_heartbeat_timeout(tmp_path: Path, connect) -> None:
    async with running_gateway(tmp_path, heartbeat_interval_seconds=0.3, heartbeat_timeout_seconds=0.5) as gw:
        # ping_interval=None: only the server pings; websockets answers pings while it reads.
        live = await connect(gw, ping_interval=None)
        welcome = await live.auth(gw.token("alice"))
        assert welcome["heartbeatIntervalMs"] == 300
        deaf = await connect(gw, ping_interval=None)
        await deaf.auth(gw.token("bob"))
        assert len(gw.gateway.connections) == 2
        deaf.ws.transport.pause_reading()  # it stops reading, so it never answers a ping
        paused_at = time.monotonic()
        await _until(lambda: len(gw.gateway.connections) == 1, 5, "the server to drop the deaf connection")
        waited = time.monotonic() - paused_at
        assert waited >= 0.5, f"closed after {waited:.2f}s, before the timeout could elapse"
        (survivor,) = gw.gateway.connections
        assert survivor.session.user_id == "alice"
        # What the deaf peer finds once it reads again: the contract's 4002 heartbeat_timeout.
        deaf.ws.transport.resume_reading()
        await asyncio.wait_for(deaf.ws.wait_closed(), 5)
        assert deaf.ws.close_code == 4002, deaf.ws.close_code
        # The answering one is still served after many intervals of silence.
        await _until(lambda: time.monotonic() - paused_at > 1.5, 5, "several heartbeat intervals")
        await gw.publish("alice", note("still here"))
        (event,) = await live.events(1)
        assert event["message"] == "still here"
