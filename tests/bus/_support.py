"""Helpers for the bus tests: polling with a deadline, a fake clock, a bus factory per backend."""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from livegate.bus.base import Bus, StreamEvent
from livegate.bus.memory import MemoryBus
from livegate.bus.redis import RedisBus
from livegate.bus.sharded import ShardedBus
from livegate.testing.redis_server import RedisServer


async def eventually(
    check: Callable[[], bool | Awaitable[bool]], *, timeout: float = 5.0, interval: float = 0.01, what: str = ""
) -> None:
    """Poll ``check`` until it is true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"not true within {timeout}s: {what or check}")
        await asyncio.sleep(interval)


def stream_name(tag: str = "u") -> str:
    """A fresh stream (user) name: tests never share streams."""
    return f"{tag}-{uuid.uuid4().hex[:12]}"


class Recorder:
    """A listener that keeps what it receives."""

    def __init__(self) -> None:
        self.events: list[StreamEvent] = []

    def __call__(self, event: StreamEvent) -> None:
        self.events.append(event)

    @property
    def offsets(self) -> list[int]:
        return [e.offset for e in self.events]

    async def wait_for(self, offset: int, timeout: float = 5.0) -> None:
        await eventually(lambda: bool(self.events) and self.events[-1].offset >= offset,
                         timeout=timeout, what=f"offset {offset} delivered (have {self.offsets[-5:]})")


def assert_contiguous(offsets: list[int], first: int, last: int) -> None:
    assert offsets == list(range(first, last + 1)), f"expected {first}..{last}, got {offsets}"


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class BusKit:
    """Makes buses of one backend for one test, and knows that backend's notion of time and
    data loss. Every bus it makes is stopped at the end of the test."""

    def __init__(self, kind: str, servers: list[RedisServer] | None = None) -> None:
        self.kind = kind
        self.servers = list(servers or [])
        self.clock = FakeClock()
        self._buses: list[Bus] = []

    async def make(self, **settings: Any) -> Bus:
        bus: Bus
        if self.kind == "memory":
            bus = MemoryBus(clock=self.clock, **settings)
        elif self.kind == "redis":
            bus = RedisBus(self.servers[0].url, **settings)
        else:  # redis-sharded: users spread over two independent servers
            bus = ShardedBus([RedisBus(server.url, **settings) for server in self.servers])
        self._buses.append(bus)
        await bus.start()
        return bus

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for history ageing: the fake clock for memory; real time for
        Redis (whose clock is its own)."""
        if self.kind == "memory":
            self.clock.advance(seconds)
        else:
            await asyncio.sleep(seconds)

    async def lose_data(self, bus: Bus, **settings: Any) -> Bus:
        """What a restart without persistence does: a new MemoryBus; Redis FLUSHALL."""
        if self.kind == "memory":
            return await self.make(**settings)
        for server in self.servers:
            client = aioredis.Redis.from_url(server.url)
            try:
                await client.flushall()
            finally:
                await client.aclose()
        return bus

    async def close(self) -> None:
        for bus in self._buses:
            await bus.stop()
