"""A primary and its replica on 127.0.0.1, for failover tests. The replica replicates as an
ACL user a test can switch off (:meth:`Pair.cut_replication`: the primary drops the link and
refuses it back, so the writes made meanwhile really never reach the replica). Clients reach
Redis through a floating address (a proxy the test moves to the promoted replica, as a VIP or
an L4 balancer would), or through Redis Sentinel."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from livegate.testing.redis_server import RedisSentinel, RedisServer
from tests.bus._proxy import TcpProxy
from tests.bus._support import eventually


async def info(url: str) -> dict[str, Any]:
    client = aioredis.Redis.from_url(url)
    try:
        return dict(await client.info("replication"))
    finally:
        await client.aclose()


_REPLICATION_PASSWORD = "replica-secret"


async def command(url: str, *args: str) -> Any:
    client = aioredis.Redis.from_url(url)
    try:
        return await client.execute_command(*args)
    finally:
        await client.aclose()


async def copy_aof(server: RedisServer) -> Path:
    """A copy of the AOF as it is now (written, not necessarily fsynced): restoring it later
    is a restart from an older AOF (a crash under ``appendfsync everysec``, a backup)."""
    copy = server.dir.parent / f"{server.dir.name}-copy"
    await asyncio.to_thread(shutil.copytree, server.dir / "appendonlydir", copy)
    return copy


async def restart_from(server: RedisServer, copy: Path) -> None:
    """Stop the server, put the AOF copy in place of its AOF, start it."""
    aof = server.dir / "appendonlydir"
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(shutil.rmtree, aof)
    await asyncio.to_thread(shutil.copytree, copy, aof)
    await asyncio.to_thread(server.start)


async def _link_is(server: RedisServer, status: str) -> bool:
    return (await info(server.url)).get("master_link_status") == status


class Pair:
    """A primary, its replica and the floating address (``address``)."""

    def __init__(self, *, sentinel: bool = False) -> None:
        self.primary = RedisServer()
        self.replica: RedisServer | None = None
        self.address: TcpProxy | None = None
        self.sentinel = RedisSentinel(self.primary.port) if sentinel else None

    async def start(self) -> Pair:
        await asyncio.to_thread(self.primary.start)
        await command(self.primary.url, "ACL", "SETUSER", "replicator", "on", f">{_REPLICATION_PASSWORD}",
                      "+@all", "~*")
        self.replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(self.primary.port),
                                               "--masteruser", "replicator", "--masterauth", _REPLICATION_PASSWORD])
        await asyncio.to_thread(self.replica.start)
        self.address = await TcpProxy("127.0.0.1", self.primary.port).start()
        if self.sentinel is not None:
            await asyncio.to_thread(self.sentinel.start)
            await eventually(self._sentinel_knows_the_replica, timeout=15.0, what="Sentinel found the replica")
        return self

    async def _sentinel_knows_the_replica(self) -> bool:
        assert self.sentinel is not None and self.replica is not None
        client = aioredis.Redis(host=self.sentinel.host, port=self.sentinel.port)
        try:
            replicas = await client.sentinel_slaves(self.sentinel.service)
        finally:
            await client.aclose()
        return any(int(r["port"]) == self.replica.port for r in replicas)

    async def sentinel_names(self) -> int:
        """The port of the primary Sentinel names now."""
        assert self.sentinel is not None
        client = aioredis.Redis(host=self.sentinel.host, port=self.sentinel.port)
        try:
            _host, port = await client.sentinel_get_master_addr_by_name(self.sentinel.service)
        finally:
            await client.aclose()
        return int(port)

    async def cut_replication(self) -> None:
        """From now on the primary's writes do not reach the replica."""
        assert self.replica is not None
        await command(self.primary.url, "ACL", "SETUSER", "replicator", "off")
        await command(self.primary.url, "CLIENT", "KILL", "USER", "replicator")
        await eventually(lambda: _link_is(self.replica, "down"), timeout=10.0,  # type: ignore[arg-type]
                         what="replication link down")

    async def caught_up(self) -> None:
        """Wait until the replica holds every write the primary made."""
        assert self.replica is not None

        async def same() -> bool:
            p, r = await info(self.primary.url), await info(self.replica.url)  # type: ignore[union-attr]
            return r.get("master_link_status") == "up" and p["master_repl_offset"] == r["master_repl_offset"]

        await eventually(same, timeout=10.0, what="replica caught up")

    async def fail_over(self) -> None:
        """Kill the primary, promote the replica, move the floating address to it; with
        Sentinel, kill the primary and wait until Sentinel promoted the replica."""
        assert self.replica is not None and self.address is not None
        await asyncio.to_thread(self.primary.kill)
        if self.sentinel is not None:
            replica = self.replica
            await eventually(lambda: self._promoted(replica), timeout=30.0, interval=0.1,
                             what="Sentinel promoted the replica")
            return
        await command(self.replica.url, "REPLICAOF", "NO", "ONE")
        self.address.retarget("127.0.0.1", self.replica.port)

    async def _promoted(self, replica: RedisServer) -> bool:
        return await self.sentinel_names() == replica.port and (await info(replica.url))["role"] == "master"

    async def close(self) -> None:
        if self.address is not None:
            await self.address.stop()
        for server in (self.sentinel, self.primary, self.replica):
            if server is not None:
                await asyncio.to_thread(server.close)
