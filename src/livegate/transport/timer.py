"""One loop timer at a time per connection (no task per connection): the deadline the
protocol waits for now replaces the one before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class OneTimer:
    """Mixin for a protocol with a ``_timer`` slot."""

    # The subclass declares the ``_timer`` slot (an empty one here keeps instances dict-free).
    __slots__ = ()
    _timer: asyncio.TimerHandle | None

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer()
        self._timer = asyncio.get_running_loop().call_later(delay, callback)  # type: ignore[misc]

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None  # type: ignore[misc]


__all__ = ["OneTimer"]
