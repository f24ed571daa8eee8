"""What the service adds on top of the store: the periodic retention pass and the output
size limit turned into a failed run. Each test builds its service on the store it needs."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import text

from livegate.bus.memory import MemoryBus
from livegate.metrics import Metrics
from livegate.service.generations import GenerationService
from livegate.service.outputs import OutputStore
from livegate.service.publisher import Publisher
from livegate.store import GenerationRow, SqlStore, sqlite_url

from .conftest import ScriptedTool


@contextlib.asynccontextmanager
async def service(store: SqlStore, *tools: ScriptedTool, **options: Any) -> AsyncIterator[GenerationService]:
    bus = MemoryBus()
    await bus.start()
    svc = GenerationService(tools={t.spec.id: t for t in tools}, store=store, outputs=OutputStore(b"k" * 32, 3600),
                            publisher=Publisher(bus, Metrics()), **options)
    await svc.start()
    try:
        yield svc
    finally:
        await svc.stop()
        await bus.stop()


async def status_of(svc: GenerationService, gen_id: str, wanted: str, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            generation: dict[str, Any] = msgspec.json.decode(msgspec.json.encode(await svc.get("alice", gen_id)))
            if generation["status"] == wanted:
                return generation
            await asyncio.sleep(0.01)


async def test_retention_runs_shortly_after_start_and_keeps_unfinished_and_recent_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GenerationService, "retention_first_delay", 0.05)
    url = sqlite_url(tmp_path / "livegate.sqlite3")
    # rows written before the service starts, as a previous process left them
    seed = SqlStore(url)
    await seed.open()
    old, now = time.time() - 31 * 86400, time.time()
    for name, status, created, finished in [
            ("old_done", "completed", old, old + 1), ("old_failed", "failed", old, old + 2),
            ("recent", "completed", now - 60, now - 30)]:
        await seed.insert(GenerationRow(id=f"gen_{name}", user_id="alice", tool_id="scripted", status=status,
                                        inputs={}, created_at=created, updated_at=created, finished_at=finished))
    await seed.close()
    tool = ScriptedTool()
    async with service(SqlStore(url), tool, retention_days=30, retention_interval=3600) as svc:
        running = (await svc.create("alice", "scripted", {})).id
        await tool.started(1)
        async with asyncio.timeout(5):
            while await svc.store.get("gen_old_done") or await svc.store.get("gen_old_failed"):
                await asyncio.sleep(0.02)
        assert await svc.store.get("gen_recent") is not None
        assert (await status_of(svc, running, "running"))["id"] == running  # never touched


async def test_purge_keeps_everything_when_retention_is_off(tmp_path: Path) -> None:
    async with service(SqlStore(sqlite_url(tmp_path / "db.sqlite3")), ScriptedTool(), retention_days=0) as svc:
        old = time.time() - 3650 * 86400
        await svc.store.insert(GenerationRow(id="gen_ancient", user_id="alice", tool_id="scripted",
                                             status="completed", inputs={}, created_at=old, updated_at=old,
                                             finished_at=old))
        assert await svc.purge_expired() == 0
        assert await svc.store.get("gen_ancient") is not None


async def test_an_output_over_the_limit_fails_the_run_and_stores_nothing(tmp_path: Path) -> None:
    tool = ScriptedTool()  # its runs store b"Hello": 5 bytes
    store = SqlStore(sqlite_url(tmp_path / "db.sqlite3"), max_output_bytes=3)
    async with service(store, tool) as svc:
        gen_id = (await svc.create("alice", "scripted", {})).id
        (await tool.started(1))[0].finish.set_result("ok")
        failed = await status_of(svc, gen_id, "failed")
        assert failed["error"]["code"] == "tool_error" and "limit of 3 bytes" in failed["error"]["message"]
        assert failed["outputs"] == []
        async with store._tx(write=False) as conn:  # nothing of the refused output was kept
            kept = (await conn.execute(text("SELECT COUNT(*) FROM outputs"))).scalar()
            chunks = (await conn.execute(text("SELECT COUNT(*) FROM output_chunks"))).scalar()
        assert (kept, chunks) == (0, 0)
