"""Run control in the service (issue 13), on SQLite and PostgreSQL: deadlines end queued
and running runs ``cancelled`` with ``deadline_exceeded`` and stop the tool; queue
positions (and the wait estimate) are published as they move, once per change."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from livegate.service.generations import InputsInvalid

from .conftest import ScriptedTool
from .test_generation_service import generation


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 5.0) -> Any:
    """``check()``'s first truthy result, re-checked every 20 ms up to ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            result = await check()
            if result:
                return result
            await asyncio.sleep(0.02)  # polling the record/stream: the service has no hook for tests


async def positions(h: Any, user: str, gen_id: str) -> list[tuple[str, int | None]]:
    return [(e["status"], e.get("queuePosition")) for e in await h.events(user)
            if e["type"] == "generationUpdate" and e["generationId"] == gen_id]


async def test_a_queued_run_past_its_deadline_is_cancelled_without_running(harness: Any) -> None:
    tool = ScriptedTool(max_concurrency=1)
    h = harness(tool)
    svc = await h.start()
    busy = (await svc.create("alice", "scripted", {})).id
    await tool.started(1)
    created = generation(await svc.create("alice", "scripted", {}, cancel_after=0.3))
    assert created["status"] == "queued" and "deadlineAt" in created and created["queuePosition"] == 1

    ended = generation(await h.wait_status("alice", created["id"], "cancelled"))
    assert ended["error"]["code"] == "deadline_exceeded" and ended["deadlineAt"] == created["deadlineAt"]
    assert "queuePosition" not in ended
    [update] = [e for e in await h.events("alice")
                if e["generationId"] == created["id"] and e.get("status") == "cancelled"]
    assert update["error"]["code"] == "deadline_exceeded" and update["deadlineAt"]
    assert await h.updates("alice", created["id"]) == ["queued", "cancelled"]
    tool.runs[0].finish.set_result("ok")
    await h.wait_status("alice", busy, "completed")
    assert len(tool.runs) == 1  # the expired run never started


async def test_a_running_run_past_its_deadline_is_cancelled_and_its_tool_stopped(harness: Any) -> None:
    tool = ScriptedTool()
    h = harness(tool)
    svc = await h.start()
    gen_id = (await svc.create("alice", "scripted", {}, cancel_after=3.0)).id  # time to start first
    [run] = await tool.started(1)
    ended = generation(await h.wait_status("alice", gen_id, "cancelled"))
    assert ended["error"]["code"] == "deadline_exceeded" and "running" in ended["error"]["message"]
    assert run.stopped_upstream and not run.detached
    assert await h.updates("alice", gen_id) == ["queued", "running", "cancelled"]


async def test_a_users_cancel_before_the_deadline_has_no_error_and_bounds_are_checked(harness: Any) -> None:
    tool = ScriptedTool()
    h = harness(tool)
    svc = await h.start()
    gen_id = (await svc.create("alice", "scripted", {}, cancel_after=600)).id
    await tool.started(1)
    cancelled = generation(await svc.cancel("alice", gen_id))
    assert cancelled["status"] == "cancelled" and "error" not in cancelled and "deadlineAt" in cancelled
    for bad in (0, -1, svc.max_cancel_after_seconds + 1):
        with pytest.raises(InputsInvalid) as refused:
            await svc.create("alice", "scripted", {}, cancel_after=bad)
        assert refused.value.errors[0].path == "$.cancelAfterSeconds"


async def test_queue_positions_move_as_runs_ahead_start_end_or_are_cancelled(harness: Any) -> None:
    tool = ScriptedTool(max_concurrency=1)
    h = harness(tool)
    svc = await h.start()
    first = (await svc.create("alice", "scripted", {})).id
    [run] = await tool.started(1)
    run.finish.set_result("ok")  # one completed run: the estimate can be made from now on
    await h.wait_status("alice", first, "completed")
    await svc.create("alice", "scripted", {})  # runs: the three after it queue
    await tool.started(2)
    b, c, d = [(await svc.create(user, "scripted", {})).id for user in ("bob", "carol", "dave")]
    got = [generation(await svc.get(user, gen_id)) for user, gen_id in (("bob", b), ("carol", c), ("dave", d))]
    assert [g["queuePosition"] for g in got] == [1, 2, 3]
    assert all(g["estimatedWaitSeconds"] >= 0 for g in got)
    assert got[2]["estimatedWaitSeconds"] == pytest.approx(3 * got[0]["estimatedWaitSeconds"], abs=0.005)  # rounded to ms

    tool.runs[1].finish.set_result("ok")  # a ends: b starts, c and d move up
    await tool.started(3)
    assert await eventually(lambda: _has(h, "dave", d, ("queued", 2)))
    assert await positions(h, "carol", c) == [("queued", 2), ("queued", 1)]
    assert generation(await svc.get("carol", c))["queuePosition"] == 1

    await svc.cancel("carol", c)  # the run ahead of d is cancelled: d is next
    assert await eventually(lambda: _has(h, "dave", d, ("queued", 1)))
    assert await positions(h, "dave", d) == [("queued", 3), ("queued", 2), ("queued", 1)]  # each change once
    await asyncio.sleep(3 * svc.dispatch_interval)  # ticks recompute, but nothing changed
    assert await positions(h, "dave", d) == [("queued", 3), ("queued", 2), ("queued", 1)]
    update = [e for e in await h.events("dave") if e["generationId"] == d][-1]
    assert update["estimatedWaitSeconds"] >= 0

    tool.runs[2].finish.set_result("ok")
    [*_, last] = await tool.started(4)
    assert last.ctx.generation_id == d
    assert await positions(h, "dave", d) == [("queued", 3), ("queued", 2), ("queued", 1), ("running", None)]
    last.finish.set_result("ok")
    await h.wait_status("dave", d, "completed")


async def _has(h: Any, user: str, gen_id: str, entry: tuple[str, int | None]) -> bool:
    return entry in await positions(h, user, gen_id)
