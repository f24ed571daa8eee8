"""Where the bus finds Redis: one ``redis://`` URL, or the primary that Redis Sentinel names.

``LIVEGATE_REDIS_URL`` forms (docs/scaling.md, "Redis Sentinel")::

    redis://[user:password@]host:port/db
    redis+sentinel://[user:password@]sentinel1:26379,sentinel2:26379,.../<service>[/<db>]

With Sentinel the bus asks the sentinels for ``<service>``'s primary whenever it (re)connects:
redis-py's ``SentinelManagedConnection`` for the command pool, :meth:`Address.primary_url` for
the pub/sub connection. The credentials are the Redis nodes' (the sentinels are asked without
any). Several shards are several URLs separated by commas (a comma followed by a host of the
same Sentinel URL continues that URL's list of sentinels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

SENTINEL_SCHEME = "redis+sentinel"


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None

    def node_url(self, host: str, port: int) -> str:
        """A plain URL for one Redis node of the service (its credentials, its db)."""
        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        return f"redis://{auth}{host}:{port}/{self.db}"


def parse_sentinel_url(url: str) -> SentinelTarget | None:
    """The Sentinel target of a ``redis+sentinel://`` URL; ``None`` for any other URL."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme != SENTINEL_SCHEME:
        return None
    netloc, _, path = rest.partition("/")
    auth, _, hosts = netloc.rpartition("@")
    username = password = None
    if auth:
        user, colon, secret = auth.partition(":")
        username, password = (unquote(user) or None, unquote(secret)) if colon else (None, unquote(user))
    sentinels = []
    for host in hosts.split(","):
        parts = urlsplit(f"//{host.strip()}")
        if not parts.hostname:
            raise ValueError(f"a sentinel address without a host in {url!r}")
        sentinels.append((parts.hostname, parts.port or 26379))
    service, _, db = path.strip("/").partition("/")
    if not service:
        raise ValueError(f"a Sentinel URL names its service: {SENTINEL_SCHEME}://host:26379/<service>")
    return SentinelTarget(sentinels, service, int(db or 0), username, password)


def redis_client(url: str, **settings: Any) -> Redis:
    """A redis-py client for ``url`` (either form above) with ``settings`` (timeouts,
    ``client_name``, ...): with Sentinel its connections, pub/sub ones included, go to the
    primary the sentinels name at each connect. For the small side clients (SSE tickets, the
    relay); the bus itself keeps its own pool (:class:`~livegate.bus.redis.commands.Commands`)."""
    target = parse_sentinel_url(url)
    if target is None:
        return Redis.from_url(url, **settings)
    timeouts = {k: settings[k] for k in ("socket_timeout", "socket_connect_timeout") if k in settings}
    sentinel = Sentinel(target.sentinels, **timeouts)  # type: ignore[no-untyped-call]
    client: Redis = sentinel.master_for(target.service, db=target.db, username=target.username,
                                        password=target.password, **settings)
    return client


def split_urls(value: str) -> list[str]:
    """The shard URLs of ``LIVEGATE_REDIS_URL`` (comma-separated; a part without ``://``
    is one more sentinel of the URL before it)."""
    urls: list[str] = []
    for part in (p.strip() for p in value.split(",")):
        if not part:
            continue
        if "://" not in part and urls:
            urls[-1] += "," + part
        else:
            urls.append(part)
    return urls


__all__ = ["SENTINEL_SCHEME", "SentinelTarget", "parse_sentinel_url", "redis_client", "split_urls"]
