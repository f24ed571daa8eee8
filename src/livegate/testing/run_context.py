"""An in-memory :class:`~livegate.tools.base.RunContext` that records everything a tool does.

Use it to drive a tool without the generation service::

    ctx = RecordingRunContext({"prompt": "a red kite"})
    task = asyncio.create_task(tool.run(ctx))
    first = await ctx.wait_for_progress(lambda p: p.preview is not None, timeout=5)
    outputs = await task
    assert ctx.output_bytes(outputs[0].id).startswith(b"\\x89PNG")

Waiting is event-driven: :meth:`RecordingRunContext.wait_for_progress` and friends wake up
when the tool reports something, so tests never sleep and hope.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from livegate.tools.base import OutputKind, StoredOutput

__all__ = ["ProgressEvent", "RecordingRunContext"]


_T = TypeVar("_T")

@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """One call of :meth:`RunContext.progress`, as the tool made it."""

    fraction: float
    step: int | None = None
    total_steps: int | None = None
    message: str | None = None
    preview: bytes | None = None
    preview_media_type: str | None = None
    partial_text: str | None = None


class RecordingRunContext:
    """Implements ``RunContext`` in memory.

    * ``progress_events``: every progress call, in order (:class:`ProgressEvent`).
    * ``outputs``: output id -> stored bytes; ``stored``: the :class:`StoredOutput` records.
    * ``upstream_refs``: every ref passed to :meth:`save_upstream_ref` (the last one is
      also readable as :attr:`upstream_ref`, as after a restart).
    """

    def __init__(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        generation_id: str = "gen_test",
        user_id: str = "user_test",
        upstream_ref: str | None = None,
    ) -> None:
        self._inputs = dict(inputs or {})
        self._generation_id = generation_id
        self._user_id = user_id
        self._upstream_ref = upstream_ref
        self.detaching = False  # set to True to act as a stopping gateway would
        self.progress_events: list[ProgressEvent] = []
        self.outputs: dict[str, bytes] = {}
        self.stored: list[StoredOutput] = []
        self.upstream_refs: list[str] = []
        self.requests_sent = 0
        self.queue_positions: list[int | None] = []  # every report_queue_position, in order
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()

    # -- RunContext -------------------------------------------------------------------

    @property
    def generation_id(self) -> str:
        return self._generation_id

    @property
    def user_id(self) -> str:
        return self._user_id

    @property
    def inputs(self) -> dict[str, Any]:
        return self._inputs

    @property
    def upstream_ref(self) -> str | None:
        return self._upstream_ref

    @property
    def request_sent(self) -> bool:
        return self.requests_sent > 0

    async def progress(
        self,
        fraction: float,
        *,
        step: int | None = None,
        total_steps: int | None = None,
        message: str | None = None,
        preview: bytes | None = None,
        preview_media_type: str | None = None,
        partial_text: str | None = None,
    ) -> None:
        self.progress_events.append(
            ProgressEvent(
                fraction=fraction,
                step=step,
                total_steps=total_steps,
                message=message,
                preview=preview,
                preview_media_type=preview_media_type,
                partial_text=partial_text,
            )
        )
        self._notify()

    async def store_output(
        self,
        data: bytes,
        *,
        kind: OutputKind,
        media_type: str,
        filename: str | None = None,
        width: int | None = None,
        height: int | None = None,
        duration_seconds: float | None = None,
    ) -> StoredOutput:
        output_id = f"out_{next(self._ids)}"
        self.outputs[output_id] = bytes(data)
        stored = StoredOutput(
            id=output_id,
            kind=kind,
            media_type=media_type,
            size_bytes=len(data),
            filename=filename,
            width=width,
            height=height,
            duration_seconds=duration_seconds,
        )
        self.stored.append(stored)
        self._notify()
        return stored

    async def mark_request_sent(self) -> None:
        self.requests_sent += 1
        self._notify()

    async def save_upstream_ref(self, ref: str) -> None:
        self.upstream_refs.append(ref)
        self._upstream_ref = ref
        self._notify()

    async def report_queue_position(self, position: int | None) -> None:
        self.queue_positions.append(position)
        self._notify()

    # -- helpers for tests ------------------------------------------------------------

    def output_bytes(self, output_id: str) -> bytes:
        return self.outputs[output_id]

    @property
    def fractions(self) -> list[float]:
        return [event.fraction for event in self.progress_events]

    @property
    def previews(self) -> list[ProgressEvent]:
        return [event for event in self.progress_events if event.preview is not None]

    async def wait_for_progress(
        self, predicate: Callable[[ProgressEvent], bool] | None = None, timeout: float = 5.0
    ) -> ProgressEvent:
        """Return the first recorded progress event matching ``predicate`` (any event if
        None), waiting up to ``timeout`` seconds for it; raise ``TimeoutError`` otherwise."""

        def find() -> ProgressEvent | None:
            for event in self.progress_events:
                if predicate is None or predicate(event):
                    return event
            return None

        return await self._wait(find, timeout, "progress event")

    async def wait_for_upstream_ref(self, timeout: float = 5.0) -> str:
        """Return the upstream ref once the tool has saved one."""
        return await self._wait(lambda: self._upstream_ref, timeout, "upstream ref")

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``condition()`` (re-checked after every recorded call) is true."""
        await self._wait(lambda: True if condition() else None, timeout, "condition")

    async def _wait(self, find: Callable[[], _T | None], timeout: float, what: str) -> _T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            # Take the current event before looking: _notify swaps in a fresh one, so a
            # call recorded after this point still wakes us.
            changed = self._changed
            found = find()
            if found is not None:
                return found
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(
                    f"no {what} after {timeout}s; recorded {len(self.progress_events)} "
                    f"progress events, last message: {self._last_message()!r}"
                )
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                continue

    def _last_message(self) -> str | None:
        return self.progress_events[-1].message if self.progress_events else None

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
