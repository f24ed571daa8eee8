"""Requests between gateway processes over Redis pub/sub (:class:`~livegate.bus.relay.Relay`).

Every process subscribes to its own channel ``lg:relay:<node>``. A request is
``Q <id> <from-node>\\n<payload>`` published on the target's channel; ``PUBLISH`` says how
many subscribers got it, so a node that is gone answers ``None`` at once. The target's
handler answers with ``A <id>\\n<answer>`` on the caller's channel, where a future waits
(bounded by the caller's timeout). Pub/sub keeps one publisher's messages in order, so two
requests of one caller reach the target in the order they were sent.

The listener reconnects (and resubscribes) by itself with a bounded backoff; while it is
down this node answers nothing (callers time out with ``BusUnavailable``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from livegate.bus.redis.address import redis_client
from livegate.bus.redis.errors import TRANSIENT, unavailable
from livegate.bus.relay import Handler, Relay
from livegate.errors import BusUnavailable

log = logging.getLogger("livegate.bus.relay")


class RedisRelay(Relay):
    def __init__(self, url: str, node: str, *, key_prefix: str = "lg", socket_timeout: float = 1.5,
                 connect_timeout: float = 1.0, reconnect_delays: tuple[float, float] = (0.05, 2.0)) -> None:
        super().__init__(node)
        self._url = url
        self._prefix = key_prefix
        self._settings: dict[str, Any] = {"socket_connect_timeout": connect_timeout, "retry": Retry(NoBackoff(), 0)}
        self._socket_timeout = socket_timeout
        self._client = self._commands()
        self._delays = reconnect_delays
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    def _channel(self, node: str) -> str:
        return f"{self._prefix}:relay:{node}"

    def _commands(self) -> Redis:
        return redis_client(self._url, socket_timeout=self._socket_timeout, client_name=f"livegate:relay:{self.node}",
                            **self._settings)

    async def start(self, handler: Handler) -> None:
        await super().start(handler)
        self._client = self._commands()  # again after a stop (an app's lifespan may run twice)
        self._listener = asyncio.get_running_loop().create_task(self._listen(), name=f"relay-{self.node}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2.0):  # start even when Redis is down: the listener retries
                await self._subscribed.wait()

    async def stop(self) -> None:
        await super().stop()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None
        await self._client.aclose()

    async def call(self, node: str, payload: bytes, timeout: float) -> bytes | None:
        if node == self.node:
            return self.local(payload)
        request_id = secrets.token_hex(8)
        future = self._pending[request_id] = asyncio.get_running_loop().create_future()
        try:
            try:
                receivers = await self._client.publish(self._channel(node),
                                                       f"Q {request_id} {self.node}\n".encode() + payload)
            except TRANSIENT as exc:
                raise unavailable("relay", exc) from exc
            if not receivers:
                return None
            try:
                async with asyncio.timeout(timeout):
                    answer: bytes = await future
                    return answer
            except TimeoutError:
                raise BusUnavailable(f"No answer from node {node} within {timeout:g} s") from None
        finally:
            self._pending.pop(request_id, None)

    # -- the listener ---------------------------------------------------------------------

    async def _listen(self) -> None:
        delay = self._delays[0]
        while True:
            # A dedicated connection per attempt: no socket timeout while waiting for messages.
            client = redis_client(self._url, client_name=f"livegate:relay:{self.node}:sub",
                                  health_check_interval=10, **self._settings)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel(self.node))
                self._subscribed.set()
                delay = self._delays[0]
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        await self._received(bytes(message["data"]))
            except asyncio.CancelledError:
                raise
            except TRANSIENT as exc:
                log.warning("relay subscriber lost Redis (%s); reconnecting in %.2f s", exc, delay)
            finally:
                self._subscribed.clear()
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._delays[1])

    async def _received(self, data: bytes) -> None:
        head, _, body = data.partition(b"\n")
        parts = head.decode(errors="replace").split(" ")
        if parts[0] == "A" and len(parts) == 2:
            future = self._pending.get(parts[1])
            if future is not None and not future.done():
                future.set_result(body)
        elif parts[0] == "Q" and len(parts) == 3:
            answer = self.local(body)
            if answer is None:
                return
            with contextlib.suppress(*TRANSIENT):
                await self._client.publish(self._channel(parts[2]), f"A {parts[1]}\n".encode() + answer)


__all__ = ["RedisRelay"]
