"""Requests between gateway processes, addressed to a process (a *node*), answered once.

The SSE wire needs it (asyncapi.yaml ``sseStream``, openapi.yaml ``sendSseMessage``): a
client message POSTed to any process must reach the one holding the stream, and its HTTP
answer (202, or 404 for an unknown connection) comes from that process. This is
Centrifugo's bidirectional emulation, where a node forwards the client's command to the
node of the session over the broker.

One small interface, two backends: :class:`LocalRelay` (one process: only its own node
exists) and :class:`livegate.bus.redis.relay.RedisRelay` (a pub/sub channel per node).
Payloads are opaque bytes; the handler (sync, on the event loop, must not block) answers
each with bytes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

Handler = Callable[[bytes], bytes]


class Relay(ABC):
    def __init__(self, node: str) -> None:
        self.node = node
        self.handler: Handler | None = None

    async def start(self, handler: Handler) -> None:
        """Answer requests addressed to :attr:`node` with ``handler`` from now on."""
        self.handler = handler

    async def stop(self) -> None:
        self.handler = None

    def local(self, payload: bytes) -> bytes | None:
        handler = self.handler
        return None if handler is None else handler(payload)

    @abstractmethod
    async def call(self, node: str, payload: bytes, timeout: float) -> bytes | None:
        """The answer of ``node``'s handler to ``payload``; ``None`` when no such node
        listens. Raises :class:`~livegate.errors.BusUnavailable` when the relay cannot
        reach it (down, or no answer within ``timeout``)."""


class LocalRelay(Relay):
    """One process: its own node answers, no other node exists."""

    async def call(self, node: str, payload: bytes, timeout: float) -> bytes | None:
        return self.local(payload) if node == self.node else None


__all__ = ["Handler", "LocalRelay", "Relay"]
