"""The command path: a pooled redis-py client for publish, read, health and the probe.

Publish and read are Lua scripts (``scripts/``) sent as ``EVALSHA``, packed by hand
(:mod:`~livegate.bus.redis.wire`) and pipelined on one pooled connection; redis-py's public
connection API (``get_connection``, ``send_packed_command``, ``read_response``) carries them.
Socket timeouts are short and no command is retried, so an outage fails fast and a publish
is never applied twice. Errors are redis-py's; the bus maps them (:mod:`.errors`).

With a ``redis+sentinel://`` URL (:mod:`.address`) the pool's connections are redis-py's
``SentinelManagedConnection``: each new one asks the sentinels for the primary, and one that
finds its server demoted (``READONLY``) drops itself, so the pool follows a failover.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

from livegate.bus.redis import wire
from livegate.bus.redis.address import parse_sentinel_url
from livegate.bus.redis.errors import NoScriptError, ResponseError
from livegate.errors import BusUnavailable


class _SentinelBlockingPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool (connections follow the primary), waiting for a free
    connection like :class:`BlockingConnectionPool` instead of failing."""


class Commands:
    def __init__(self, url: str, *, socket_timeout: float, connect_timeout: float, max_connections: int,
                 client_name: str) -> None:
        self._url = url
        self._target = parse_sentinel_url(url)
        self._sentinel: Sentinel | None = None
        settings: dict[str, Any] = {
            "max_connections": max_connections, "timeout": socket_timeout, "client_name": client_name,
            "socket_timeout": socket_timeout, "socket_connect_timeout": connect_timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        self._pool: BlockingConnectionPool
        if self._target is None:
            self._pool = BlockingConnectionPool.from_url(url, **settings)
        else:
            target = self._target
            self._sentinel = Sentinel(target.sentinels, socket_timeout=socket_timeout,  # type: ignore[no-untyped-call]
                                      socket_connect_timeout=connect_timeout)
            self._pool = _SentinelBlockingPool(  # type: ignore[no-untyped-call]
                target.service, self._sentinel, db=target.db, username=target.username, password=target.password,
                **settings)
        self.client = Redis(connection_pool=self._pool)

    async def close(self) -> None:
        await self.client.aclose()
        await self._pool.disconnect()
        if self._sentinel is not None:
            await self._sentinel.aclose()

    async def primary_url(self) -> str:
        """A plain URL of the server to subscribe on: the configured one, or the primary the
        sentinels name now (raises redis-py's ``MasterNotFoundError`` while they name none)."""
        if self._target is None or self._sentinel is None:
            return self._url
        host, port = await self._sentinel.discover_master(self._target.service)
        return self._target.node_url(host, int(port))

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def publish_probe(self, channel: bytes, token: bytes) -> int:
        return int(await self.client.publish(channel, token))

    async def eval_many(self, script: wire.Script, calls: Sequence[tuple[list[str], list[Any]]]) -> list[Any]:
        """EVALSHA each call (pipelined on one connection); load the script and redo calls
        refused NOSCRIPT (a refused call did nothing). Per-call errors come back as
        exceptions; a lost connection raises."""
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            replies = await self._roundtrip([wire.pack_evalsha(script.sha, *calls[i]) for i in todo])
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                results[i] = reply
                if isinstance(reply, NoScriptError):
                    missing.append(i)
            if not missing or attempt == 1:
                break
            await self.client.script_load(script.source)
            todo = missing
        return results

    async def _roundtrip(self, commands: list[bytes]) -> list[Any]:
        """Send RESP-packed commands on one pooled connection and read every reply.

        Packing here instead of redis-py's pipeline halves the CPU per published event
        (its packer is pure Python and per argument). A connection interrupted mid-way is
        dropped, never reused out of step."""
        pool = self._pool
        if pool is None:
            raise BusUnavailable("RedisBus is not started")
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await conn.send_packed_command(commands, check_health=False)
            replies: list[Any] = []
            for _ in commands:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as exc:  # an error reply: the connection is still in step
                    replies.append(exc)
            return replies
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        finally:
            await pool.release(conn)


__all__ = ["Commands"]
