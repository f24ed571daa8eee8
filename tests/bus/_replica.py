"""A primary and its replica on 127.0.0.1, for failover tests: the replica replicates through
a proxy whose link a test can stall (so the writes made meanwhile really never reach it), and
clients reach Redis through a floating address (a proxy the test moves to the promoted
replica, as a VIP or an L4 balancer in front of Sentinel-managed Redis would)."""

from __future__ import annotations

import asyncio
from typing import Any

import redis.asyncio as aioredis

from livegate.testing.redis_server import RedisServer
from tests.bus._proxy import TcpProxy
from tests.bus._support import eventually


async def info(url: str) -> dict[str, Any]:
    client = aioredis.Redis.from_url(url)
    try:
        return dict(await client.info("replication"))
    finally:
        await client.aclose()


class Pair:
    """A primary, its replica (replicating through ``link``) and the floating address."""

    def __init__(self) -> None:
        self.primary = RedisServer()
        self.replica: RedisServer | None = None
        self.link: TcpProxy | None = None
        self.address: TcpProxy | None = None

    async def start(self) -> Pair:
        await asyncio.to_thread(self.primary.start)
        self.link = await TcpProxy("127.0.0.1", self.primary.port).start()
        self.replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(self.link.port)])
        await asyncio.to_thread(self.replica.start)
        self.address = await TcpProxy("127.0.0.1", self.primary.port).start()
        return self

    async def caught_up(self) -> None:
        """Wait until the replica holds every write the primary made."""
        assert self.replica is not None

        async def same() -> bool:
            p, r = await info(self.primary.url), await info(self.replica.url)  # type: ignore[union-attr]
            return r.get("master_link_status") == "up" and p["master_repl_offset"] == r["master_repl_offset"]

        await eventually(same, timeout=10.0, what="replica caught up")

    async def fail_over(self) -> None:
        """Kill the primary, promote the replica, move the floating address to it."""
        assert self.replica is not None and self.address is not None
        await asyncio.to_thread(self.primary.kill)
        client = aioredis.Redis.from_url(self.replica.url)
        try:
            await client.execute_command("REPLICAOF", "NO", "ONE")
        finally:
            await client.aclose()
        self.address.retarget("127.0.0.1", self.replica.port)

    async def close(self) -> None:
        for proxy in (self.address, self.link):
            if proxy is not None:
                await proxy.stop()
        for server in (self.primary, self.replica):
            if server is not None:
                await asyncio.to_thread(server.close)
