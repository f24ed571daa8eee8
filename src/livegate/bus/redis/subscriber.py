"""The subscriber: this process's one pub/sub connection and the state of every stream it
listens to (the fan-out side of :class:`livegate.bus.redis.RedisBus`).

One *reader* task owns the connection (:class:`~livegate.bus.redis.pubsub.PubSubSocket`) and
is the only place that calls listeners, so each stream's listeners see offsets in order. It
keeps the last offset dispatched per stream: an older offset is a duplicate and dropped; a
newer one than ``last + 1`` means pub/sub lost messages, and the gap is read from the stream
and dispatched first. After a reconnect every stream is back-filled from its last offset. A
stream whose position is void (new epoch, or the missing events were trimmed) is *reset*:
``on_reset`` is called with its name so the app can close those connections.

A subscription that dies silently is caught by a probe: every ``probe_interval`` the bus
PUBLISHes on its probe channel and must see it come back within ``probe_timeout`` (a PUBLISH
that reaches 0 receivers fails at once); otherwise the connection is replaced. A connection
whose SUBSCRIBEs are not confirmed within ``probe_timeout`` is replaced too. Until the
subscriber is confirmed and back-filled, :attr:`Subscriber.subscribed` is ``False``.

Per stream::

    state      on                          -> state      does
    ---------  --------------------------  ---------  ------------------------------------
    waiting    SUBSCRIBE confirmed          baseline   read the stream's position
    baseline   position read                live       replay the buffered messages
    live       message at last + 1          live       dispatch
    live       message at or below last     live       drop (duplicate)
    live       message above last + 1       live       read the gap, dispatch it, then it
    live       other epoch / gap trimmed    live       reset (on_reset), continue from it
    live       reconnect                    live       back-fill from last
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from livegate.bus.base import Listener, StreamEvent, Subscription, splice_position
from livegate.bus.redis import wire
from livegate.bus.redis.commands import Commands
from livegate.bus.redis.errors import RECONNECT, TRANSIENT, Stale, unavailable
from livegate.bus.redis.pubsub import PubSubSocket
from livegate.errors import BusUnavailable

log = logging.getLogger("livegate.bus.redis")

Read = tuple[str, int, int, list[Any]]  # epoch, top, first_available, rows oldest first


class StreamState:
    """One stream this process listens to: its listeners and the last position dispatched."""

    __slots__ = ("buffer", "channel", "confirmed", "confirmed_gen", "epoch", "establish", "last", "last_body",
                 "listeners", "stream")

    def __init__(self, stream: str, channel: bytes) -> None:
        self.stream = stream
        self.channel = channel
        self.listeners: list[Listener] = []
        self.epoch = ""
        self.last = 0
        # The body dispatched at `last` (b"" when `last` was only read as a top): its
        # timestamp goes with every read from `last`, so a stream rewound and written again
        # past it is told apart (scripts/read.lua).
        self.last_body = b""
        # Messages that arrive before the baseline is known wait here (None once known).
        self.buffer: list[tuple[str, int, float, str | None, bytes]] | None = []
        self.confirmed = asyncio.Event()
        self.confirmed_gen = 0
        self.establish: asyncio.Task[None] | None = None


class _Subscription(Subscription):
    def __init__(self, subscriber: Subscriber, state: StreamState, listener: Listener) -> None:
        self._subscriber, self._state, self._listener = subscriber, state, listener
        self._closed = False

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._subscriber.remove_listener(self._state, self._listener)


class Subscriber:
    def __init__(
        self,
        commands: Commands,
        *,
        channel_of: Callable[[str], bytes],
        read: Callable[[str, int | None, str | None, str | None], Awaitable[Read]],
        read_args: Callable[[str, int | None, str | None, str | None], tuple[list[str], list[Any]]],
        parse_read: Callable[[list[Any]], Read],
        check_history: Callable[[], Awaitable[None]],
        on_reset: Callable[[str], None],
        client_name: str,
        key_prefix: str,
        socket_timeout: float,
        connect_timeout: float,
        probe_interval: float,
        probe_timeout: float,
        reconnect_delays: tuple[float, float],
        poll_interval: float,
        stats: dict[str, int],
    ) -> None:
        self._commands = commands
        self._channel_of = channel_of
        self._read = read
        self._read_args = read_args
        self._parse_read = parse_read
        self._check_history = check_history
        self._on_reset = on_reset
        self._client_name = client_name
        self._timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._reconnect_delays = reconnect_delays
        self._poll = poll_interval
        self.stats = stats
        self._probe_channel = f"{key_prefix}:probe:{secrets.token_hex(8)}".encode()
        self._streams: dict[str, StreamState] = {}
        self._by_channel: dict[bytes, StreamState] = {}
        self._socket: PubSubSocket | None = None
        self._generation = 0
        self._confirms: deque[StreamState | None] = deque()  # SUBSCRIBE replies expected, in order
        self._initial_pending = 0
        self.subscribed = False  # connected, every channel confirmed, back-filled
        self.subscribed_changed = asyncio.Event()  # set whenever subscribed turns True
        self._resync: set[str] = set()
        self._force_reconnect = False
        self._probe_sent: tuple[bytes, float] | None = None
        self._probe_seq = 0
        self._down_since: float | None = None  # monotonic time the subscriber was lost
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._reader(), name="redis-bus-reader"),
            asyncio.create_task(self._prober(), name="redis-bus-prober"),
        ]

    async def stop(self) -> None:
        tasks = self._tasks + [s.establish for s in self._streams.values() if s.establish]
        self._tasks = []
        for task in tasks:
            task.cancel()
        if tasks:
            # Bounded: a task that does not end on cancel is reported, not waited on forever.
            _done, stuck = await asyncio.wait(tasks, timeout=5.0)
            for task in stuck:
                log.error("redis bus task %s did not stop on cancel", task.get_name())
        self._streams.clear()
        self._by_channel.clear()
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    # -- listeners ------------------------------------------------------------------------

    async def subscribe(self, stream: str, listener: Listener) -> Subscription:
        """Returns once Redis confirmed the SUBSCRIBE and the stream's current position is
        known: every event published after that reaches ``listener``."""
        state = self._streams.get(stream)
        if state is None:
            state = self._streams[stream] = StreamState(stream, self._channel_of(stream))
            self._by_channel[state.channel] = state
            state.establish = asyncio.create_task(self._establish(state), name=f"redis-bus-sub-{stream}")
            self._send_subscription("SUBSCRIBE", state)  # otherwise the next (re)connect subscribes it
        state.listeners.append(listener)
        try:
            assert state.establish is not None
            await asyncio.shield(state.establish)
        except BaseException as exc:
            self.remove_listener(state, listener)
            if isinstance(exc, TRANSIENT) and not isinstance(exc, BusUnavailable):
                raise unavailable("subscribe", exc) from exc
            raise
        return _Subscription(self, state, listener)

    def remove_listener(self, state: StreamState, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            state.listeners.remove(listener)
        if state.listeners or self._streams.get(state.stream) is not state:
            return
        del self._streams[state.stream]
        self._by_channel.pop(state.channel, None)
        self._resync.discard(state.stream)
        if state.establish is not None and not state.establish.done():
            state.establish.cancel()
        self._send_subscription("UNSUBSCRIBE", state)

    def _send_subscription(self, command: str, state: StreamState) -> None:
        socket = self._socket
        if socket is None:
            return  # the next connection subscribes every stream
        if command == "SUBSCRIBE":
            self._confirms.append(state)
        try:
            socket.send(command, state.channel)  # synchronous: the expected replies stay in order
        except TRANSIENT:
            self._force_reconnect = True  # the reconnect subscribes every stream again

    async def _establish(self, state: StreamState) -> None:
        """Wait for the SUBSCRIBE confirmation, then take the baseline position."""
        try:
            async with asyncio.timeout(self._timeout + self._connect_timeout):
                await state.confirmed.wait()
        except TimeoutError:
            raise BusUnavailable("Redis did not confirm the subscription in time") from None
        epoch, top, _first, _rows = await self._read(state.stream, None, None, None)
        state.epoch, state.last, state.last_body = epoch, top, b""
        buffered, state.buffer = state.buffer or [], None
        for message in buffered:
            if not self._on_message(state, *message):
                self._resync.add(state.stream)  # the reader reads the rest from history
                break
        if state.confirmed_gen != self._generation:
            # The connection was replaced after the confirmation: its back-fill skipped us.
            self._resync.add(state.stream)

    # -- the reader: the one pub/sub connection ------------------------------------------

    async def _reader(self) -> None:
        low, high = self._reconnect_delays
        delay = low
        while True:
            socket: PubSubSocket | None = None
            try:
                socket = await self._connect()
                delay = low
                await self._pump(socket)
            except asyncio.CancelledError:
                raise
            except RECONNECT as exc:
                # Warn once per outage (retries go to debug); _on_confirm logs the recovery.
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning("redis pub/sub connection lost: %s; retrying", exc or type(exc).__name__)
                else:
                    log.debug("redis pub/sub still down: %s", exc or type(exc).__name__)
            finally:
                self.subscribed = False
                self._socket = None
                if socket is not None:
                    socket.close()
            self.stats["reconnects"] += 1
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(high, delay * 2)

    async def _connect(self) -> PubSubSocket:
        async with asyncio.timeout(self._connect_timeout + self._timeout):
            url = await self._commands.primary_url()  # the configured one, or Sentinel's primary
        socket = await PubSubSocket.connect(url, timeout=self._connect_timeout + self._timeout,
                                            client_name=self._client_name)
        self._generation += 1
        self._force_reconnect = False
        self._probe_sent = None
        self._confirms.clear()
        states = list(self._streams.values())
        self._confirms.append(None)  # the probe channel
        self._confirms.extend(states)
        self._initial_pending = 1 + len(states)
        self._socket = socket
        channels = [self._probe_channel, *(s.channel for s in states)]
        for start in range(0, len(channels), 1000):
            socket.send("SUBSCRIBE", *channels[start:start + 1000])
        return socket

    async def _pump(self, socket: PubSubSocket) -> None:
        # Confirmations come at Redis speed; allow more for a process holding many streams.
        confirm_by = time.monotonic() + self._probe_timeout + self._initial_pending / 20_000
        while True:
            if not self.subscribed and time.monotonic() > confirm_by:
                # The socket connected but SUBSCRIBE is not answered (a one-way partition):
                # without this the reader would wait forever, deaf and unready.
                self.stats["stale"] += 1
                raise Stale(f"subscriptions not confirmed within {self._probe_timeout}s")
            if self._force_reconnect:
                raise Stale("subscription gone (probe reached no subscriber)")
            sent = self._probe_sent
            if sent is not None and time.monotonic() - sent[1] > self._probe_timeout:
                self.stats["stale"] += 1
                raise Stale(f"probe not received within {self._probe_timeout}s")
            if self.subscribed and self._resync:
                for stream in list(self._resync):
                    self._resync.discard(stream)
                    state = self._streams.get(stream)
                    if state is not None and state.buffer is None:
                        await self._fill(state)
            for reply in await socket.replies(self._poll):
                if isinstance(reply, Exception):
                    raise Stale(f"error reply on the pub/sub connection: {reply}")
                kind = reply[0]
                if kind == b"message":
                    await self._on_pubsub_message(reply[1], reply[2])
                elif kind == b"subscribe":
                    await self._on_confirm(reply[1])

    async def _on_confirm(self, channel: bytes) -> None:
        expected = self._confirms.popleft() if self._confirms else None
        if expected is not None:
            if expected.channel != channel:
                raise Stale(f"subscribe replies out of order ({channel!r})")
            expected.confirmed_gen = self._generation
            expected.confirmed.set()
        if self._initial_pending > 0:
            self._initial_pending -= 1
            if self._initial_pending == 0:
                await self._backfill_all()
                self.subscribed = True
                self.subscribed_changed.set()
                if self._down_since is not None:
                    log.warning("redis pub/sub re-established after %.1fs; %d streams back-filled",
                                time.monotonic() - self._down_since, len(self._streams))
                    self._down_since = None

    async def _backfill_all(self) -> None:
        """After (re)subscribing: show the history guard this process's witness (Redis may
        have come back rewound), then read every established stream from its last offset."""
        await self._check_history()
        states = [s for s in self._streams.values() if s.buffer is None]
        for start in range(0, len(states), 200):
            chunk = states[start:start + 200]
            # With its epoch: a stream found below what was dispatched (rewound) starts a new
            # epoch at once (read.lua), before publishes could reuse the offsets.
            calls = [self._read_args(s.stream, s.last, s.epoch, wire.body_timestamp(s.last_body)) for s in chunk]
            results = await self._commands.eval_many(wire.READ_SCRIPT, calls)
            for state, result in zip(chunk, results, strict=True):
                if isinstance(result, Exception):
                    raise result
                if self._streams.get(state.stream) is state:
                    self._apply_read(state, self._parse_read(result))

    async def _fill(self, state: StreamState) -> None:
        read = await self._read(state.stream, state.last, state.epoch, wire.body_timestamp(state.last_body))
        if self._streams.get(state.stream) is state:
            self._apply_read(state, read)

    def _apply_read(self, state: StreamState, read: Read) -> None:
        epoch, top, first, rows = read
        if epoch != state.epoch or top < state.last or (top > state.last and first > state.last + 1):
            self._reset(state, epoch, top)  # new epoch, rewound, or the gap was trimmed away
            return
        for row in rows:
            event = wire.event_from_row(row, epoch)
            if event.offset == state.last + 1:
                self.stats["backfilled"] += 1
                state.last_body = row[1][3]
                self._dispatch(state, event)

    async def _on_pubsub_message(self, channel: bytes, data: bytes) -> None:
        if channel == self._probe_channel:
            sent = self._probe_sent
            if sent is not None and sent[0] == data:
                self._probe_sent = None
            return
        state = self._by_channel.get(channel)
        if state is None:
            return  # unsubscribed meanwhile
        message = wire.parse_message(data)
        if self._on_message(state, *message):
            return
        await self._fill(state)
        if self._streams.get(state.stream) is state and not self._on_message(state, *message):
            log.error("stream %s: offset %d still ahead of history; resetting", state.stream, message[1])
            self._reset(state, message[0], message[1] - 1)
            self._on_message(state, *message)

    def _on_message(
        self, state: StreamState, epoch: str, offset: int, published_at: float, key: str | None, body: bytes
    ) -> bool:
        """Handle one live message; ``False`` when it is ahead of ``last + 1`` (a gap)."""
        if state.buffer is not None:
            if len(state.buffer) < 10_000:
                state.buffer.append((epoch, offset, published_at, key, body))
            else:
                self._resync.add(state.stream)
            return True
        if epoch != state.epoch:
            self._reset(state, epoch, offset - 1)
        elif offset <= state.last:
            self.stats["duplicates"] += 1
            return True
        elif offset > state.last + 1:
            return False
        state.last_body = body
        self._dispatch(state, StreamEvent(offset, splice_position(body, epoch, offset), key, published_at))
        return True

    def _dispatch(self, state: StreamState, event: StreamEvent) -> None:
        state.last = event.offset
        for listener in tuple(state.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("listener of stream %s failed", state.stream)

    def _reset(self, state: StreamState, epoch: str, top: int) -> None:
        log.warning("stream %s reset: epoch %s -> %s, position %d", state.stream, state.epoch, epoch, top)
        state.epoch, state.last, state.last_body = epoch, top, b""
        self.stats["resets"] += 1
        try:
            self._on_reset(state.stream)
        except Exception:
            log.exception("on_stream_reset(%s) failed", state.stream)

    # -- the probe ------------------------------------------------------------------------

    async def _prober(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval)
            if not self.subscribed or self._probe_sent is not None:
                continue
            self._probe_seq += 1
            token = str(self._probe_seq).encode()
            self._probe_sent = (token, time.monotonic())
            try:
                receivers = await self._commands.publish_probe(self._probe_channel, token)
            except TRANSIENT:
                self._probe_sent = None  # Redis itself is unreachable: `bus` health says so
                continue
            if receivers == 0 and self._probe_sent is not None:
                self.stats["stale"] += 1
                self._force_reconnect = True


__all__ = ["StreamState", "Subscriber"]
