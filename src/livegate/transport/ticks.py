"""A clock of event-loop iterations, for the delivery core (``protocol/delivery.py``).

The core bounds the bytes a connection is handed in one burst (frames written at once in
one loop iteration count as if queued). It is given the iteration as its clock; this
counts them lazily: reading :meth:`LoopTicks.now` schedules one callback that advances it,
so only iterations in which someone asked cost anything (one handle per publish batch,
not one per recipient).
"""

from __future__ import annotations

import asyncio


class LoopTicks:
    __slots__ = ("_loop", "_pending", "value")

    def __init__(self) -> None:
        self.value = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = False

    def now(self) -> int:
        loop = asyncio.get_running_loop()
        if not self._pending or loop is not self._loop:  # a new loop never runs the old one's callback
            self._pending, self._loop = True, loop
            loop.call_soon(self._advance)
        return self.value

    def _advance(self) -> None:
        self.value += 1
        self._pending = False


__all__ = ["LoopTicks"]
