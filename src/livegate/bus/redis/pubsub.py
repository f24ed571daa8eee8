"""The pub/sub socket: one TCP connection to Redis in subscriber mode, RESP parsed by
hiredis's public ``Reader`` (``feed``/``gets``) as the bytes arrive.

A burst of messages arrives in one socket read and comes out of :meth:`PubSubSocket.replies`
as one list: no timeout scope per reply (redis-py's ``read_response(timeout=...)`` opened
one per reply, ~6% of a gateway's CPU under load, bench/README.md). Commands are written
synchronously (``SUBSCRIBE``/``UNSUBSCRIBE`` need no await, so their order is the order of
the calls). Errors are those of :data:`livegate.bus.redis.errors.TRANSIENT`.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from livegate.bus.redis.wire import pack_command


class _Resp(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.replies: list[Any] = []
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        try:
            reader.feed(data)
            while (reply := reader.gets()) is not False:
                self.replies.append(reply)
        except hiredis.ProtocolError as exc:
            self.lost = RedisConnectionError(f"protocol error from Redis: {exc}")
            if self.transport is not None:
                self.transport.abort()
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.lost is None:
            self.lost = RedisConnectionError(f"pub/sub connection lost: {exc or 'closed by Redis'}")
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class PubSubSocket:
    """One subscriber connection (see the module doc)."""

    def __init__(self, protocol: _Resp) -> None:
        self._protocol = protocol

    @classmethod
    async def connect(cls, url: str, *, timeout: float, client_name: str) -> PubSubSocket:
        """Connect to ``redis://[user:password@]host[:port]`` (RESP2), authenticate and name
        the connection (``CLIENT SETNAME``), within ``timeout``."""
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _transport, protocol = await loop.create_connection(_Resp, parts.hostname or "localhost",
                                                                parts.port or 6379)
            socket = cls(protocol)
            try:
                if parts.password is not None:
                    user = unquote(parts.username) if parts.username else "default"
                    socket.send("AUTH", user, unquote(parts.password))
                    await socket._ok()
                socket.send("CLIENT", "SETNAME", client_name)
                await socket._ok()
            except BaseException:
                socket.close()
                raise
        return socket

    async def _ok(self) -> None:
        replies: list[Any] = []
        while not replies:
            replies = await self.replies(None)
        (reply,) = replies[:1]
        if isinstance(reply, Exception):
            raise reply

    def send(self, *parts: bytes | str | int) -> None:
        """Write one command now; raises ``ConnectionError`` when the socket is gone."""
        protocol = self._protocol
        if protocol.lost is not None:
            raise protocol.lost
        assert protocol.transport is not None
        protocol.transport.write(pack_command(*parts))

    async def replies(self, timeout: float | None) -> list[Any]:
        """Every complete reply received so far, waiting up to ``timeout`` for one; ``[]``
        on timeout. Raises once the connection is lost and nothing is left to read."""
        protocol = self._protocol
        if not protocol.replies:
            if protocol.lost is not None:
                raise protocol.lost
            loop = asyncio.get_running_loop()
            waiter = protocol.waiter = loop.create_future()
            timer = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
            try:
                await waiter
            finally:
                protocol.waiter = None
                if timer is not None:
                    timer.cancel()
            if not protocol.replies and protocol.lost is not None:
                raise protocol.lost
        replies, protocol.replies = protocol.replies, []
        return replies

    def close(self) -> None:
        transport = self._protocol.transport
        if transport is not None:
            transport.abort()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


__all__ = ["PubSubSocket"]
