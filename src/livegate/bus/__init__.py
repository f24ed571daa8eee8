"""Fan-out and history of per-user streams. Moves bytes on stream names; knows no schema."""

from livegate.bus.base import (
    Bus,
    Listener,
    Position,
    PublishItem,
    ReadResult,
    StreamEvent,
    Subscription,
)

__all__ = ["Bus", "Listener", "Position", "PublishItem", "ReadResult", "StreamEvent", "Subscription"]


def create_bus(config: object) -> Bus:
    """The memory bus (embedded default), or Redis when ``LIVEGATE_REDIS_URL`` is set;
    several comma-separated URLs shard the users over that many independent Redis
    (:class:`livegate.bus.sharded.ShardedBus`; every process must list them in the same
    order). A ``redis+sentinel://`` URL follows the primary Redis Sentinel names
    (:mod:`livegate.bus.redis.address`)."""
    redis_url = getattr(config, "redis_url", None)
    max_events = getattr(config, "history_max_events", 1000)
    max_age = getattr(config, "history_max_age_seconds", 600.0)
    if redis_url:
        from livegate.bus.redis import RedisBus
        from livegate.bus.redis.address import split_urls

        urls = split_urls(str(redis_url))
        buses = [RedisBus(url, max_events=max_events, max_age_seconds=max_age) for url in urls]
        if len(buses) == 1:
            return buses[0]
        from livegate.bus.sharded import ShardedBus

        return ShardedBus(buses)
    from livegate.bus.memory import MemoryBus

    return MemoryBus(max_events=max_events, max_age_seconds=max_age)
