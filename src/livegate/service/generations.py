"""The generation service: start, run, cancel, recover and describe tool runs.

Every transition of the table in :mod:`livegate.service.lifecycle` is saved to the store,
then published as a ``generationUpdate`` through the same :class:`Publisher` that
``POST /v1/events`` uses; progress is published as ``generationProgress``.

Concurrency: runs beyond the per-user or per-tool limit stay ``queued`` (FIFO) and start
when a slot frees. Cancellation cancels the run's task; tools stop their upstream work.
On start-up, runs left ``running`` by a dead process are re-attached when the tool can
(ComfyUI, by prompt id) and otherwise failed with ``interrupted_by_restart``; ``queued``
runs are queued again.

Input validation never blocks the event loop: before a tool's JSON Schema sees them,
``inputs`` are bounded in encoded size (``max_inputs_bytes``) and in the length of every
array in them (``max_input_items``) — jsonschema's ``uniqueItems`` compares every pair, so
3,000 items took 14 s — and the schema check itself runs in a worker thread, so even a
costly schema over bounded inputs only shares the loop (the GIL switches every 5 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import jsonschema
import msgspec

from livegate.errors import BusError, EventTooLarge, IllegalTransition, NotFound, ToolError
from livegate.protocol import http
from livegate.service.lifecycle import FINAL, check_transition
from livegate.service.outputs import OutputStore
from livegate.service.publisher import Publisher
from livegate.service.run_context import ServiceRunContext
from livegate.service.store import GenerationRow, GenerationStore, decode_cursor, encode_cursor
from livegate.tools.base import StoredOutput, Tool

# (spelled out here: inside GenerationService the name `list` is the method `list`)
StoredOutputs = list[StoredOutput]

log = logging.getLogger("livegate.generations")
_UNSET = msgspec.UNSET
DEFAULT_MAX_INPUTS_BYTES = 256 * 1024
DEFAULT_MAX_INPUT_ITEMS = 256


def _ts(value: float | None) -> Any:
    from datetime import UTC, datetime

    return _UNSET if value is None else datetime.fromtimestamp(value, UTC)


class InputsInvalid(Exception):
    def __init__(self, errors: list[http.ProblemItem]) -> None:
        super().__init__("inputs do not match the tool's schema")
        self.errors = errors


class GenerationService:
    def __init__(self, *, tools: dict[str, Tool], store: GenerationStore, outputs: OutputStore,
                 publisher: Publisher, max_per_user: int = 4, max_inputs_bytes: int = DEFAULT_MAX_INPUTS_BYTES,
                 max_input_items: int = DEFAULT_MAX_INPUT_ITEMS) -> None:
        self.tools = tools
        self.store = store
        self.outputs = outputs
        self.publisher = publisher
        self.max_per_user = max_per_user
        self.max_inputs_bytes = max_inputs_bytes
        self.max_input_items = max_input_items
        self._validators = {tid: jsonschema.Draft202012Validator(t.input_schema) for tid, t in tools.items()}
        self._pending: deque[str] = deque()
        self._rows: dict[str, GenerationRow] = {}  # queued and running, by id
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._contexts: dict[str, ServiceRunContext] = {}
        self._running_by_user: Counter[str] = Counter()
        self._running_by_tool: Counter[str] = Counter()
        self._stopping = False

    @classmethod
    def from_config(cls, config: Any, publisher: Publisher) -> GenerationService:
        from livegate.tools.registry import build_tool, default_tool_specs, load_tool_specs

        specs = load_tool_specs(Path(config.tools_file)) if config.tools_file else default_tool_specs()
        tools = {spec.id: build_tool(spec) for spec in specs}
        data_dir = Path(config.data_dir)
        return cls(
            tools=tools,
            store=GenerationStore(data_dir / "livegate.sqlite3"),
            outputs=OutputStore(data_dir / "outputs", config.url_signing_key, config.output_url_ttl_seconds),
            publisher=publisher,
            max_per_user=config.max_concurrency_per_user,
            max_inputs_bytes=config.max_inputs_bytes,
            max_input_items=config.max_input_items,
        )

    # -- lifecycle of the service ---------------------------------------------------------

    async def start(self) -> None:
        await self.store.open()
        await self._recover()

    async def stop(self) -> None:
        """Stop without cancelling upstream work: runs stay ``running`` in the store and
        are re-attached (or failed) by the next start."""
        self._stopping = True
        for ctx in self._contexts.values():
            ctx.detaching = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        for tool in self.tools.values():
            with contextlib.suppress(Exception):
                await tool.aclose()
        await self.store.close()

    async def health(self) -> dict[str, bool]:
        return {"database": await self.store.healthy()}

    async def _recover(self) -> None:
        for row in await self.store.unfinished():
            tool = self.tools.get(row.tool_id)
            if row.status == "queued" and tool is not None:
                self._rows[row.id] = row
                self._pending.append(row.id)
            elif row.status == "running" and tool is not None and row.upstream_ref:
                log.info("re-attaching generation", extra={"generation_id": row.id, "user_id": row.user_id})
                self._rows[row.id] = row
                self._launch(row, reattach=True)
            elif tool is None:
                reason = f"The tool {row.tool_id!r} is no longer configured"
                await self._finish(row, "failed", error={"code": "tool_error", "message": reason})
            else:
                reason = "The gateway restarted while this run was in flight and could not re-attach to it"
                await self._finish(row, "failed", error={"code": "interrupted_by_restart", "message": reason})
        self._schedule()

    # -- API ------------------------------------------------------------------------------

    def tool_infos(self) -> list[http.ToolInfo]:
        return [
            http.ToolInfo(id=t.spec.id, title=t.spec.title, kind=t.spec.kind, input_schema=t.input_schema,
                          description=t.spec.settings.get("description", _UNSET))
            for t in self.tools.values()
        ]

    def check_input_bounds(self, tool_id: str, inputs: dict[str, Any]) -> None:
        """Cheap, linear checks that must pass before the (costly) schema check."""
        if tool_id not in self._validators:
            raise NotFound(f"No tool {tool_id!r}", code="unknown_tool")
        size = len(msgspec.json.encode(inputs))
        if size > self.max_inputs_bytes:
            raise InputsInvalid([http.ProblemItem(
                message=f"inputs are {size} bytes encoded; the limit is {self.max_inputs_bytes}", path="$.inputs")])
        problems: list[http.ProblemItem] = []
        stack: list[tuple[str, Any]] = [("$.inputs", inputs)]
        while stack and len(problems) < 20:  # iterative: depth is bounded already, recursion is not needed
            path, value = stack.pop()
            if isinstance(value, dict):
                stack.extend((f"{path}.{key}", item) for key, item in value.items())
            elif isinstance(value, list):
                if len(value) > self.max_input_items:
                    problems.append(http.ProblemItem(
                        message=f"{len(value)} items; arrays in inputs hold at most {self.max_input_items}",
                        path=path))
                    continue
                stack.extend((f"{path}[{index}]", item) for index, item in enumerate(value))
        if problems:
            raise InputsInvalid(sorted(problems, key=lambda p: str(p.path)))

    def validate_inputs(self, tool_id: str, inputs: dict[str, Any]) -> None:
        validator = self._validators.get(tool_id)
        if validator is None:
            raise NotFound(f"No tool {tool_id!r}", code="unknown_tool")
        errors = sorted(validator.iter_errors(inputs), key=lambda e: list(e.absolute_path))
        if errors:
            raise InputsInvalid([
                http.ProblemItem(message=e.message, path="$.inputs" + "".join(
                    f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.absolute_path))
                for e in errors[:20]
            ])

    async def create(self, user_id: str, tool_id: str, inputs: dict[str, Any]) -> http.Generation:
        self.check_input_bounds(tool_id, inputs)
        await asyncio.to_thread(self.validate_inputs, tool_id, inputs)
        now = time.time()
        row = GenerationRow(id="gen_" + secrets.token_hex(8), user_id=user_id, tool_id=tool_id, status="queued",
                            inputs=inputs, created_at=now, updated_at=now)
        await self.store.insert(row)
        self._rows[row.id] = row
        self._pending.append(row.id)
        await self._publish_update(row)
        self._schedule()
        return await self.describe(row)

    async def get(self, user_id: str, gen_id: str) -> http.Generation:
        return await self.describe(await self._owned(user_id, gen_id))

    async def list(self, user_id: str, *, limit: int, cursor: str | None, status: str | None) -> http.GenerationPage:
        before = decode_cursor(cursor) if cursor else None
        rows = await self.store.list_for_user(user_id, limit=limit + 1, status=status, before=before)
        page = rows[:limit]
        items = [await self.describe(self._rows.get(r.id, r)) for r in page]
        next_cursor = encode_cursor(page[-1]) if len(rows) > limit else _UNSET
        return http.GenerationPage(items=items, next_cursor=next_cursor)

    async def cancel(self, user_id: str, gen_id: str) -> http.Generation:
        row = await self._owned(user_id, gen_id)
        live = self._rows.get(row.id)
        if live is None or live.status in FINAL:
            raise IllegalTransition(f"A {row.status} generation cannot be cancelled")
        task = self._tasks.get(live.id)
        if live.status == "queued" and task is None:
            with contextlib.suppress(ValueError):
                self._pending.remove(live.id)
            await self._finish(live, "cancelled")
        elif task is not None:
            task.cancel()
            # Wait (bounded) for the tool to stop its upstream work and the record to settle.
            await asyncio.wait([task], timeout=15.0)
        return await self.describe(self._rows.get(live.id) or await self._owned(user_id, gen_id))

    async def describe(self, row: GenerationRow) -> http.Generation:
        outputs = [self.outputs.describe(o) for o in await self.store.outputs(row.output_ids)]
        ctx = self._contexts.get(row.id)
        progress = ctx.snapshot if ctx is not None and ctx.snapshot is not None else _UNSET
        error = http.GenerationError(code=row.error["code"], message=row.error["message"],
                                     node_id=row.error.get("nodeId", _UNSET)) if row.error else _UNSET
        return http.Generation(
            id=row.id, tool_id=row.tool_id, status=row.status, inputs=row.inputs,  # type: ignore[arg-type]
            outputs=outputs, error=error, progress=progress, created_at=_ts(row.created_at),
            updated_at=_ts(row.updated_at), started_at=_ts(row.started_at), finished_at=_ts(row.finished_at),
        )

    async def _owned(self, user_id: str, gen_id: str) -> GenerationRow:
        row = self._rows.get(gen_id) or await self.store.get(gen_id)
        if row is None or row.user_id != user_id:
            raise NotFound(f"No generation {gen_id!r}")
        return row

    # -- scheduling and running -----------------------------------------------------------

    def _schedule(self) -> None:
        """Start every pending run whose user and tool have a free slot (FIFO otherwise)."""
        if self._stopping:
            return
        for gen_id in list(self._pending):
            row = self._rows.get(gen_id)
            if row is None or row.status != "queued":
                self._pending.remove(gen_id)
                continue
            tool = self.tools[row.tool_id]
            if (self._running_by_user[row.user_id] < self.max_per_user
                    and self._running_by_tool[row.tool_id] < tool.spec.max_concurrency):
                self._pending.remove(gen_id)
                self._launch(row, reattach=False)

    def _launch(self, row: GenerationRow, *, reattach: bool) -> None:
        self._running_by_user[row.user_id] += 1
        self._running_by_tool[row.tool_id] += 1
        ctx = ServiceRunContext(self, row)
        self._contexts[row.id] = ctx
        self._tasks[row.id] = asyncio.create_task(self._run(row, ctx, reattach), name=f"generation-{row.id}")

    async def _run(self, row: GenerationRow, ctx: ServiceRunContext, reattach: bool) -> None:
        tool = self.tools[row.tool_id]
        try:
            if not reattach:
                row.started_at = time.time()
                await self._transition(row, "running")
            async with asyncio.timeout(tool.spec.timeout_seconds):
                outputs = await (tool.reattach(ctx) if reattach else tool.run(ctx))
            await ctx.flush()
            if outputs is None:
                await self._finish(row, "failed", error={
                    "code": "interrupted_by_restart",
                    "message": "The gateway restarted and the upstream run could not be re-attached"})
            else:
                await self._complete(row, outputs)
        except asyncio.CancelledError:
            if not self._stopping:
                await self._finish(row, "cancelled")
        except TimeoutError:
            await self._finish(row, "failed", error={
                "code": "timeout", "message": f"The run exceeded the tool's limit of {tool.spec.timeout_seconds:g} s"})
        except ToolError as exc:
            error = {"code": exc.code, "message": exc.message}
            if exc.node_id:
                error["nodeId"] = exc.node_id
            await self._finish(row, "failed", error=error)
        except Exception as exc:
            log.exception("tool crashed", extra={"generation_id": row.id, "tool_id": row.tool_id})
            await self._finish(row, "failed", error={"code": "tool_error", "message": f"{type(exc).__name__}: {exc}"})
        finally:
            self._running_by_user[row.user_id] -= 1
            self._running_by_tool[row.tool_id] -= 1
            self._tasks.pop(row.id, None)
            self._contexts.pop(row.id, None)
            self._schedule()

    async def _complete(self, row: GenerationRow, outputs: StoredOutputs) -> None:
        row.output_ids = [o.id for o in outputs]
        await self._finish(row, "completed")

    async def _finish(self, row: GenerationRow, status: str, error: dict[str, Any] | None = None) -> None:
        if status not in FINAL or row.status in FINAL:
            return
        ctx = self._contexts.get(row.id)
        if ctx is not None:
            await ctx.flush()  # the last progress goes out before the final update
        row.error = error
        row.finished_at = time.time()
        await self._transition(row, status)
        self._rows.pop(row.id, None)

    async def _transition(self, row: GenerationRow, status: str) -> None:
        check_transition(row.status, status)
        row.status = status
        await self.store.save(row)
        await self._publish_update(row)

    async def _publish_update(self, row: GenerationRow) -> None:
        outputs: list[http.Output] | msgspec.UnsetType = _UNSET
        if row.status == "completed":
            outputs = [self.outputs.describe(o) for o in await self.store.outputs(row.output_ids)]
        error: http.GenerationError | msgspec.UnsetType = _UNSET
        if row.error:
            error = http.GenerationError(code=row.error["code"], message=row.error["message"],
                                         node_id=row.error.get("nodeId", _UNSET))
        event = http.GenerationUpdateInput(generation_id=row.id, tool_id=row.tool_id,
                                           status=row.status, outputs=outputs, error=error)  # type: ignore[arg-type]
        await self.publish(row.user_id, event)

    async def publish(self, user_id: str, event: Any) -> None:
        """Publish for a run; a bus outage is logged, never fatal to the run (the record
        stays right and clients resync over HTTP after ``recovered: false``)."""
        try:
            await self.publisher.publish_one(user_id, event)
        except BusError as exc:
            log.error("could not publish generation event: %s", exc.message, extra={"user_id": user_id})
        except EventTooLarge as exc:  # a tool's event over LIVEGATE_MAX_EVENT_BYTES: never on a stream
            log.warning("generation event dropped: %s", exc.message, extra={"user_id": user_id})
