"""The generation service on a memory bus and a temporary SQLite file, with a scripted
tool whose runs the test opens, fails and watches (no sockets, no sleeps)."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from livegate.bus.memory import MemoryBus
from livegate.errors import ToolError
from livegate.metrics import Metrics
from livegate.service.generations import GenerationService
from livegate.service.jobs import JobEngine
from livegate.service.outputs import OutputStore
from livegate.service.publisher import Publisher
from livegate.store import SqlStore, sqlite_url
from livegate.testing.spec_validation import assert_valid_message
from livegate.tools.base import RunContext, StoredOutput, ToolSpec


@dataclass
class Script:
    """One run of :class:`ScriptedTool`: it reports progress, then waits for ``finish``."""

    ctx: RunContext
    reattached: bool = False
    finish: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    stopped_upstream: bool = False
    detached: bool = False
    waiting: bool = False  # reported its progress and saved its ref: now waits for `finish`


class ScriptedTool:
    """A tool whose runs are driven by the test: ``await tool.started(n)`` then
    ``tool.runs[i].finish.set_result(...)`` (``"ok"``, a ``ToolError`` or ``None`` for a
    reattach that finds nothing). Cancellation is recorded as "the upstream was told"."""

    def __init__(self, tool_id: str = "scripted", *, max_concurrency: int = 4, timeout: float = 60.0,
                 can_reattach: bool = False) -> None:
        self.spec = ToolSpec(id=tool_id, kind="scripted", title=tool_id.title(), timeout_seconds=timeout,
                             max_concurrency=max_concurrency)
        self.can_reattach = can_reattach
        self.runs: list[Script] = []
        self._changed = asyncio.Event()

    @property
    def input_schema(self) -> dict[str, Any]:
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "additionalProperties": False,
            "properties": {"prompt": {"type": "string", "minLength": 1}, "n": {"type": "integer", "minimum": 1}},
        }

    async def started(self, count: int, timeout: float = 5.0) -> list[Script]:
        """Once ``count`` runs have started and are waiting for their ``finish``."""
        async with asyncio.timeout(timeout):
            while len(self.runs) < count or not all(r.waiting for r in self.runs[:count]):
                changed = self._changed
                await changed.wait()
        return self.runs

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _follow(self, ctx: RunContext, reattached: bool) -> list[StoredOutput] | None:
        script = Script(ctx, reattached=reattached)
        self.runs.append(script)
        self._notify()
        try:
            if self.can_reattach and not reattached:
                await ctx.save_upstream_ref(f"ref-{ctx.generation_id}")
            await ctx.progress(0.5, step=1, total_steps=2, message="halfway", partial_text="Hel")
            script.waiting = True
            self._notify()
            outcome = await script.finish
        except asyncio.CancelledError:
            script.detached = ctx.detaching
            script.stopped_upstream = not ctx.detaching
            raise
        if isinstance(outcome, ToolError):
            raise outcome
        if isinstance(outcome, Exception):
            raise outcome
        if outcome is None:
            return None
        await ctx.progress(1.0, step=2, total_steps=2, partial_text="Hello")
        text = await ctx.store_output(b"Hello", kind="text", media_type="text/plain; charset=utf-8")
        return [text]

    async def run(self, ctx: RunContext) -> list[StoredOutput]:
        outputs = await self._follow(ctx, reattached=False)
        assert outputs is not None
        return outputs

    async def reattach(self, ctx: RunContext) -> list[StoredOutput] | None:
        if not self.can_reattach or not ctx.upstream_ref:
            return None
        return await self._follow(ctx, reattached=True)

    async def aclose(self) -> None:
        return None


class Harness:
    """A service plus what a test needs to look at: the bus and each user's events."""

    def __init__(self, data_dir: Path, tools: list[Any], max_per_user: int = 4,
                 database_url: str | None = None) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.bus = MemoryBus()
        self.tools = {t.spec.id: t for t in tools}
        self.max_per_user = max_per_user
        self.service: GenerationService | None = None

    async def start(self) -> GenerationService:
        await self.bus.start()
        url = self.database_url or sqlite_url(self.data_dir / "livegate.sqlite3")
        self.service = GenerationService(
            tools=self.tools,
            store=SqlStore(url),
            outputs=OutputStore(b"k" * 32, 3600),
            publisher=Publisher(self.bus, Metrics()),
            engine=JobEngine(self.database_url, takeover_seconds=2.0),
            max_per_user=self.max_per_user,
            dispatch_interval=0.2,
        )
        await self.service.start()
        return self.service

    async def stop(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None
        await self.bus.stop()

    async def events(self, user_id: str) -> list[dict[str, Any]]:
        """Every event of the user's stream so far, each checked against asyncapi.yaml."""
        result = await self.bus.read(user_id, 0)
        return [assert_valid_message(e.data) for e in result.events]

    async def updates(self, user_id: str, gen_id: str | None = None) -> list[str]:
        return [e["status"] for e in await self.events(user_id)
                if e["type"] == "generationUpdate" and (gen_id is None or e["generationId"] == gen_id)]

    async def wait_status(self, user_id: str, gen_id: str, status: str, timeout: float = 5.0) -> dict[str, Any]:
        """Once the record has ``status`` *and* its ``generationUpdate`` is on the stream: the
        record is written first (the conditional write decides the one terminal update
        across processes), the event follows it."""
        assert self.service is not None
        async with asyncio.timeout(timeout):
            while True:
                generation = json.loads(_encode(await self.service.get(user_id, gen_id)))
                if generation["status"] == status and status in await self.updates(user_id, gen_id):
                    return generation
                await asyncio.sleep(0.01)


def _encode(value: Any) -> bytes:
    import msgspec

    return msgspec.json.encode(value)


@pytest.fixture(params=["sqlite", "postgres"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Callable[..., Harness]]:
    """Services on one store: the embedded default (SQLite, in-memory job engine) or
    PostgreSQL with procrastinate on it (a real server the tests start). Every service
    test runs on both: it is the conformance suite of the generation service."""
    made: list[Harness] = []
    database_url = None
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        database_url = server.create_database("svc_" + secrets.token_hex(4))

    def make(*tools: Any, max_per_user: int = 4) -> Harness:
        h = Harness(tmp_path, list(tools), max_per_user, database_url)
        made.append(h)
        return h

    yield make
    for h in made:
        await h.stop()
