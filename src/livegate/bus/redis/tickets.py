"""Single-use tickets in Redis (:class:`~livegate.bus.tickets.TicketStore`).

Key: ``lg:ticket:<sha256 of the name>`` (a dump or ``MONITOR`` shows no usable ticket),
put with ``SET NX PX`` and taken with ``GETDEL`` (Redis >= 6.2): atomic, so a ticket opens
one stream once whichever processes race for it. With several Redis URLs (sharded users)
the first one holds the tickets: every process lists them in the same order.
"""

from __future__ import annotations

import hashlib

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from livegate.bus.redis.address import redis_client
from livegate.bus.redis.errors import TRANSIENT, unavailable
from livegate.bus.tickets import TicketStore


class RedisTickets(TicketStore):
    def __init__(self, url: str, *, key_prefix: str = "lg", socket_timeout: float = 1.5,
                 connect_timeout: float = 1.0) -> None:
        self._prefix = key_prefix
        self._url = url
        self._timeouts = (socket_timeout, connect_timeout)
        self._client = self._connect()

    def _connect(self) -> Redis:
        socket_timeout, connect_timeout = self._timeouts
        return redis_client(self._url, socket_timeout=socket_timeout, socket_connect_timeout=connect_timeout,
                            retry=Retry(NoBackoff(), 0), client_name="livegate:tickets")

    def _key(self, name: str) -> str:
        return f"{self._prefix}:ticket:{hashlib.sha256(name.encode()).hexdigest()}"

    async def start(self) -> None:
        self._client = self._connect()  # again after a stop (an app's lifespan may run twice)

    async def stop(self) -> None:
        await self._client.aclose()

    async def put(self, name: str, value: bytes, ttl_seconds: float) -> None:
        try:
            await self._client.set(self._key(name), value, px=max(1, int(ttl_seconds * 1000)), nx=True)
        except TRANSIENT as exc:
            raise unavailable("ticket put", exc) from exc

    async def take(self, name: str) -> bytes | None:
        try:
            value = await self._client.getdel(self._key(name))
        except TRANSIENT as exc:
            raise unavailable("ticket take", exc) from exc
        return None if value is None else value.encode() if isinstance(value, str) else bytes(value)


__all__ = ["RedisTickets"]
