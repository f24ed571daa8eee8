"""The one place that maps Redis errors to livegate's.

Everything the Redis client, the hiredis parser or the socket may raise while Redis is
unreachable, slow or refusing is :data:`TRANSIENT`; the bus catches exactly that and raises
:class:`~livegate.errors.BusUnavailable` (:func:`unavailable`) to its callers, or retries
internally (the pub/sub reader reconnects). Anything else is a bug and propagates.
"""

from __future__ import annotations

from collections.abc import Sequence

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError

from livegate.bus.base import Position
from livegate.errors import BusUnavailable


class Stale(Exception):
    """The pub/sub connection is open but no longer delivers (probe lost, 0 receivers,
    subscriptions never confirmed, replies out of order)."""


#: Errors of an unreachable, slow or refusing Redis (and of the pub/sub socket).
TRANSIENT: tuple[type[BaseException], ...] = (TimeoutError, RedisError, OSError, hiredis.HiredisError)
#: What makes the pub/sub reader reconnect.
RECONNECT: tuple[type[BaseException], ...] = (*TRANSIENT, Stale, BusUnavailable)


def unavailable(what: str, exc: BaseException, *, published: Sequence[Position] = ()) -> BusUnavailable:
    """``BusUnavailable`` for a failed ``what`` (``"publish"``, ``"read"``, ``"subscribe"``)."""
    error = BusUnavailable(f"Redis {what} failed: {exc}", published=list(published))
    error.__cause__ = exc
    return error


__all__ = ["RECONNECT", "TRANSIENT", "NoScriptError", "RedisConnectionError", "ResponseError", "Stale",
           "unavailable"]
