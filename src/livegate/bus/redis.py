"""The shared bus: per-user streams in Redis, fanned out to every gateway process.

Key layout (``{user}`` is a Redis Cluster hash tag: one user's keys and channel share a slot)::

    lg:{user}:m   hash    epoch, top                       TTL idle_ttl (refreshed on use)
    lg:{user}:s   stream  id <ms>-<seq> (Redis time) -> o offset, d body, k key, t published_at
                          trimmed to max_events (MAXLEN =) and max_age (MINID); TTL max_age+60s
    lg:{user}:c   channel one message per event: "<epoch> <offset> <published_at> <klen>\\n<k><body>"
    lg:probe:<process>    this process's liveness probe channel

Offsets are assigned by ``redis_wire.PUBLISH`` (Lua, EVALSHA), for every stream of one call: it
makes the epoch when the meta hash is gone (a new random epoch, so history lost in Redis
means ``recovered: false``), INCRs ``top``, XADDs, trims, sets TTLs and PUBLISHes, all
atomically, so the order of messages on the channel is the offset order. One call carries
the streams of up to ``wire.ITEMS_PER_CALL`` items (a plain Redis allows a script several
users' keys; on Redis Cluster the calls would be grouped by hash slot, see
docs/scaling.md). ``redis_wire.READ`` is the one atomic look behind :meth:`read`.

Fan-out: one pub/sub connection per process, owned by the *reader* task, which is also the
only place that calls listeners, so each stream's listeners see offsets in order. It keeps
the last offset dispatched per stream: an older offset is a duplicate and dropped; a newer
one than ``last + 1`` means pub/sub lost messages, and the gap is read from the stream
(XREVRANGE) and dispatched first. After a reconnect every stream is back-filled from its
last offset. A stream whose position is void (new epoch, or the missing events were
trimmed) is *reset*: :attr:`RedisBus.on_stream_reset` is called with its name so the app
can close those connections (they reconnect and get ``recovered: false``).

A subscription that dies silently is caught by a probe: every ``probe_interval`` the bus
PUBLISHes on its probe channel and must see it come back within ``probe_timeout``
(a PUBLISH that reaches 0 receivers fails at once); otherwise the connection is replaced.
A new connection whose SUBSCRIBEs are not confirmed within ``probe_timeout`` is replaced
too. Until the subscriber is confirmed and back-filled, ``health()["subscriber"]`` is
``False``, so ``/readyz`` fails while the process could not hear its streams.

Errors: every redis-py error is mapped to :class:`~livegate.errors.BusUnavailable` here.
Socket timeouts are short and no command is retried, so an outage fails fast and a
publish is never applied twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from livegate.bus import redis_wire as wire
from livegate.bus.base import (
    Bus,
    Listener,
    Position,
    PublishItem,
    ReadResult,
    StreamEvent,
    Subscription,
    splice_position,
)
from livegate.errors import BusUnavailable

__all__ = ["RedisBus"]

log = logging.getLogger("livegate.bus.redis")

class _Stale(Exception):
    """The pub/sub connection is open but no longer delivers (probe lost, or 0 receivers)."""


class _StreamState:
    """One stream this process listens to: its listeners and the last position dispatched."""

    __slots__ = (
        "buffer",
        "channel",
        "confirmed",
        "confirmed_gen",
        "epoch",
        "establish",
        "last",
        "listeners",
        "stream",
    )

    def __init__(self, stream: str, channel: bytes) -> None:
        self.stream = stream
        self.channel = channel
        self.listeners: list[Listener] = []
        self.epoch = ""
        self.last = 0
        # Messages that arrive before the baseline is known wait here (None once known).
        self.buffer: list[tuple[str, int, float, str | None, bytes]] | None = []
        self.confirmed = asyncio.Event()
        self.confirmed_gen = 0
        self.establish: asyncio.Task[None] | None = None


class _RedisSubscription(Subscription):
    def __init__(self, bus: RedisBus, state: _StreamState, listener: Listener) -> None:
        self._bus, self._state, self._listener = bus, state, listener
        self._closed = False

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._bus._remove_listener(self._state, self._listener)


def _complete_replies(conn: AbstractConnection, limit: int = 1000) -> list[Any]:
    """Replies already complete in the buffer of ``conn``'s hiredis parser (at most ``limit``),
    checked as redis-py's ``read_response`` checks them; none with another parser or a closed
    one (every reply then goes through ``read_response``). A partial reply stays buffered for
    the next ``read_response``, which waits for its rest under the pump's timeout. These are
    redis-py's parser internals: it is pinned to one minor in pyproject.toml, and
    tests/bus/test_redis_bus.py fails if they move."""
    parser = getattr(conn, "_parser", None)
    reader = getattr(parser, "_reader", None)
    if reader is None or not getattr(parser, "_connected", False):
        return []
    replies: list[Any] = []
    while len(replies) < limit:
        reply = reader.gets()
        if reply is NOT_ENOUGH_DATA:
            break
        if isinstance(reply, RedisConnectionError):
            raise reply
        if isinstance(reply, list) and reply and isinstance(reply[0], RedisConnectionError):
            raise reply[0]
        if isinstance(reply, ResponseError):
            raise reply
        replies.append(reply)
    return replies


class RedisBus(Bus):
    """:class:`~livegate.bus.base.Bus` on Redis (redis-py asyncio); see the module doc.

    :param on_stream_reset: called (synchronously, must not block) with a stream's name when
        live listeners' position became void; they keep receiving events after the reset.
    """

    def __init__(
        self,
        url: str,
        *,
        max_events: int = 1000,
        max_age_seconds: float = 600.0,
        idle_ttl_seconds: float = 86400.0,
        key_prefix: str = "lg",
        socket_timeout: float = 1.5,
        connect_timeout: float = 1.0,
        max_connections: int = 64,
        probe_interval: float = 2.0,
        probe_timeout: float = 3.0,
        reconnect_min_delay: float = 0.05,
        reconnect_max_delay: float = 2.0,
        poll_interval: float = 0.25,
        on_stream_reset: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.max_events = max_events
        self.max_age = max_age_seconds
        self.on_stream_reset = on_stream_reset
        self._prefix = key_prefix
        self._stream_ttl_ms = int((max_age_seconds + 60.0) * 1000)
        self._meta_ttl_ms = max(int(idle_ttl_seconds * 1000), self._stream_ttl_ms)
        self._timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._reconnect_delays = (reconnect_min_delay, reconnect_max_delay)
        self._poll = poll_interval
        self._probe_channel = f"{key_prefix}:probe:{secrets.token_hex(8)}".encode()
        # CLIENT LIST shows who is who: "livegate:<host>:<pid>" (commands), "...:sub" (pub/sub).
        self.client_name = f"livegate:{socket.gethostname()}:{os.getpid()}".replace(" ", "_")
        self._pool: BlockingConnectionPool | None = None
        self._sub_pool: ConnectionPool | None = None
        self._client: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # Fan-out state; only the reader task calls listeners.
        self._streams: dict[str, _StreamState] = {}
        self._by_channel: dict[bytes, _StreamState] = {}
        self._conn: AbstractConnection | None = None
        self._generation = 0
        self._send_lock = asyncio.Lock()
        self._confirms: deque[_StreamState | None] = deque()  # SUBSCRIBE replies expected, in order
        self._initial_pending = 0
        self._subscribed = False  # connected, every channel confirmed, back-filled
        self._subscribed_changed = asyncio.Event()  # set whenever _subscribed turns True
        self._resync: set[str] = set()
        self._force_reconnect = False
        self._probe_sent: tuple[bytes, float] | None = None
        self._probe_seq = 0
        self._down_since: float | None = None  # monotonic time the subscriber was lost
        self.stats = {"reconnects": 0, "backfilled": 0, "duplicates": 0, "resets": 0, "stale": 0}

    # -- names ----------------------------------------------------------------------------

    def _keys(self, stream: str) -> tuple[str, str]:
        return f"{self._prefix}:{{{stream}}}:m", f"{self._prefix}:{{{stream}}}:s"

    def _channel(self, stream: str) -> bytes:
        return f"{self._prefix}:{{{stream}}}:c".encode()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, *, wait: float | None = None) -> None:
        """Connect; wait (bounded, default ``connect_timeout * 2``) for the subscriber, but
        start even when Redis is down: health reports it and the reader keeps retrying."""
        common: dict[str, Any] = {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._connect_timeout,
            "retry": Retry(NoBackoff(), 0),
        }
        self._pool = BlockingConnectionPool.from_url(
            self.url, max_connections=self._max_connections, timeout=self._timeout,
            client_name=self.client_name, **common
        )
        self._sub_pool = ConnectionPool.from_url(self.url, protocol=2, client_name=self.client_name + ":sub",
                                                 **common)
        self._client = Redis(connection_pool=self._pool)
        self._tasks = [
            asyncio.create_task(self._reader(), name="redis-bus-reader"),
            asyncio.create_task(self._prober(), name="redis-bus-prober"),
        ]
        # Wait (bounded) for the first subscription; a bus that cannot subscribe yet still
        # starts, reports not ready, and keeps retrying in the reader.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout * 2 if wait is None else wait):
                while not self._subscribed:
                    self._subscribed_changed.clear()
                    await self._subscribed_changed.wait()

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
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        for pool in (self._pool, self._sub_pool):
            if pool is not None:
                await pool.disconnect()
        self._pool = self._sub_pool = None

    def counters(self) -> dict[str, int]:
        return dict(self.stats)

    async def health(self) -> dict[str, bool]:
        ok = False
        if self._client is not None:
            try:
                async with asyncio.timeout(self._timeout):
                    ok = bool(await self._client.ping())
            except (TimeoutError, RedisError, OSError):
                ok = False
        return {"bus": ok, "subscriber": self._subscribed}

    # -- publish and read -----------------------------------------------------------------

    async def publish(self, items: Sequence[PublishItem]) -> list[Position]:
        if not items:
            return []
        by_stream: dict[str, list[PublishItem]] = {}
        for item in items:
            if not item.body.startswith(b"{") or len(item.body) < 3:
                raise ValueError("event body must be a non-empty JSON object")
            by_stream.setdefault(item.stream, []).append(item)
        # One atomic script call per group of streams (up to wire.ITEMS_PER_CALL items) keeps each
        # stream's items in order; the groups are pipelined on one connection.
        groups: list[list[str]] = [[]]
        size = 0
        for stream, batch in by_stream.items():
            if groups[-1] and size + len(batch) > wire.ITEMS_PER_CALL:
                groups.append([])
                size = 0
            groups[-1].append(stream)
            size += len(batch)
        calls = [self._publish_args(group, by_stream) for group in groups]
        try:
            results = await self._eval_many(wire.PUBLISH_SCRIPT, calls)
        except (TimeoutError, RedisError, OSError) as exc:
            # The replies are lost: some calls may have been applied, none is reported.
            raise BusUnavailable(f"Redis publish failed: {exc}", published=[]) from exc
        firsts: dict[str, tuple[str, int] | Exception] = {}
        for group, result in zip(groups, results, strict=True):
            for j, stream in enumerate(group):
                firsts[stream] = result if isinstance(result, Exception) else (
                    wire.text(result[2 * j]), int(result[2 * j + 1]))
        positions: list[Position] = []
        seen: dict[str, int] = {}
        for item in items:
            first = firsts[item.stream]
            if isinstance(first, Exception):
                raise BusUnavailable(f"Redis publish failed: {first}", published=positions)
            index = seen[item.stream] = seen.get(item.stream, 0) + 1
            positions.append(Position(first[0], first[1] + index - 1))
        return positions

    def _publish_args(self, group: list[str], by_stream: dict[str, list[PublishItem]]) -> tuple[list[str], list[Any]]:
        keys: list[str] = []
        args: list[Any] = [self.max_events, int(self.max_age * 1000), self._meta_ttl_ms, self._stream_ttl_ms]
        for stream in group:
            batch = by_stream[stream]
            keys.extend(self._keys(stream))
            args += (secrets.token_hex(8), self._channel(stream), len(batch))
            for item in batch:
                args.append(item.body)
                args.append("-" if item.conflation_key is None else "+" + item.conflation_key)
        return keys, args

    async def read(self, stream: str, after: int | None) -> ReadResult:
        try:
            raw = await self._read_raw(stream, after)
        except (TimeoutError, RedisError, OSError) as exc:
            raise BusUnavailable(f"Redis read failed: {exc}") from exc
        epoch, top, first, rows = raw
        return ReadResult(epoch=epoch, top=top, first_available=first,
                          events=[wire.event_from_row(row, epoch) for row in rows])

    async def _read_raw(self, stream: str, after: int | None) -> tuple[str, int, int, list[Any]]:
        """``(epoch, top, first_available, rows oldest first)``; raises redis-py errors."""
        (result,) = await self._eval_many(wire.READ_SCRIPT, [self._read_args(stream, after)])
        if isinstance(result, Exception):
            raise result
        return wire.parse_read(result)

    def _read_args(self, stream: str, after: int | None) -> tuple[list[str], list[Any]]:
        args = [secrets.token_hex(8), "" if after is None else after, int(self.max_age * 1000),
                self._meta_ttl_ms]
        return list(self._keys(stream)), args

    async def _eval_many(
        self, script: wire.Script, calls: Sequence[tuple[list[str], list[Any]]]
    ) -> list[Any]:
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
            await self._require_client().script_load(script.source)
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

    def _require_client(self) -> Redis:
        if self._client is None:
            raise BusUnavailable("RedisBus is not started")
        return self._client

    # -- subscribe ------------------------------------------------------------------------

    async def subscribe(self, stream: str, listener: Listener) -> Subscription:
        """Returns once Redis confirmed the SUBSCRIBE and the stream's current position is
        known: every event published after that reaches ``listener``."""
        state = self._streams.get(stream)
        new = state is None
        if state is None:
            state = self._streams[stream] = _StreamState(stream, self._channel(stream))
            self._by_channel[state.channel] = state
            state.establish = asyncio.create_task(self._establish(state), name=f"redis-bus-sub-{stream}")
        state.listeners.append(listener)
        try:
            conn = self._conn
            if new and conn is not None:  # otherwise the next (re)connect subscribes it
                # A failed send forces a reconnect, which subscribes the stream again.
                with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                    await self._send_subscription(conn, "SUBSCRIBE", state)
            assert state.establish is not None
            await asyncio.shield(state.establish)
        except BaseException as exc:
            await self._remove_listener(state, listener)
            if isinstance(exc, (asyncio.CancelledError, BusUnavailable)):
                raise
            if isinstance(exc, (RedisError, OSError, asyncio.TimeoutError)):
                raise BusUnavailable(f"Redis subscribe failed: {exc}") from exc
            raise
        return _RedisSubscription(self, state, listener)

    async def _establish(self, state: _StreamState) -> None:
        """Wait for the SUBSCRIBE confirmation, then take the baseline position."""
        try:
            async with asyncio.timeout(self._timeout + self._connect_timeout):
                await state.confirmed.wait()
        except TimeoutError:
            raise BusUnavailable("Redis did not confirm the subscription in time") from None
        epoch, top, _first, _rows = await self._read_raw(state.stream, None)
        state.epoch, state.last = epoch, top
        buffered, state.buffer = state.buffer or [], None
        for message in buffered:
            if not self._on_message(state, *message):
                self._resync.add(state.stream)  # the reader reads the rest from history
                break
        if state.confirmed_gen != self._generation:
            # The connection was replaced after the confirmation: its back-fill skipped us.
            self._resync.add(state.stream)

    async def _remove_listener(self, state: _StreamState, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            state.listeners.remove(listener)
        if state.listeners or self._streams.get(state.stream) is not state:
            return
        del self._streams[state.stream]
        self._by_channel.pop(state.channel, None)
        self._resync.discard(state.stream)
        if state.establish is not None and not state.establish.done():
            state.establish.cancel()
        conn = self._conn
        if conn is not None:
            with contextlib.suppress(RedisError, OSError, asyncio.TimeoutError):
                await self._send_subscription(conn, "UNSUBSCRIBE", state)

    async def _send_subscription(self, conn: AbstractConnection, command: str, state: _StreamState) -> None:
        # The lock keeps the expected-replies queue in the order the commands were written.
        async with self._send_lock:
            if conn is not self._conn:
                return  # replaced meanwhile; the new connection subscribed every stream
            if command == "SUBSCRIBE":
                self._confirms.append(state)
            try:
                await conn.send_command(command, state.channel)
            except (RedisError, OSError):
                self._force_reconnect = True
                raise

    # -- the reader: the one pub/sub connection ------------------------------------------

    async def _reader(self) -> None:
        low, high = self._reconnect_delays
        delay = low
        while True:
            conn: AbstractConnection | None = None
            try:
                conn = await self._connect()
                delay = low
                await self._pump(conn)
            except asyncio.CancelledError:
                raise
            except (TimeoutError, RedisError, OSError, _Stale, BusUnavailable) as exc:
                # Warn once per outage (retries go to debug); _on_confirm logs the recovery.
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning("redis pub/sub connection lost: %s; retrying", exc or type(exc).__name__)
                else:
                    log.debug("redis pub/sub still down: %s", exc or type(exc).__name__)
            finally:
                self._subscribed = False
                self._conn = None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.disconnect(nowait=True)
            self.stats["reconnects"] += 1
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(high, delay * 2)

    async def _connect(self) -> AbstractConnection:
        assert self._sub_pool is not None
        conn: AbstractConnection = self._sub_pool.make_connection()  # type: ignore[no-untyped-call]
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancel that lands
        # as the inner call completes, and stop() would then wait for a reader that never ends.
        async with asyncio.timeout(self._connect_timeout + self._timeout):
            await conn.connect()  # type: ignore[no-untyped-call]
        async with self._send_lock:
            self._generation += 1
            self._force_reconnect = False
            self._probe_sent = None
            self._confirms.clear()
            states = list(self._streams.values())
            self._confirms.append(None)  # the probe channel
            self._confirms.extend(states)
            self._initial_pending = 1 + len(states)
            self._conn = conn
            channels = [self._probe_channel, *(s.channel for s in states)]
            for start in range(0, len(channels), 1000):
                await conn.send_command("SUBSCRIBE", *channels[start:start + 1000])
        return conn

    async def _pump(self, conn: AbstractConnection) -> None:
        # Confirmations come at Redis speed; allow more for a process holding many streams.
        confirm_by = time.monotonic() + self._probe_timeout + self._initial_pending / 20_000
        while True:
            if not self._subscribed and time.monotonic() > confirm_by:
                # The socket connected but SUBSCRIBE is not answered (a one-way partition):
                # without this the reader would wait forever, deaf and unready.
                self.stats["stale"] += 1
                raise _Stale(f"subscriptions not confirmed within {self._probe_timeout}s")
            if self._force_reconnect:
                raise _Stale("subscription gone (probe reached no subscriber)")
            sent = self._probe_sent
            if sent is not None and time.monotonic() - sent[1] > self._probe_timeout:
                self.stats["stale"] += 1
                raise _Stale(f"probe not received within {self._probe_timeout}s")
            if self._subscribed and self._resync:
                for stream in list(self._resync):
                    self._resync.discard(stream)
                    state = self._streams.get(stream)
                    if state is not None and state.buffer is None:
                        await self._fill(state)
            first = await conn.read_response(timeout=self._poll)
            if first is None:
                continue
            # A burst of messages arrives in one socket read: take the replies already complete
            # in the parser without a timeout scope each (redis-py opens an asyncio.timeout per
            # read_response(timeout=...), ~6% of a gateway's CPU under load, bench/README.md).
            for reply in [first, *_complete_replies(conn)]:
                kind = reply[0]
                if kind == b"message":
                    await self._on_pubsub_message(reply[1], reply[2])
                elif kind == b"subscribe":
                    await self._on_confirm(reply[1])

    async def _on_confirm(self, channel: bytes) -> None:
        expected = self._confirms.popleft() if self._confirms else None
        if expected is not None:
            if expected.channel != channel:
                raise _Stale(f"subscribe replies out of order ({channel!r})")
            expected.confirmed_gen = self._generation
            expected.confirmed.set()
        if self._initial_pending > 0:
            self._initial_pending -= 1
            if self._initial_pending == 0:
                await self._backfill_all()
                self._subscribed = True
                self._subscribed_changed.set()
                if self._down_since is not None:
                    log.warning("redis pub/sub re-established after %.1fs; %d streams back-filled",
                                time.monotonic() - self._down_since, len(self._streams))
                    self._down_since = None

    async def _backfill_all(self) -> None:
        """After (re)subscribing: read every established stream from its last offset."""
        states = [s for s in self._streams.values() if s.buffer is None]
        for start in range(0, len(states), 200):
            chunk = states[start:start + 200]
            results = await self._eval_many(wire.READ_SCRIPT, [self._read_args(s.stream, s.last) for s in chunk])
            for state, result in zip(chunk, results, strict=True):
                if isinstance(result, Exception):
                    raise result
                if self._streams.get(state.stream) is state:
                    self._apply_read(state, wire.parse_read(result))

    async def _fill(self, state: _StreamState) -> None:
        read = await self._read_raw(state.stream, state.last)
        if self._streams.get(state.stream) is state:
            self._apply_read(state, read)

    def _apply_read(self, state: _StreamState, read: tuple[str, int, int, list[Any]]) -> None:
        epoch, top, first, rows = read
        if epoch != state.epoch or top < state.last or (top > state.last and first > state.last + 1):
            self._reset(state, epoch, top)  # new epoch, rewound, or the gap was trimmed away
            return
        for row in rows:
            event = wire.event_from_row(row, epoch)
            if event.offset == state.last + 1:
                self.stats["backfilled"] += 1
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
        self, state: _StreamState, epoch: str, offset: int, published_at: float, key: str | None, body: bytes
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
        self._dispatch(state, StreamEvent(offset, splice_position(body, epoch, offset), key, published_at))
        return True

    def _dispatch(self, state: _StreamState, event: StreamEvent) -> None:
        state.last = event.offset
        for listener in tuple(state.listeners):
            try:
                listener(event)
            except Exception:
                log.exception("listener of stream %s failed", state.stream)

    def _reset(self, state: _StreamState, epoch: str, top: int) -> None:
        log.warning("stream %s reset: epoch %s -> %s, position %d", state.stream, state.epoch, epoch, top)
        state.epoch, state.last = epoch, top
        self.stats["resets"] += 1
        if self.on_stream_reset is not None:
            try:
                self.on_stream_reset(state.stream)
            except Exception:
                log.exception("on_stream_reset(%s) failed", state.stream)

    # -- the probe ------------------------------------------------------------------------

    async def _prober(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval)
            if not self._subscribed or self._probe_sent is not None or self._client is None:
                continue
            self._probe_seq += 1
            token = str(self._probe_seq).encode()
            self._probe_sent = (token, time.monotonic())
            try:
                receivers = await self._client.publish(self._probe_channel, token)
            except (TimeoutError, RedisError, OSError):
                self._probe_sent = None  # Redis itself is unreachable: `bus` health says so
                continue
            if receivers == 0 and self._probe_sent is not None:
                self.stats["stale"] += 1
                self._force_reconnect = True
