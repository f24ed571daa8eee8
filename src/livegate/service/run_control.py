"""Run control of the generation service (issue 13): queue positions with their wait
estimate, and what a deadline's cancel records (asyncapi.yaml ``QueuePosition``,
``EstimatedWaitSeconds``, ``DeadlineAt``; GenerationErrorCode ``deadline_exceeded``).

Queue positions: after every dispatch (a create, a run's end, a cancel, each tick) one
coalesced refresh recomputes the positions of the queued runs in the store
(``Store.refresh_queue_positions``, under the dispatch lock, at most ``updates_per_pass``
changed rows per pass, the front of each queue first) and publishes a
``generationUpdate`` (still ``queued``, new ``queuePosition``) for each run whose position
changed. The position saved with each run makes every change published by one process
only, however many processes refresh. The estimate is the median duration of the tool's
last :data:`ESTIMATE_SAMPLES` completed runs x position / the tool's slots, cached
``median_ttl`` seconds per tool (dropped when a run of the tool completes here).

Deadlines: the runner tells a deadline's cancel from a user's by
``cancel_requested_at >= deadline_at`` (the sweep records it at or after the deadline;
a user's cancel before the deadline has an earlier time), see :func:`cancel_error`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from livegate.errors import StoreUnavailable
from livegate.store import GenerationRow, Store
from livegate.tools.base import Tool

__all__ = ["ESTIMATE_SAMPLES", "QueuePositions", "cancel_error", "deadline_error"]

log = logging.getLogger("livegate.generations")
ESTIMATE_SAMPLES = 20  # recent completed runs of a tool whose median duration makes the wait estimate

PublishPosition = Callable[[GenerationRow, int | None], Awaitable[None]]


def deadline_error(row: GenerationRow) -> dict[str, Any]:
    """The ``error`` of a run cancelled at its deadline."""
    after = (row.deadline_at or 0.0) - row.created_at
    return {"code": "deadline_exceeded",
            "message": f"The run was still {row.status} at its deadline (cancelAfterSeconds {after:g})"}


def cancel_error(row: GenerationRow | None) -> dict[str, Any] | None:
    """Why a run is being cancelled: ``deadline_exceeded`` when the cancel was asked for at
    or after its deadline (the sweep), else no error (a user's cancel)."""
    if (row is not None and row.deadline_at is not None and row.cancel_requested_at is not None
            and row.cancel_requested_at >= row.deadline_at):
        return deadline_error(row)
    return None


class QueuePositions:
    updates_per_pass = 100  # queue-position updates one refresh publishes at most
    max_passes = 10  # refreshes in a row while more asks arrive (then the next tick goes on)
    median_ttl = 5.0  # seconds a tool's median run duration is reused

    def __init__(self, store: Store, tools: Mapping[str, Tool], publish: PublishPosition) -> None:
        self.store = store
        self.tools = tools
        self._publish = publish
        self._dirty = False
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._medians: dict[str, tuple[float, float | None]] = {}  # tool -> (fetched at, median)

    def start(self) -> None:
        self._stopped = False

    async def stop(self) -> None:
        self._stopped = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def soon(self) -> None:
        """Coalesced: one refresh runs at a time; asks made meanwhile cause one more pass."""
        self._dirty = True
        if self._stopped or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._refresh(), name="livegate-positions")

    async def _refresh(self) -> None:
        passes = 0
        while self._dirty and not self._stopped and passes < self.max_passes:
            self._dirty = False
            passes += 1
            try:
                changed = await self.store.refresh_queue_positions(limit=self.updates_per_pass)
                for row in changed:
                    await self._publish(row, row.queue_position)
            except StoreUnavailable as exc:
                log.warning("queue positions postponed: %s", exc.message)
                return
            except Exception:
                log.exception("queue positions failed")
                return
            if len(changed) >= self.updates_per_pass:
                return  # capped: the next tick goes on (the rest keep their last position meanwhile)

    async def position_now(self, row: GenerationRow) -> int | None:
        """The run's position as ``GET`` shows it: live for a queued run; the remote one
        (ComfyUI's queue) a running run's runner saved."""
        if row.status == "queued":
            ahead = await self.store.queue_position(row.id)
            return None if ahead is None else ahead + 1
        if row.status == "running":
            return row.queue_position
        return None

    def forget_durations(self, tool_id: str) -> None:
        """A run of the tool completed here: the next estimate reads the durations again."""
        self._medians.pop(tool_id, None)

    async def estimate(self, tool_id: str, position: int | None) -> float | None:
        """Median duration of the tool's recent completed runs x position / its slots;
        ``None`` when no run of the tool completed yet."""
        tool = self.tools.get(tool_id)
        if position is None or tool is None:
            return None
        now = time.monotonic()
        cached = self._medians.get(tool_id)
        if cached is None or now - cached[0] > self.median_ttl:
            durations = await self.store.recent_durations(tool_id, ESTIMATE_SAMPLES)
            cached = self._medians[tool_id] = (now, statistics.median(durations) if durations else None)
        if cached[1] is None:
            return None
        return round(max(0.0, cached[1]) * position / max(1, tool.spec.max_concurrency), 3)
