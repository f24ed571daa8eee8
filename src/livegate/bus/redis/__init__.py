"""The shared bus: per-user streams in Redis, fanned out to every gateway process.

Key layout (``{user}`` is a Redis Cluster hash tag: one user's keys and channel share a slot)::

    lg:{user}:m   hash    epoch, top, g (generation)       TTL idle_ttl (refreshed on use)
    lg:{user}:s   stream  id <ms>-<seq> (Redis time) -> o offset, d body, k key, t published_at
                          trimmed to max_events (MAXLEN =) and max_age (MINID); TTL max_age+60s
    lg:{user}:c   channel one message per event: "<epoch> <offset> <published_at> <klen>\\n<k><body>"
    lg:probe:<process>    this process's liveness probe channel
    lg:history    hash    gen, rid, w, w0: the history guard (one per Redis)

Offsets are assigned by ``scripts/publish.lua`` (EVALSHA), for every stream of one call: it
makes the epoch when the meta hash is gone or of another generation (a new random epoch, so
history lost in Redis, or rewound by a failover or an older AOF/RDB, means ``recovered:
false``: ``scripts/history.lua``, docs/scaling.md "Rewinds"), INCRs ``top``, XADDs, trims,
sets TTLs and PUBLISHes, all atomically, so the order of messages on the channel is the
offset order. One call carries the streams of up to ``wire.ITEMS_PER_CALL`` items (a plain
Redis allows a script several users' keys; on Redis Cluster the calls would be grouped by
hash slot, see docs/scaling.md). ``scripts/read.lua`` is the one atomic look behind :meth:`RedisBus.read`.

The package, by responsibility:

* ``commands.py`` — the command path (pooled redis-py client: publish, read, health, probe);
* ``address.py`` — ``redis://`` or ``redis+sentinel://`` (the primary Sentinel names);
* ``history.py`` — what this process saw of the data's history (the rewind witness);
* ``subscriber.py`` — the subscriber state machine (streams, confirmations, gaps,
  back-fill, resets, the probe);
* ``pubsub.py`` — the pub/sub socket, RESP parsed by hiredis's public ``Reader``;
* ``errors.py`` — the one place Redis errors become :class:`~livegate.errors.BusUnavailable`;
* ``wire.py`` + ``scripts/*.lua`` — the scripts, RESP packing, the message format.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from livegate.bus.base import Bus, Listener, Position, PublishItem, ReadResult, Subscription
from livegate.bus.redis import wire
from livegate.bus.redis.commands import Commands
from livegate.bus.redis.errors import TRANSIENT, unavailable
from livegate.bus.redis.history import Witness
from livegate.bus.redis.subscriber import Read, Subscriber
from livegate.errors import BusUnavailable

__all__ = ["RedisBus"]

#: A publish refused while the data settles is made again inside the bus only when the
#: settling ends within this many seconds; otherwise it is refused at once (a ``Settling``).
SETTLE_WAIT = 0.25


class Settling(Exception):
    """A publish.lua call refused: the data is settling after a new server run."""

    def __str__(self) -> str:
        return self.args[0] if self.args else "settling"


class RedisBus(Bus):
    """:class:`~livegate.bus.base.Bus` on Redis; see the module doc.

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
        reconnect_max_delay: float = 1.0,
        poll_interval: float = 0.25,
        settle_seconds: float = 3.0,
        on_stream_reset: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url
        self.max_events = max_events
        self.max_age = max_age_seconds
        self.on_stream_reset = on_stream_reset
        self._prefix = key_prefix
        # After a restart or failover, publishes are refused this long so every live process
        # shows its witness first (scripts/history.lua, "Settling"): above the subscriber's
        # longest reconnect pause (reconnect_max_delay x 1.5 jitter) plus a connect.
        self._settle_ms = int(settle_seconds * 1000)
        self._stream_ttl_ms = int((max_age_seconds + 60.0) * 1000)
        self._meta_ttl_ms = max(int(idle_ttl_seconds * 1000), self._stream_ttl_ms)
        self._timeout = socket_timeout
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._subscriber_settings: dict[str, Any] = {
            "socket_timeout": socket_timeout, "connect_timeout": connect_timeout, "probe_interval": probe_interval,
            "probe_timeout": probe_timeout, "reconnect_delays": (reconnect_min_delay, reconnect_max_delay),
            "poll_interval": poll_interval,
        }
        # CLIENT LIST shows who is who: "livegate:<host>:<pid>" (commands), "...:sub" (pub/sub).
        self.client_name = f"livegate:{socket.gethostname()}:{os.getpid()}".replace(" ", "_")
        self._commands: Commands | None = None
        self._subscriber: Subscriber | None = None
        self._witness = Witness()  # what this process saw of the data's history (rewinds)
        self._settled_at = 0.0  # monotonic time the data is settled by, as last told (history.lua)
        self.stats = {"reconnects": 0, "backfilled": 0, "duplicates": 0, "resets": 0, "stale": 0}

    # -- names ----------------------------------------------------------------------------

    def _keys(self, stream: str) -> tuple[str, str]:
        return f"{self._prefix}:{{{stream}}}:m", f"{self._prefix}:{{{stream}}}:s"

    @property
    def _history_key(self) -> str:
        # One per data set (per server or shard); docs/scaling.md, "Rewinds".
        return f"{self._prefix}:history"

    def _channel(self, stream: str) -> bytes:
        return f"{self._prefix}:{{{stream}}}:c".encode()

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, *, wait: float | None = None) -> None:
        """Connect; wait (bounded, default ``connect_timeout * 2``) for the subscriber, but
        start even when Redis is down: health reports it and the reader keeps retrying."""
        commands = self._commands = Commands(self.url, socket_timeout=self._timeout,
                                             connect_timeout=self._connect_timeout,
                                             max_connections=self._max_connections, client_name=self.client_name)
        subscriber = self._subscriber = Subscriber(
            commands, channel_of=self._channel, read=self._subscriber_read, read_args=self._subscriber_read_args,
            parse_read=self._parse_read, check_history=self._check_history,
            on_reset=self._stream_reset, client_name=self.client_name + ":sub", key_prefix=self._prefix,
            stats=self.stats, **self._subscriber_settings,
        )
        subscriber.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout * 2 if wait is None else wait):
                while not subscriber.subscribed:
                    subscriber.subscribed_changed.clear()
                    await subscriber.subscribed_changed.wait()

    async def stop(self) -> None:
        if self._subscriber is not None:
            await self._subscriber.stop()
            self._subscriber = None
        if self._commands is not None:
            await self._commands.close()
            self._commands = None

    def counters(self) -> dict[str, int]:
        return dict(self.stats)

    async def health(self) -> dict[str, bool]:
        ok = False
        if self._commands is not None:
            try:
                async with asyncio.timeout(self._timeout):
                    ok = await self._commands.ping()
            except TRANSIENT:
                ok = False
        # While the data settles publishes are refused: not ready (load balancers wait).
        ok = ok and time.monotonic() >= self._settled_at
        return {"bus": ok, "subscriber": self._subscriber is not None and self._subscriber.subscribed}

    def _settling(self, left_ms: int | bytes) -> None:
        self._settled_at = max(self._settled_at, time.monotonic() + int(left_ms) / 1000)

    def _stream_reset(self, stream: str) -> None:
        if self.on_stream_reset is not None:
            self.on_stream_reset(stream)

    def _require(self) -> Commands:
        if self._commands is None:
            raise BusUnavailable("RedisBus is not started")
        return self._commands

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
        results = await self._publish_calls(calls)
        firsts: dict[str, tuple[str, int] | Exception] = {}
        for group, result in zip(groups, results, strict=True):
            if not isinstance(result, Exception):
                self._witness.saw(*result[:3])
            for j, stream in enumerate(group):
                firsts[stream] = result if isinstance(result, Exception) else (
                    wire.text(result[3 + 2 * j]), int(result[4 + 2 * j]))
        positions: list[Position] = []
        seen: dict[str, int] = {}
        for item in items:
            first = firsts[item.stream]
            if isinstance(first, Exception):
                raise unavailable("publish", first, published=positions)
            index = seen[item.stream] = seen.get(item.stream, 0) + 1
            positions.append(Position(first[0], first[1] + index - 1))
        return positions

    async def _publish_calls(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """The replies of publish.lua calls. A call refused while the data settles after a new
        server run (scripts/history.lua) is made again after a short wait (at most
        :data:`SETTLE_WAIT`), else its reply is a :class:`Settling` error: the publish is
        refused like any other outage (``BusUnavailable``: 503 with ``Retry-After``, the
        generation service's backlog), as Redis itself answers ``LOADING`` — not held for
        seconds where HTTP callers would time out."""
        results: list[Any] = [None] * len(calls)
        pending = list(range(len(calls)))
        for _attempt in range(3):
            try:
                replies = await self._require().eval_many(wire.PUBLISH_SCRIPT, [calls[i] for i in pending])
            except TRANSIENT as exc:
                # The replies are lost: some calls may have been applied, none is reported.
                raise unavailable("publish", exc) from exc
            settling, wait_ms = [], 0
            for i, reply in zip(pending, replies, strict=True):
                if not isinstance(reply, Exception) and len(reply) == 5 and reply[3] == b"settle":
                    self._witness.saw(*reply[:3])
                    self._settling(reply[4])
                    settling.append(i)
                    wait_ms = max(wait_ms, int(reply[4]))
                results[i] = reply
            if not settling:
                return results
            pending = settling
            if wait_ms / 1000 > SETTLE_WAIT:
                break
            await asyncio.sleep(wait_ms / 1000 + 0.002)
        for i in pending:
            results[i] = Settling(f"Redis came back from a restart or failover {self._settle_ms / 1000:g} s "
                                  f"ago at most and is settling (rewind check); retry shortly")
        return results

    def _publish_args(self, group: list[str], by_stream: dict[str, list[PublishItem]]) -> tuple[list[str], list[Any]]:
        keys: list[str] = [self._history_key]
        args: list[Any] = [self.max_events, int(self.max_age * 1000), self._meta_ttl_ms, self._stream_ttl_ms,
                           *self._witness.args(secrets.token_hex(8)), self._settle_ms]
        for stream in group:
            batch = by_stream[stream]
            keys.extend(self._keys(stream))
            args += (secrets.token_hex(8), self._channel(stream), len(batch))
            for item in batch:
                args.append(item.body)
                args.append("-" if item.conflation_key is None else "+" + item.conflation_key)
        return keys, args

    async def read(self, stream: str, after: int | None, *, limit: int | None = None,
                   max_bytes: int | None = None, claimed_epoch: str | None = None,
                   claimed_timestamp: str | None = None) -> ReadResult:
        try:
            epoch, top, first, rows = await self._read_raw(stream, after, limit, max_bytes, claimed_epoch,
                                                           claimed_timestamp)
        except TRANSIENT as exc:
            raise unavailable("read", exc) from exc
        return ReadResult(epoch=epoch, top=top, first_available=first,
                          events=[wire.event_from_row(row, epoch) for row in rows])

    async def _read_raw(self, stream: str, after: int | None, limit: int | None = None,
                        max_bytes: int | None = None, claimed_epoch: str | None = None,
                        claimed_timestamp: str | None = None) -> Read:
        """``(epoch, top, first_available, rows oldest first)``; raises redis-py errors."""
        (result,) = await self._require().eval_many(
            wire.READ_SCRIPT, [self._read_args(stream, after, limit, max_bytes, claimed_epoch, claimed_timestamp)])
        if isinstance(result, Exception):
            raise result
        return self._parse_read(result)

    async def _subscriber_read(self, stream: str, after: int | None, epoch: str | None, stamp: str | None) -> Read:
        return await self._read_raw(stream, after, claimed_epoch=epoch, claimed_timestamp=stamp)

    def _subscriber_read_args(self, stream: str, after: int | None, epoch: str | None,
                              stamp: str | None) -> tuple[list[str], list[Any]]:
        return self._read_args(stream, after, claimed_epoch=epoch, claimed_timestamp=stamp)

    async def _check_history(self) -> None:
        """Show this process's witness to the history guard (scripts/guard.lua); raises
        redis-py errors."""
        (result,) = await self._require().eval_many(
            wire.GUARD_SCRIPT, [([self._history_key], [*self._witness.args(secrets.token_hex(8)), self._settle_ms])])
        if isinstance(result, Exception):
            raise result
        self._witness.saw(*result[:3])
        self._settling(result[3])

    def _parse_read(self, result: list[Any]) -> Read:
        self._witness.saw(*result[4:7])
        return wire.parse_read(result)

    def _read_args(self, stream: str, after: int | None, limit: int | None = None,
                   max_bytes: int | None = None, claimed_epoch: str | None = None,
                   claimed_timestamp: str | None = None) -> tuple[list[str], list[Any]]:
        # The subscriber reads without bounds (a gap it fills is at most max_events long).
        args = [secrets.token_hex(8), "" if after is None else after, int(self.max_age * 1000), self._meta_ttl_ms,
                *self._witness.args(secrets.token_hex(8)), self.max_events if limit is None else limit,
                0 if max_bytes is None else max_bytes, claimed_epoch or "", claimed_timestamp or "",
                self._settle_ms]
        return [*self._keys(stream), self._history_key], args

    # -- subscribe ------------------------------------------------------------------------

    async def subscribe(self, stream: str, listener: Listener) -> Subscription:
        """Returns once Redis confirmed the SUBSCRIBE and the stream's current position is
        known: every event published after that reaches ``listener``."""
        if self._subscriber is None:
            raise BusUnavailable("RedisBus is not started")
        return await self._subscriber.subscribe(stream, listener)
