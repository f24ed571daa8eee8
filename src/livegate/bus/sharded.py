"""User streams spread over several independent buses (Redis shards), by user.

A stream and everything the guarantee needs about it (epoch, offsets, history, its
channel and subscribers) live on one shard, so nothing crosses shards: each shard is a
complete :class:`~livegate.bus.redis.RedisBus`. The shard of a stream is its Redis Cluster
hash slot (CRC16 of the name, mod 16384) mapped onto ``len(shards)`` equal slot ranges,
so every process with the same shard list agrees, and a later move to Redis Cluster keeps
the same notion of "slot". Changing the shard list moves streams: their clients get
``recovered: false`` (a new epoch on the new shard), never a wrong replay.

``LIVEGATE_REDIS_URL=redis://a:6379/0,redis://b:6379/0`` selects it (see docs/scaling.md).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from livegate.bus.base import Bus, Listener, Position, PublishItem, ReadResult, Subscription
from livegate.errors import BusUnavailable

__all__ = ["ShardedBus", "shard_index"]


def shard_index(stream: str, shards: int) -> int:
    """The shard (0 .. ``shards - 1``) that holds ``stream``: its hash slot's range."""
    return key_slot(stream.encode()) * shards // REDIS_CLUSTER_HASH_SLOTS


class ShardedBus(Bus):
    def __init__(self, shards: Sequence[Bus]) -> None:
        if not shards:
            raise ValueError("ShardedBus needs at least one shard")
        self.shards = list(shards)
        self._on_stream_reset: Callable[[str], None] | None = None

    @property
    def on_stream_reset(self) -> Callable[[str], None] | None:
        return self._on_stream_reset

    @on_stream_reset.setter
    def on_stream_reset(self, callback: Callable[[str], None] | None) -> None:
        self._on_stream_reset = callback
        for shard in self.shards:
            shard.on_stream_reset = callback

    def shard_index(self, stream: str) -> int:
        return shard_index(stream, len(self.shards))

    def shard_of(self, stream: str) -> Bus:
        return self.shards[self.shard_index(stream)]

    def counters(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for shard in self.shards:
            total.update(shard.counters())
        return dict(total)

    async def start(self) -> None:
        await asyncio.gather(*(shard.start() for shard in self.shards))

    async def stop(self) -> None:
        await asyncio.gather(*(shard.stop() for shard in self.shards), return_exceptions=True)

    async def health(self) -> dict[str, bool]:
        """Every check must hold on every shard: a process that cannot deliver some users'
        events is not ready."""
        merged: dict[str, bool] = {}
        for checks in await asyncio.gather(*(shard.health() for shard in self.shards)):
            for name, ok in checks.items():
                merged[name] = merged.get(name, True) and ok
        return merged

    async def publish(self, items: Sequence[PublishItem]) -> list[Position]:
        """Each shard appends its items (concurrently); positions come back in item order.
        On a shard's failure, ``BusUnavailable.published`` is the prefix of ``items``
        known to be appended (items after it may be appended on other shards: never
        reported, delivered like any other)."""
        if not items:
            return []
        for item in items:  # refuse the whole call before any shard appends anything
            if not item.body.startswith(b"{") or len(item.body) < 3:
                raise ValueError("event body must be a non-empty JSON object")
        routes = [self.shard_index(item.stream) for item in items]
        per_shard: dict[int, list[PublishItem]] = {}
        for item, index in zip(items, routes, strict=True):
            per_shard.setdefault(index, []).append(item)
        order = list(per_shard)
        outcomes = await asyncio.gather(*(self.shards[i].publish(per_shard[i]) for i in order),
                                        return_exceptions=True)
        done: dict[int, list[Position]] = {}
        failure: BaseException | None = None
        for index, outcome in zip(order, outcomes, strict=True):
            if isinstance(outcome, BusUnavailable):
                done[index], failure = outcome.published, failure or outcome
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                done[index] = outcome
        positions: list[Position] = []
        taken = dict.fromkeys(order, 0)
        for index in routes:
            if taken[index] >= len(done[index]):
                raise BusUnavailable(f"Redis shard {index} publish failed: {failure}", published=positions)
            positions.append(done[index][taken[index]])
            taken[index] += 1
        return positions

    async def read(self, stream: str, after: int | None, *, limit: int | None = None,
                   max_bytes: int | None = None, claimed_epoch: str | None = None,
                   claimed_timestamp: str | None = None) -> ReadResult:
        return await self.shard_of(stream).read(stream, after, limit=limit, max_bytes=max_bytes,
                                                claimed_epoch=claimed_epoch, claimed_timestamp=claimed_timestamp)

    async def subscribe(self, stream: str, listener: Listener) -> Subscription:
        return await self.shard_of(stream).subscribe(stream, listener)
