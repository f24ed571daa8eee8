"""The outbox of run ends (livegate.service.outbox): an end recorded but not announced on
the bus — its publish failed and its process died with the update in memory, or the
process died between recording and publishing — is announced by another process's sweep
once the bus works; an end announced normally is marked and never swept again.

"Another process" is a second service over the same store and the same bus (as a Redis
that kept its data): the first one is stopped, which drops its memory backlog exactly as
a SIGKILL would."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from livegate.bus import Position, PublishItem
from livegate.bus.memory import MemoryBus
from livegate.errors import BusUnavailable
from livegate.service.generations import GenerationService
from livegate.store import GenerationRow

from .conftest import Harness, ScriptedTool

GRACE = 0.3  # seconds an end stays unannounced before a sweep takes it (the tick is 0.2 s)


class FlakyBus(MemoryBus):
    """A memory bus shared by two services, that can be ``down`` (every publish fails as
    Redis's does) or freeze every publish of a terminal update (the process is stuck there
    until it is killed: the publish never happens)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.freeze_ends = False
        self.frozen = asyncio.Event()  # set once an end's publish is stuck
        self._started = False

    async def start(self) -> None:
        if not self._started:  # the second service's start: one sweeper only
            self._started = True
            await super().start()

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await super().stop()

    async def publish(self, items: Sequence[PublishItem]) -> list[Position]:
        if self.freeze_ends and any(b'"type":"generationUpdate"' in i.body and b'"status":"completed"' in i.body
                                    for i in items):
            self.frozen.set()
            await asyncio.get_running_loop().create_future()  # until cancelled by the process's stop
        if self.down:
            raise BusUnavailable("the bus is down (test)")
        return await super().publish(items)


def with_bus(h: Harness, bus: FlakyBus) -> Harness:
    h.bus = bus
    return h


async def record(svc: GenerationService, gen_id: str, timeout: float = 5.0) -> GenerationRow:
    """The record once it is final."""
    async with asyncio.timeout(timeout):
        while True:
            row = await svc.store.get(gen_id)
            if row is not None and row.status not in ("queued", "running"):
                return row
            await asyncio.sleep(0.01)


async def announced(h: Harness, gen_id: str, status: str, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while status not in await h.updates("alice", gen_id):
            await asyncio.sleep(0.02)


async def started_then_died(harness: Any, bus: FlakyBus) -> tuple[Harness, str]:
    """Service A starts a run; the test then makes its end unannounceable and A 'dies'."""
    tool = ScriptedTool()
    first = with_bus(harness(tool), bus)
    svc = await first.start()
    svc.outbox.grace_seconds = GRACE
    gen_id = (await svc.create("alice", "scripted", {"prompt": "hi"})).id
    await tool.started(1)
    await first.wait_status("alice", gen_id, "running")
    return first, gen_id


async def second_process(harness: Any, bus: FlakyBus) -> Harness:
    second = with_bus(harness(ScriptedTool()), bus)
    svc = await second.start()
    svc.outbox.grace_seconds = GRACE
    return second


async def test_an_end_whose_publish_failed_is_announced_by_another_process_after_its_own_died(
    harness: Any,
) -> None:
    bus = FlakyBus()
    first, gen_id = await started_then_died(harness, bus)
    assert first.service is not None
    bus.down = True
    first.tools["scripted"].runs[0].finish.set_result("ok")  # type: ignore[attr-defined]
    row = await record(first.service, gen_id)
    assert row.status == "completed" and row.announced_at is None
    assert "completed" not in await first.updates("alice", gen_id)
    await first.service.stop()  # the process dies with the update in its memory backlog
    first.service = None

    bus.down = False  # the bus is back (with its data: same stream, same epoch)
    second = await second_process(harness, bus)
    await announced(second, gen_id, "completed")
    events = [e for e in await second.events("alice") if e["type"] == "generationUpdate"]
    assert [e["status"] for e in events] == ["queued", "running", "completed"]
    assert [o["text"] for o in events[-1]["outputs"]] == ["Hello"]  # built from the record, outputs included
    assert second.service is not None
    async with asyncio.timeout(5.0):  # marked: no sweep announces it again
        while (await second.service.store.get(gen_id)).announced_at is None:  # type: ignore[union-attr]
            await asyncio.sleep(0.02)
    assert await second.service.outbox.sweep(time.time() + 3600) == 0


async def test_an_end_recorded_but_never_published_is_announced_by_another_process(harness: Any) -> None:
    bus = FlakyBus()
    first, gen_id = await started_then_died(harness, bus)
    assert first.service is not None
    bus.freeze_ends = True  # killed between recording the end and publishing it
    first.tools["scripted"].runs[0].finish.set_result("ok")  # type: ignore[attr-defined]
    async with asyncio.timeout(5.0):
        await bus.frozen.wait()
    assert (await first.service.store.get(gen_id)).status == "completed"  # type: ignore[union-attr]
    await first.service.stop()  # the stuck publish is cancelled: it never reaches the bus
    first.service = None
    assert "completed" not in await first.updates("alice", gen_id)

    bus.freeze_ends = False
    second = await second_process(harness, bus)
    await announced(second, gen_id, "completed")
    assert await second.updates("alice", gen_id) == ["queued", "running", "completed"]


async def test_an_end_announced_at_once_is_marked_and_a_sweep_leaves_it(harness: Any) -> None:
    tool = ScriptedTool()
    h = harness(tool)
    svc = await h.start()
    gen_id = (await svc.create("alice", "scripted", {"prompt": "hi"})).id
    (await tool.started(1))[0].finish.set_result("ok")
    await h.wait_status("alice", gen_id, "completed")
    async with asyncio.timeout(5.0):
        while (await svc.store.get(gen_id)).announced_at is None:  # type: ignore[union-attr]
            await asyncio.sleep(0.01)
    assert await svc.outbox.sweep(time.time() + 3600) == 0
    assert await h.updates("alice", gen_id) == ["queued", "running", "completed"]  # once


async def test_a_sweep_while_the_bus_is_down_gives_the_ends_back_at_once(harness: Any) -> None:
    bus = FlakyBus()
    h = with_bus(harness(ScriptedTool()), bus)
    svc = await h.start()
    svc.outbox.grace_seconds = 3600.0  # the ticks leave these rows to the test's own sweeps
    now = time.time()
    rows = [GenerationRow(id=f"gen_left{i}", user_id="alice", tool_id="scripted", status="failed", inputs={},
                          created_at=now - 60, updated_at=now - 50, finished_at=now - 50,
                          error={"code": "tool_error", "message": "x"}) for i in range(3)]
    for row in rows:
        await svc.store.insert(row)  # ends a dead process left unannounced
    bus.down = True
    assert await svc.outbox.sweep(now, grace=0.0) == 0
    # Released, not leased for lease_seconds: the next sweep takes them as soon as the bus is back.
    bus.down = False
    assert await svc.outbox.sweep(now + 0.1, grace=0.0) == 3
    assert [await h.updates("alice", r.id) for r in rows] == [["failed"]] * 3
