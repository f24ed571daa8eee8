"""The small interface every bus implements (memory and Redis share one conformance suite).

A *stream* (one per user) is a sequence of events with an ``epoch`` and offsets 1, 2, 3, ...
A publisher hands the bus a JSON object body; the bus assigns the next offset atomically,
splices ``"epoch"`` and ``"offset"`` into the body once, keeps it in bounded history and
hands the same text to every local listener of the stream, in offset order, without gaps
or duplicates.

Errors: a bus that cannot publish or read raises :class:`livegate.errors.BusUnavailable`;
an event it reports as published is in history and will reach every listener.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence

import msgspec

# The values handed along the publish and fan-out path are msgspec Structs, not frozen
# dataclasses: a frozen dataclass's __init__ sets each field through object.__setattr__
# (~0.35 us per object, three objects per published event, measured in bench/README.md);
# a Struct's is ~0.01 us. gc=False: they hold only atomic values, never a cycle.


class StreamEvent(msgspec.Struct, frozen=True, gc=False):
    offset: int
    data: str  # the whole frame, with epoch and offset in it
    conflation_key: str | None = None
    published_at: float = 0.0  # wall clock (time.time()) when the bus accepted it


class Position(msgspec.Struct, frozen=True, gc=False):
    epoch: str
    offset: int


class PublishItem(msgspec.Struct, frozen=True, gc=False):
    stream: str
    body: bytes  # a JSON object without epoch/offset
    conflation_key: str | None = None


class ReadResult(msgspec.Struct, frozen=True):
    """One atomic look at a stream: its epoch, newest offset, oldest offset still kept
    (``top + 1`` when history is empty) and the events after the asked offset (a page of
    them when the read was bounded, see :meth:`Bus.read`)."""

    epoch: str
    top: int
    first_available: int
    events: list[StreamEvent]


Listener = Callable[[StreamEvent], None]


class Subscription(ABC):
    @abstractmethod
    async def close(self) -> None: ...


def page_of(events: Iterable[StreamEvent], limit: int | None, max_bytes: int | None) -> list[StreamEvent]:
    """The first events of ``events`` within a page's bounds (see :meth:`Bus.read`)."""
    page: list[StreamEvent] = []
    size = 0
    for event in events:
        size += len(event.data)
        if (limit is not None and len(page) >= limit) or (max_bytes is not None and page and size > max_bytes):
            break
        page.append(event)
    return page


def splice_position(body: bytes, epoch: str, offset: int) -> str:
    """Put ``epoch`` and ``offset`` first in a JSON object body (once per event)."""
    if body[:1] != b"{" or len(body) < 3:
        raise ValueError("event body must be a non-empty JSON object")
    return f'{{"epoch":"{epoch}","offset":{offset},{body[1:].decode()}'



class LocalFanout:
    """Listeners of this process, per stream. Listeners must not block."""

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}

    def add(self, stream: str, listener: Listener) -> bool:
        """Add; return ``True`` when it is the stream's first local listener."""
        listeners = self._listeners.setdefault(stream, [])
        listeners.append(listener)
        return len(listeners) == 1

    def remove(self, stream: str, listener: Listener) -> bool:
        """Remove; return ``True`` when the stream has no local listener left."""
        listeners = self._listeners.get(stream)
        if not listeners:
            return False
        try:
            listeners.remove(listener)
        except ValueError:
            return False
        if not listeners:
            del self._listeners[stream]
            return True
        return False

    def streams(self) -> list[str]:
        return list(self._listeners)

    def has(self, stream: str) -> bool:
        return stream in self._listeners

    def dispatch(self, stream: str, event: StreamEvent) -> None:
        for listener in tuple(self._listeners.get(stream, ())):
            listener(event)


class Bus(ABC):
    #: Called (synchronously, must not block) with a stream's name when the position of its
    #: live listeners became void (its history was lost: a new epoch). The listeners keep
    #: receiving the new epoch's events; the app closes their connections so they reconnect
    #: and get ``recovered: false``. A bus whose history cannot be lost behind its back
    #: (memory) never calls it.
    on_stream_reset: Callable[[str], None] | None = None

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @abstractmethod
    async def publish(self, items: Sequence[PublishItem]) -> list[Position]:
        """Append each item to its stream, in order; return their positions.

        Items of one stream are appended in the given order. On failure raises
        ``BusUnavailable`` whose ``published`` attribute lists the positions of the
        items appended before the failure (a prefix of ``items``).
        """

    @abstractmethod
    async def read(self, stream: str, after: int | None, *, limit: int | None = None,
                   max_bytes: int | None = None, claimed_epoch: str | None = None,
                   claimed_timestamp: str | None = None) -> ReadResult:
        """Events with offset > ``after`` (none when ``after`` is None), atomically with the
        stream's epoch, top and first available offset.

        A page: at most ``limit`` events, the oldest first, and no more than ``max_bytes`` of
        frames (but at least one event); ``None`` = no bound. A replay reads page after page
        (``after`` = the last offset of the previous page) and checks the epoch and the first
        offset of each.

        ``claimed_epoch``: the epoch a resuming client holds ``after`` in. When it is the
        stream's and ``after`` is above its top, the stream was rewound behind the client's
        back; a bus whose history can be rewound (Redis) then starts the stream's new epoch
        in the same atomic step, so the offsets the client saw are never handed out again
        in the epoch it knows.

        ``claimed_timestamp``: the ``timestamp`` of the event the client holds at ``after``
        (asyncapi.yaml ``StreamPosition.timestamp``). When the claim is of the stream's epoch
        and the stream holds another event there, it was rewound and written again past the
        client's position: the same new epoch, for the same reason."""

    @abstractmethod
    async def subscribe(self, stream: str, listener: Listener) -> Subscription:
        """Deliver every event published from now on (once this returns) to ``listener``."""

    @abstractmethod
    async def health(self) -> dict[str, bool]:
        """Named readiness checks; all ``True`` when the bus can deliver."""

    def counters(self) -> dict[str, int]:
        """Monotonic counts of what the bus recovered from (reconnects, back-filled events,
        dropped duplicates, stream resets...), exported on ``/metrics``. None by default."""
        return {}
