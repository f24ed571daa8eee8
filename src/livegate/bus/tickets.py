"""Single-use tickets shared by every gateway process (asyncapi.yaml ``sseStream``,
openapi.yaml ``createSseTicket``): a value stored under a random name for a short time and
taken at most once.

One small interface, two backends: :class:`MemoryTickets` (the embedded default: one
process) and :class:`livegate.bus.redis.tickets.RedisTickets` (``SET NX PX`` to put,
``GETDEL`` to take, so a ticket issued by one process is taken once by any other). The
value is opaque bytes; the app decides what a ticket stands for.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict

#: Tickets held at most by the memory store; the oldest goes first past it.
MAX_MEMORY_TICKETS = 100_000


class TicketStore(ABC):
    async def start(self) -> None:  # noqa: B027 - optional
        """Connect (a store that needs nothing does nothing)."""

    async def stop(self) -> None:  # noqa: B027 - optional
        """Disconnect."""

    @abstractmethod
    async def put(self, name: str, value: bytes, ttl_seconds: float) -> None:
        """Keep ``value`` under ``name`` for ``ttl_seconds``. Raises
        :class:`~livegate.errors.BusUnavailable` when the store cannot be reached."""

    @abstractmethod
    async def take(self, name: str) -> bytes | None:
        """The value, removed atomically (a second take of one name gets ``None``, on any
        process); ``None`` when unknown or expired."""


class MemoryTickets(TicketStore):
    """One process's tickets. Deadlines follow insertion order closely (one TTL for all),
    so expired entries are dropped from the front on every put: bounded work and memory."""

    def __init__(self) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    async def put(self, name: str, value: bytes, ttl_seconds: float) -> None:
        now = time.monotonic()
        entries = self._entries
        while entries:
            oldest, (deadline, _) = next(iter(entries.items()))
            if deadline > now and len(entries) < MAX_MEMORY_TICKETS:
                break
            del entries[oldest]
        entries[name] = (now + ttl_seconds, value)

    async def take(self, name: str) -> bytes | None:
        entry = self._entries.pop(name, None)
        if entry is None or entry[0] <= time.monotonic():
            return None
        return entry[1]


__all__ = ["MAX_MEMORY_TICKETS", "MemoryTickets", "TicketStore"]
