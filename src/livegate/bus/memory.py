"""The embedded bus: per-user ring buffers in this process's memory.

A stream's epoch is random and made when the stream is first touched, so a process
restart (which loses history) gives every stream a new epoch and resuming clients get
``recovered: false`` instead of a silent gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from livegate.bus.base import (
    Bus,
    Listener,
    LocalFanout,
    Position,
    PublishItem,
    ReadResult,
    StreamEvent,
    Subscription,
    page_of,
    splice_position,
)

# History entries are plain tuples of atomic values, ``(accepted_at, offset, data,
# conflation_key, published_at)``, not StreamEvents: the GC stops tracking such tuples, so a
# full history (1000 events x every user) costs full collections nothing. With dataclass
# entries each gen-2 collection walked them all (~150 ms pauses under load, measured in bench/).
_Entry = tuple[float, int, str, "str | None", float]


@dataclass(slots=True)
class _Stream:
    epoch: str
    top: int = 0
    # Bounded in count by the deque itself (an append past maxlen drops the oldest), in age by
    # _trim. None until the first event, and again once everything aged out (sweep): an empty
    # deque is ~600 bytes, and most streams of connected users hold nothing most of the time
    # (bench/README.md, memory per idle connection).
    history: deque[_Entry] | None = None


class _MemorySubscription(Subscription):
    def __init__(self, fanout: LocalFanout, stream: str, listener: Listener) -> None:
        self._fanout, self._stream, self._listener = fanout, stream, listener

    async def close(self) -> None:
        self._fanout.remove(self._stream, self._listener)


class MemoryBus(Bus):
    def __init__(
        self,
        *,
        max_events: int = 1000,
        max_age_seconds: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_events = max_events
        self.max_age = max_age_seconds
        self._clock = clock
        self._streams: dict[str, _Stream] = {}
        self._fanout = LocalFanout()
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever(), name="memory-bus-sweeper")

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    def _stream(self, name: str) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            stream = self._streams[name] = _Stream(epoch=secrets.token_hex(8))
        return stream

    def _trim(self, stream: _Stream, now: float) -> None:
        history = stream.history
        horizon = now - self.max_age
        while history and history[0][0] < horizon:
            history.popleft()

    async def publish(self, items: Sequence[PublishItem]) -> list[Position]:
        # No await inside: appending and fanning out is atomic in the event loop, which
        # is what keeps live delivery and history reads seamless. (Per event on the hot
        # path: the age trim runs only when the oldest entry is past the horizon.)
        now = self._clock()
        wall = time.time()
        horizon = now - self.max_age
        streams, dispatch = self._streams, self._fanout.dispatch
        positions = []
        for item in items:
            name, key = item.stream, item.conflation_key
            stream = streams.get(name) or self._stream(name)
            top = stream.top = stream.top + 1
            data = splice_position(item.body, stream.epoch, top)
            history = stream.history
            if history is None:
                history = stream.history = deque(maxlen=self.max_events)
            history.append((now, top, data, key, wall))
            if history[0][0] < horizon:
                self._trim(stream, now)
            positions.append(Position(stream.epoch, top))
            dispatch(name, StreamEvent(top, data, key, wall))
        return positions

    async def read(self, stream: str, after: int | None, *, limit: int | None = None,
                   max_bytes: int | None = None, claimed_epoch: str | None = None,
                   claimed_timestamp: str | None = None) -> ReadResult:
        # The claims: memory history is never rewound (a restart is a new epoch anyway).
        s = self._stream(stream)
        self._trim(s, self._clock())
        history = s.history or ()
        first = history[0][1] if history else s.top + 1
        events: list[StreamEvent] = []
        if after is not None:
            # Offsets in history are consecutive: skip straight to the first one after `after`.
            start = max(0, after + 1 - first)
            events = page_of((StreamEvent(offset, data, key, published)
                              for _, offset, data, key, published in itertools.islice(history, start, None)),
                             limit, max_bytes)
        return ReadResult(epoch=s.epoch, top=s.top, first_available=first, events=events)

    async def subscribe(self, stream: str, listener: Listener) -> Subscription:
        self._fanout.add(stream, listener)
        return _MemorySubscription(self._fanout, stream, listener)

    async def health(self) -> dict[str, bool]:
        return {"bus": True}

    def sweep(self) -> None:
        """Drop aged history, and the deque of a stream left with none."""
        now = self._clock()
        for name in list(self._streams):
            stream = self._streams[name]
            self._trim(stream, now)
            if stream.history is not None and not stream.history:
                stream.history = None  # everything aged out: give the deque back
            # An empty stream keeps its epoch and top (cheap) so that a client resuming at
            # `top` still recovers.

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, max(1.0, self.max_age / 10)))
            self.sweep()
