"""What the service adds on top of the store: the periodic retention pass and the output
size limit turned into a failed run."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from livegate.service.generations import GenerationService
from livegate.store import GenerationRow, SqlStore, sqlite_url

from .conftest import ScriptedTool


async def test_retention_runs_shortly_after_start_and_keeps_unfinished_and_recent_rows(
    harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GenerationService, "retention_first_delay", 0.05)
    h = harness(ScriptedTool(), retention_days=30, retention_interval=3600)
    # rows written before the service starts, as a previous process left them
    seed = SqlStore(sqlite_url(h.data_dir / "livegate.sqlite3"))
    await seed.open()
    old, now = time.time() - 31 * 86400, time.time()
    for name, status, created, finished in [
            ("old_done", "completed", old, old + 1), ("old_failed", "failed", old, old + 2),
            ("old_queued", "queued", old, None), ("recent", "completed", now - 60, now - 30)]:
        await seed.insert(GenerationRow(id=f"gen_{name}", user_id="alice", tool_id="gone", status=status,
                                        inputs={}, created_at=created, updated_at=created, finished_at=finished))
    await seed.close()
    svc = await h.start()
    async with asyncio.timeout(5):
        while await svc.store.get("gen_old_done") or await svc.store.get("gen_old_failed"):
            await asyncio.sleep(0.02)
    assert await svc.store.get("gen_recent") is not None
    # the queued row of an unknown tool was failed at start (finished just now): kept
    kept = await svc.store.get("gen_old_queued")
    assert kept is not None and kept.status == "failed"


async def test_purge_keeps_everything_when_retention_is_off(harness: Any) -> None:
    svc = await harness(ScriptedTool(), retention_days=0).start()
    old = time.time() - 3650 * 86400
    await svc.store.insert(GenerationRow(id="gen_ancient", user_id="alice", tool_id="scripted", status="completed",
                                         inputs={}, created_at=old, updated_at=old, finished_at=old))
    assert await svc.purge_expired() == 0
    assert await svc.store.get("gen_ancient") is not None


async def test_an_output_over_the_limit_fails_the_run_and_stores_nothing(harness: Any) -> None:
    tool = ScriptedTool()
    h = harness(tool, store_options={"max_output_bytes": 3})  # the scripted tool stores b"Hello"
    svc = await h.start()
    gen_id = (await svc.create("alice", "scripted", {})).id
    (await tool.started(1))[0].finish.set_result("ok")
    failed = await h.wait_status("alice", gen_id, "failed")
    assert failed["error"]["code"] == "tool_error" and "limit of 3 bytes" in failed["error"]["message"]
    assert failed["outputs"] == []
    assert await h.updates("alice", gen_id) == ["queued", "running", "failed"]
