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
from livegate.bus.relay import LocalRelay, Relay
from livegate.bus.tickets import MemoryTickets, TicketStore

__all__ = ["Bus", "Listener", "Position", "PublishItem", "ReadResult", "StreamEvent", "Subscription",
           "create_bus", "create_relay", "create_tickets"]


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
        settle = float(getattr(config, "redis_settle_seconds", 3.0))
        buses = [RedisBus(url, max_events=max_events, max_age_seconds=max_age, settle_seconds=settle) for url in urls]
        if len(buses) == 1:
            return buses[0]
        from livegate.bus.sharded import ShardedBus

        return ShardedBus(buses)
    from livegate.bus.memory import MemoryBus

    return MemoryBus(max_events=max_events, max_age_seconds=max_age)


def _first_redis_url(config: object) -> str | None:
    from livegate.bus.redis.address import (
        split_urls,  # (a Sentinel URL lists its sentinels with commas)
    )

    urls = split_urls(str(getattr(config, "redis_url", None) or ""))
    return urls[0] if urls else None


def create_tickets(config: object) -> TicketStore:
    """Where SSE tickets live: this process's memory, or (``LIVEGATE_REDIS_URL``) the first
    Redis, so any process takes a ticket another issued, once."""
    url = _first_redis_url(config)
    if url:
        from livegate.bus.redis.tickets import RedisTickets

        return RedisTickets(url)
    return MemoryTickets()


def create_relay(config: object, node: str) -> Relay:
    """How processes hand each other requests (an SSE client message to the process holding
    its stream): none to hand in one process, or the first Redis's pub/sub."""
    url = _first_redis_url(config)
    if url:
        from livegate.bus.redis.relay import RedisRelay

        return RedisRelay(url, node)
    return LocalRelay(node)
