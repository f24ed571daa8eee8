"""The generation service: start, run, cancel, take over and describe tool runs
(openapi.yaml ``createGeneration``, ``getGeneration``, ``listGenerations``,
``cancelGeneration``; asyncapi.yaml ``generationUpdate`` / ``generationProgress``).

Every process of a deployment runs the same service on the same store (SQLite for the
embedded default, PostgreSQL for many processes) and the same job engine
(:mod:`livegate.service.jobs`). A run's life:

1. ``create`` (any process) inserts the record ``queued`` and publishes it.
2. *Dispatch* (any process: after a create, after a run ends, and every
   ``dispatch_interval``) claims, in one store transaction, the queued runs whose user and
   tool have a free slot across **all** processes (``max_per_user``, each tool's
   ``max_concurrency``), FIFO, and defers one job per claimed run.
3. A worker (any process with one) fetches the job: ``queued -> running``, the tool runs,
   and the record ends ``completed | failed | cancelled``. Every store write of the run is
   fenced by its ``attempt``: a runner that was declared dead and replaced loses every
   write, so exactly one end is recorded per run, and its terminal ``generationUpdate``
   published by that one runner (repeated only in the cases of "Bus outages" below).
4. A job whose process died is taken over by another worker (``running`` already): the
   tool re-attaches (ComfyUI by prompt id), restarts (demo: deterministic), or the run
   fails with ``interrupted_by_restart`` (OpenAI once its request went upstream).

Cancel (any process): a queued run is cancelled in the store; a running one gets its
job aborted, which reaches the worker running it by ``NOTIFY`` and cancels its task; the
tool stops its upstream work, and the runner records ``cancelled``.

Webhooks (:mod:`livegate.service.webhooks`): every lifecycle transition above inserts the
webhook deliveries it causes in the *same* store transaction (``Store.insert`` /
``Store.transition(..., deliveries=...)``), so a recorded status always has its deliveries;
a takeover (``running`` again) causes none. Any process's sweeper then delivers them.

Input validation never blocks the event loop: before a tool's JSON Schema sees them,
``inputs`` are bounded in encoded size (``max_inputs_bytes``) and in the length of every
array in them (``max_input_items``) — jsonschema's ``uniqueItems`` compares every pair, so
3,000 items took 14 s — and the schema check itself runs in a worker thread, so even a
costly schema over bounded inputs only shares the loop (the GIL switches every 5 ms).

Deadlines (``cancelAfterSeconds``, record field ``deadline_at``): the dispatch tick of every
process sweeps the runs still queued or running past their deadline (``Store.expired``)
and stops each through the cancel path (a queued one is cancelled in the store, a running
one gets its task cancelled here or its job aborted wherever it runs); the run ends
``cancelled`` with error ``deadline_exceeded`` — the runner tells a deadline from a user's
cancel by ``cancel_requested_at >= deadline_at``. A sweep that did not end a run (its
process was gone) is repeated after ``deadline_retry_seconds``.

Queue positions (:mod:`livegate.service.run_control`): after every dispatch a coalesced
refresh publishes a ``generationUpdate`` (still ``queued``, new ``queuePosition``, with
``estimatedWaitSeconds``) for each run whose position changed, once across processes. A
tool may report a running run's place in its upstream's own queue
(``RunContext.report_queue_position``: ComfyUI's), published the same way.

Retention: every ``retention_interval`` seconds (first shortly after start) final
generations older than ``retention_days`` are deleted with their outputs, in bounded
batches (``Store.delete_finished_before``); ``queued``/``running`` rows are never touched.
With many processes each one runs it; the deletes are idempotent.

Store outages: the HTTP API answers 503 (``StoreUnavailable``); a run that ends during
the outage keeps retrying its final write (bounded by ``store_retry_seconds``) and
publishes its terminal update once the record is saved — so the stream never announces
what the records do not hold.

Bus outages: a lifecycle update (``generationUpdate``) that cannot be published because the
bus is down is kept in memory, in order per user, and published again with backoff (bounded
by ``store_retry_seconds`` and :data:`MAX_UNPUBLISHED_PER_USER`) — without that a run ending
while Redis restarts with its data (same epoch, so no ``recovered: false``) would be
recorded as ended while no client is ever told (found by the chaos soak). Progress is not
kept: the next progress or the final update supersedes it.

A run's *end* is durable besides (:mod:`livegate.service.outbox`): the record says whether
its terminal update was published (``announced_at``, set once a publish succeeded), and
every process's dispatch tick sweeps the ends unannounced for longer than
``announce_grace_seconds`` (``LIVEGATE_ANNOUNCE_GRACE_SECONDS``) and republishes them from
the record — so an end survives a SIGKILL of its process while the bus is down, or between
recording and publishing it. The embedded process sweeps at start too, without the grace
(the previous process of its data directory is gone). The memory backlog stays: it keeps a
user's updates in order (``running`` before the end), republishes within a couple of
seconds of the bus coming back (the sweep waits for the grace and a tick), and keeps the
intermediate updates the outbox does not hold; before republishing an end it takes the
end's lease in the store, so a sweep elsewhere does not publish it at the same moment.

Repeats: an end may be announced twice — the sweep of another process and this process's
backlog racing after a long outage, a process killed after publishing and before marking,
Redis failing *after* appending a publish (the connection died before its answer) — each
time at a new offset, always the same record. Clients treat ``generationUpdate`` as the
run's state, so a repeat is harmless; a lost end is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import msgspec

from livegate.errors import (
    BusError,
    EventTooLarge,
    IllegalTransition,
    NotFound,
    StoreUnavailable,
    ToolError,
    TooManyQueued,
)
from livegate.protocol import http
from livegate.service.jobs import JobEngine
from livegate.service.lifecycle import FINAL, check_transition
from livegate.service.outbox import DEFAULT_ANNOUNCE_GRACE_SECONDS, Outbox
from livegate.service.outputs import OutputStore
from livegate.service.publisher import Publisher
from livegate.service.run_context import ServiceRunContext
from livegate.service.run_control import QueuePositions, cancel_error, deadline_error
from livegate.service.webhooks import WebhooksDisabled, WebhookService
from livegate.store import DeliveryRow, GenerationRow, SqlStore, Store, decode_cursor, encode_cursor
from livegate.tools.base import StoredOutput, Tool

# (spelled out here: inside GenerationService the name `list` is the method `list`)
StoredOutputs = list[StoredOutput]
Deliveries = list[DeliveryRow]
T = TypeVar("T")

log = logging.getLogger("livegate.generations")
_UNSET = msgspec.UNSET
UNFINISHED = frozenset({"queued", "running"})
DEFAULT_MAX_INPUTS_BYTES = 256 * 1024
DEFAULT_MAX_INPUT_ITEMS = 256
DEFAULT_MAX_CANCEL_AFTER_SECONDS = 86400.0


def _ts(value: float | None) -> Any:
    from datetime import UTC, datetime

    return _UNSET if value is None else datetime.fromtimestamp(value, UTC)


def _opt(value: Any) -> Any:
    return _UNSET if value is None else value


def process_name() -> str:
    """Who runs a generation, as recorded in its ``owner``: host, pid and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class InputsInvalid(Exception):
    def __init__(self, errors: list[http.ProblemItem], message: str = "The inputs do not match the tool's input schema") -> None:
        super().__init__(message)
        self.message = message
        self.errors = errors


#: Lifecycle updates of one user kept for republishing while the bus is down; beyond it the
#: oldest are dropped (logged at error level). A user has at most a few runs changing state.
MAX_UNPUBLISHED_PER_USER = 1000


class _Stopping(Exception):
    """The process stops while a store write is being retried."""


class GenerationService:
    retention_first_delay = 10.0  # seconds after start: not in the way of recovery
    retention_batch = 200  # generations per delete transaction
    deadline_batch = 100  # expired runs one sweep stops at most
    deadline_retry_seconds = 10.0  # a swept run that has not ended by then is swept again

    def __init__(self, *, tools: dict[str, Tool], store: Store, outputs: OutputStore,
                 publisher: Publisher, engine: JobEngine | None = None, max_per_user: int = 4,
                 dispatch_interval: float = 1.0, store_retry_seconds: float = 600.0,
                 store_start_timeout: float = 60.0,
                 cancel_wait_seconds: float = 15.0, retention_days: float = 30.0,
                 retention_interval: float = 3600.0, max_inputs_bytes: int = DEFAULT_MAX_INPUTS_BYTES,
                 max_input_items: int = DEFAULT_MAX_INPUT_ITEMS, max_queued_per_user: int = 50,
                 tool_share_per_user: float = 1.0, webhooks: WebhookService | None = None,
                 max_cancel_after_seconds: float = DEFAULT_MAX_CANCEL_AFTER_SECONDS,
                 announce_grace_seconds: float = DEFAULT_ANNOUNCE_GRACE_SECONDS) -> None:
        self.webhooks = webhooks
        self.max_cancel_after_seconds = max_cancel_after_seconds
        self.max_queued_per_user = max_queued_per_user
        self.tool_share_per_user = tool_share_per_user
        self.max_inputs_bytes = max_inputs_bytes
        self.max_input_items = max_input_items
        self.retention_days = retention_days
        self.retention_interval = retention_interval
        self._retention_task: asyncio.Task[None] | None = None
        self.tools = tools
        self.store = store
        self.outputs = outputs
        self.publisher = publisher
        self.engine = engine or JobEngine(None)
        self.max_per_user = max_per_user
        self.dispatch_interval = dispatch_interval
        self.store_retry_seconds = store_retry_seconds
        self.store_start_timeout = store_start_timeout
        self.cancel_wait_seconds = cancel_wait_seconds
        self.owner = process_name()
        self.positions = QueuePositions(store, tools, lambda row, position: self._publish_update(row, position=position))
        self._validators = {tid: jsonschema.Draft202012Validator(t.input_schema) for tid, t in tools.items()}
        self._contexts: dict[str, ServiceRunContext] = {}  # runs of this process, by id
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._ended: dict[str, asyncio.Event] = {}
        self._dispatch_lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self._stopping = False
        self._unpublished: dict[str, deque[http.GenerationUpdateInput]] = {}  # user -> updates to retry
        self._republishers: set[asyncio.Task[None]] = set()
        self.outbox = Outbox(store, publisher, self._update_event, self._unpublished.__contains__,
                             grace_seconds=announce_grace_seconds)

    @classmethod
    def from_config(cls, config: Any, publisher: Publisher) -> GenerationService:
        from livegate.tools.registry import build_tool, default_tool_specs, load_tool_specs

        specs = load_tool_specs(Path(config.tools_file)) if config.tools_file else default_tool_specs()
        tools = {spec.id: build_tool(spec) for spec in specs}
        engine = JobEngine(config.database_url, concurrency=config.worker_concurrency,
                           takeover_seconds=config.takeover_seconds, run_worker=config.run_worker)
        store = SqlStore.from_config(config)
        return cls(
            tools=tools,
            store=store,
            outputs=OutputStore(config.url_signing_key, config.output_url_ttl_seconds),
            publisher=publisher,
            engine=engine,
            max_per_user=config.max_concurrency_per_user,
            retention_days=config.retention_days,
            retention_interval=config.retention_interval_seconds,
            max_inputs_bytes=config.max_inputs_bytes,
            max_input_items=config.max_input_items,
            max_queued_per_user=config.max_queued_per_user,
            tool_share_per_user=config.tool_share_per_user,
            webhooks=WebhookService.from_config(config, store, process_name()),
            max_cancel_after_seconds=config.max_cancel_after_seconds,
            announce_grace_seconds=config.announce_grace_seconds,
            store_start_timeout=config.store_start_timeout_seconds,
        )

    # -- lifecycle of the service ---------------------------------------------------------

    async def start(self) -> None:
        self._stopping = False
        self.positions.start()
        await self._open_store()
        await self.engine.open(self._run_job, list(self.tools))
        if not self.engine.durable:
            await self._recover_embedded()
            await self.outbox.sweep_quietly(grace=0.0)  # the ends the previous process left unannounced
        await self.engine.start()
        await self._dispatch_quietly()
        self._ticker = asyncio.create_task(self._tick_forever(), name="livegate-dispatch")
        if self.webhooks is not None:
            self.webhooks.start(self.describe)
        if self.retention_days > 0:
            self._retention_task = asyncio.create_task(self._retention_loop(), name="generation-retention")

    async def _open_store(self) -> None:
        """Open (and migrate) the store; a database that does not answer yet is retried for
        ``store_start_timeout`` seconds (``LIVEGATE_STORE_START_TIMEOUT``): a gateway started
        with its database, or restarted during its outage, waits for it (found by the soak:
        a process restarted while PostgreSQL was down exited at once)."""
        deadline = time.monotonic() + self.store_start_timeout
        delay = 0.2
        while True:
            try:
                await self.store.open()
                return
            except StoreUnavailable as exc:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("the database is unavailable at start, retrying in %.1f s: %s", delay, exc.message)
            await asyncio.sleep(delay)  # backoff between attempts
            delay = min(delay * 2, 5.0)

    async def stop(self) -> None:
        """Stop without cancelling upstream work: runs of this process stay ``running``;
        with a durable engine they are handed to another process at once, otherwise the
        next start of this data directory takes them over."""
        self._stopping = True
        await self.positions.stop()
        for task in (self._ticker, self._retention_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._ticker = self._retention_task = None
        if self.webhooks is not None:
            await self.webhooks.stop()
        for ctx in self._contexts.values():
            ctx.detaching = True
        handed_over = [(gen_id, ctx.tool_id) for gen_id, ctx in self._contexts.items()]
        running = list(self._tasks.values())
        for task in running:
            task.cancel()  # the runner sees _stopping: the run stays `running`, upstream untouched
        if running:
            await asyncio.wait(running, timeout=10.0)
        await self.engine.stop_worker()
        if self.engine.durable:
            for gen_id, tool_id in handed_over:
                with contextlib.suppress(Exception):
                    await self.engine.defer(gen_id, tool_id)
        await self.engine.close()
        for task in list(self._republishers):
            task.cancel()
        await asyncio.gather(*self._republishers, return_exceptions=True)
        for tool in self.tools.values():
            with contextlib.suppress(Exception):
                await tool.aclose()
        await self.store.close()

    async def health(self) -> dict[str, bool]:
        return {"database": await self.store.healthy()}

    async def purge_expired(self, now: float | None = None) -> int:
        """Delete final generations (and their outputs) finished more than
        ``retention_days`` ago, batch by batch; how many generations went."""
        if self.retention_days <= 0:
            return 0
        cutoff = (now if now is not None else time.time()) - self.retention_days * 86400
        total = 0
        while True:
            deleted = await self.store.delete_finished_before(cutoff, self.retention_batch)
            total += deleted
            if deleted < self.retention_batch:
                return total
            await asyncio.sleep(0)  # let requests in between batches

    async def _retention_loop(self) -> None:
        delay = min(self.retention_first_delay, self.retention_interval)
        while True:
            await asyncio.sleep(delay)  # the retention period itself
            delay = self.retention_interval
            try:
                deleted = await self.purge_expired()
            except StoreUnavailable as exc:
                log.warning("retention skipped: %s", exc.message)
                continue
            except Exception:
                log.exception("retention failed")
                continue
            if deleted:
                log.info("retention deleted %d generations older than %g days", deleted, self.retention_days)

    async def _recover_embedded(self) -> None:
        """The in-memory engine lost its jobs with the last process: claims of queued runs
        are released, running runs get a takeover job, runs of tools no longer configured
        fail. (With a durable engine nothing is lost: a run of a tool this process lacks
        waits for a process that has it — a rolling deploy may still have one.)"""
        for row in await self.store.unfinished():
            if row.tool_id not in self.tools:
                reason = f"The tool {row.tool_id!r} is no longer configured"
                await self._finish(row, "failed", error={"code": "tool_error", "message": reason})
            elif row.status == "queued" and row.dispatched_at is not None:
                await self.store.update(row.id, dispatched_at=None, job_id=None, owner=None)
            elif row.status == "running":
                job_id = await self.engine.defer(row.id, row.tool_id)
                await self.store.update(row.id, job_id=job_id)

    async def _tick_forever(self) -> None:
        ticks = 0
        while not self._stopping:
            await asyncio.sleep(self.dispatch_interval)  # the dispatch period itself
            try:
                await self.sweep_deadlines()
            except StoreUnavailable as exc:
                log.warning("deadline sweep postponed: %s", exc.message)
            await self._dispatch_quietly()
            await self.outbox.sweep_quietly()
            ticks += 1
            if ticks % 10 == 0:
                try:
                    await self.redefer_lost_claims()
                except StoreUnavailable as exc:
                    log.warning("lost-claim sweep postponed: %s", exc.message)

    async def redefer_lost_claims(self, older_than: float = 30.0) -> int:
        """A run claimed (``dispatched_at``) whose job never got deferred — its process
        died between the two, or the defer failed — would hold its slot for ever: defer
        it again. (The job's ``lock`` keeps a late duplicate from running twice at once,
        and the runner's conditional ``queued -> running`` lets only one of them start.)"""
        now = time.time()
        unfinished = [r for r in await self.store.unfinished() if r.tool_id in self.tools]
        lost = [r for r in unfinished
                if r.status == "queued" and r.dispatched_at is not None and r.job_id is None
                and now - r.dispatched_at > older_than]
        # A running run whose job ended without ending it (its runner failed on a database
        # outage before it recorded anything: the job is gone, the record says `running`)
        # is taken over like the run of a dead process. Found by the chaos soak.
        for row in unfinished:
            if (row.status == "running" and row.job_id and row.id not in self._tasks
                    and now - row.updated_at > self.engine.takeover_seconds and self.engine.durable
                    and not await self.engine.exists(row.job_id)):
                lost.append(row)
        for row in lost:
            log.warning("deferring a run whose job was lost", extra={"generation_id": row.id, "status": row.status})
            job_id = await self.engine.defer(row.id, row.tool_id)
            await self.store.update(row.id, job_id=job_id)
        return len(lost)

    async def _dispatch_quietly(self) -> None:
        try:
            await self.dispatch()
        except StoreUnavailable as exc:
            log.warning("dispatch postponed: %s", exc.message)
        self.positions.soon()

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

    async def create(self, user_id: str, tool_id: str, inputs: dict[str, Any], *, webhook_url: str | None = None,
                     webhook_events: list[str] | None = None, cancel_after: float | None = None) -> http.Generation:
        """openapi.yaml ``createGeneration``; ``cancel_after`` is ``cancelAfterSeconds``. Raises
        ``WebhooksDisabled`` / ``WebhookRefused`` for a ``webhook_url`` this deployment does not take."""
        if cancel_after is not None and not 0 < cancel_after <= self.max_cancel_after_seconds:
            raise InputsInvalid([http.ProblemItem(
                message=f"cancelAfterSeconds must be more than 0 and at most {self.max_cancel_after_seconds:g}",
                path="$.cancelAfterSeconds")], "cancelAfterSeconds is out of bounds")
        self.check_input_bounds(tool_id, inputs)
        await asyncio.to_thread(self.validate_inputs, tool_id, inputs)
        if webhook_url is not None:
            if self.webhooks is None:
                raise WebhooksDisabled("This deployment does not accept a webhookUrl per generation")
            webhook_events = await self.webhooks.check_request(webhook_url, webhook_events)
        else:
            webhook_events = None
        queued = await self.store.count_queued(user_id)
        if queued >= self.max_queued_per_user:
            raise TooManyQueued(f"You have {queued} generations queued, the most a user may have; "
                                "create more once some have started")
        now = time.time()
        row = GenerationRow(id="gen_" + secrets.token_hex(8), user_id=user_id, tool_id=tool_id, status="queued",
                            inputs=inputs, created_at=now, updated_at=now, webhook_url=webhook_url,
                            webhook_events=webhook_events,
                            deadline_at=None if cancel_after is None else now + cancel_after)
        deliveries = self._plan_webhooks(row, "queued", now)
        # With its position: refreshes publish only changes.
        row = await self.store.insert_queued(row, deliveries)
        self._wake_webhooks(deliveries)
        await self._publish_update(row, position=row.queue_position)
        await self._dispatch_quietly()
        return await self.describe(row)

    async def get(self, user_id: str, gen_id: str) -> http.Generation:
        return await self.describe(await self._owned(user_id, gen_id))

    async def list(self, user_id: str, *, limit: int, cursor: str | None, status: str | None) -> http.GenerationPage:
        before = decode_cursor(cursor) if cursor else None
        rows = await self.store.list_for_user(user_id, limit=limit + 1, status=status, before=before)
        page = rows[:limit]
        items = [await self.describe(r) for r in page]
        next_cursor = encode_cursor(page[-1]) if len(rows) > limit else _UNSET
        return http.GenerationPage(items=items, next_cursor=next_cursor)

    async def cancel(self, user_id: str, gen_id: str) -> http.Generation:
        """openapi.yaml ``cancelGeneration`` (and asyncapi.yaml ``cancel``, in-band)."""
        row = await self._owned(user_id, gen_id)
        if row.status in FINAL:
            raise IllegalTransition(f"A {row.status} generation cannot be cancelled")
        ended = self._ended.setdefault(gen_id, asyncio.Event())
        won = await self._stop(row, time.time())
        if won is not None:
            if gen_id not in self._tasks:
                self._ended.pop(gen_id, None)
            return await self.describe(won)
        # Running (or it started meanwhile): stopped wherever it runs; wait for the record.
        deadline = time.monotonic() + self.cancel_wait_seconds
        while time.monotonic() < deadline:
            current = await self.store.get(gen_id)
            if current is None or current.status in FINAL:
                break
            with contextlib.suppress(TimeoutError):
                # Woken at once when the run is in this process; else the record is
                # read again every 50 ms until the worker elsewhere has recorded the end.
                await asyncio.wait_for(ended.wait(), timeout=0.05)
        if gen_id not in self._tasks:
            self._ended.pop(gen_id, None)  # (a local run pops its own when it ends)
        return await self.describe(await self._owned(user_id, gen_id))

    def local_text(self, gen_id: str) -> str | None:
        """The text streamed so far by a run of this process (``None``: not running here)."""
        ctx = self._contexts.get(gen_id)
        return ctx.text if ctx is not None else None

    async def saved_text(self, gen_id: str) -> str | None:
        """The text streamed so far: this process's run, else the snapshot its runner saved
        (about once a second); ``None`` when there is none."""
        local = self.local_text(gen_id)
        if local is not None:
            return local
        row = await self.store.get(gen_id)
        text = (row.progress or {}).get("partialText") if row is not None and row.status == "running" else None
        return text if isinstance(text, str) else None

    async def _stop(self, row: GenerationRow, now: float, error: dict[str, Any] | None = None) -> GenerationRow | None:
        """The cancel path, shared by ``cancel`` and the deadline sweep: a queued run ends
        ``cancelled`` here (the row is returned); a running one has its task cancelled (in
        this process) or its job aborted (elsewhere) and its runner records the end."""
        gen_id = row.id
        # Recorded first: a job that starts from now on sees it and ends `cancelled`.
        await self.store.update(gen_id, cancel_requested_at=now)
        if row.status == "queued":
            deliveries = self._plan_webhooks(row, "cancelled", now)
            won = await self.store.transition(gen_id, {"queued"}, "cancelled", finished_at=now, error=error,
                                              queue_position=None, deliveries=deliveries)
            if won is not None:
                self._wake_webhooks(deliveries)
                await self._publish_update(won)
                if won.job_id:
                    await self.engine.abort(won.job_id)
                if won.dispatched_at is not None:
                    await self._dispatch_quietly()  # its claimed slot is free again
                else:
                    self.positions.soon()  # the runs behind it move up
                return won
        local = self._tasks.get(gen_id)
        if local is not None:
            local.cancel()
        else:
            current = await self.store.get(gen_id)
            if current is not None and current.job_id and current.status not in FINAL:
                await self.engine.abort(current.job_id)
        return None

    async def sweep_deadlines(self, now: float | None = None) -> int:
        """Stop the runs still queued or running past their ``deadline_at`` (any process's
        runs: the cancel path reaches them); how many were swept."""
        now = time.time() if now is None else now
        expired = await self.store.expired(now, retry_after=self.deadline_retry_seconds, limit=self.deadline_batch)
        for row in expired:
            log.info("deadline exceeded", extra={"generation_id": row.id, "user_id": row.user_id})
            await self._stop(row, now, deadline_error(row))
        return len(expired)

    async def _cancel_error(self, gen_id: str) -> dict[str, Any] | None:
        """``deadline_exceeded`` for a deadline's cancel, else ``None`` (a user's)."""
        return cancel_error(await self.retrying(lambda: self.store.get(gen_id)))

    async def publish_remote_position(self, row: GenerationRow) -> None:
        """A running run's place in its upstream's queue changed (``None``: it left it)."""
        await self._publish_update(row, position=row.queue_position)

    async def describe(self, row: GenerationRow) -> http.Generation:
        outputs = [self.outputs.describe(o) for o in await self.store.outputs(row.output_ids)]
        progress: Any = _UNSET
        if row.status == "running":  # the live snapshot here, else the one saved by the runner
            ctx = self._contexts.get(row.id)
            if ctx is not None and ctx.snapshot is not None:
                progress = ctx.snapshot
            elif row.progress:
                progress = msgspec.convert(row.progress, http.ProgressSnapshot)
        error = http.GenerationError(code=row.error["code"], message=row.error["message"],
                                     node_id=row.error.get("nodeId", _UNSET)) if row.error else _UNSET
        position = await self.positions.position_now(row)
        estimate = await self.positions.estimate(row.tool_id, position) if row.status == "queued" else None
        return http.Generation(
            id=row.id, tool_id=row.tool_id, status=row.status, inputs=row.inputs,  # type: ignore[arg-type]
            outputs=outputs, error=error, progress=progress, deadline_at=_ts(row.deadline_at),
            queue_position=_opt(position), estimated_wait_seconds=_opt(estimate), created_at=_ts(row.created_at),
            updated_at=_ts(row.updated_at), started_at=_ts(row.started_at), finished_at=_ts(row.finished_at),
        )

    async def _owned(self, user_id: str, gen_id: str) -> GenerationRow:
        row = await self.store.get(gen_id)
        if row is None or row.user_id != user_id:
            raise NotFound(f"No generation {gen_id!r}")
        return row

    # -- dispatch -------------------------------------------------------------------------

    async def dispatch(self) -> int:
        """Claim every queued run that fits the limits of all processes together and defer
        its job. Returns how many were dispatched."""
        if self._stopping:
            return 0
        async with self._dispatch_lock:
            limits = {tid: t.spec.max_concurrency for tid, t in self.tools.items()}
            claimed = await self.store.claim_dispatchable(self.max_per_user, limits, time.time(), self.owner,
                                                          tool_share=self.tool_share_per_user)
            for row in claimed:
                job_id = await self.engine.defer(row.id, row.tool_id)
                await self.store.update(row.id, job_id=job_id)
            return len(claimed)

    # -- running (the job engine's runner) -----------------------------------------------

    async def _run_job(self, gen_id: str) -> None:
        """Run (or take over) one generation; called by a worker of the job engine. Its first
        reads and writes ride out a database outage (a failed job would leave the run behind)."""
        row = await self.retrying(lambda: self.store.get(gen_id))
        if row is None or row.status in FINAL:
            return
        tool = self.tools.get(row.tool_id)
        if tool is None:
            reason = f"The tool {row.tool_id!r} is no longer configured"
            await self._finish(row, "failed", error={"code": "tool_error", "message": reason})
            return
        takeover = row.status == "running"
        now = time.time()
        fields: dict[str, Any] = {"owner": self.owner, "attempt": row.attempt + 1, "queue_position": None}
        if not takeover:
            fields["started_at"] = now
        deliveries = [] if takeover else self._plan_webhooks(row, "running", now)
        status, attempt = row.status, row.attempt
        won = await self.retrying(lambda: self.store.transition(
            gen_id, {status}, "running", expect_attempt=attempt, deliveries=deliveries, **fields))
        if won is None:
            return  # cancelled, or taken by another runner, meanwhile
        self._wake_webhooks(deliveries)
        row = won
        if not takeover:
            await self._publish_update(row)
        else:
            log.info("taking over generation", extra={"generation_id": row.id, "user_id": row.user_id})
        if row.cancel_requested_at is not None:
            await self._finish(row, "cancelled", error=await self._cancel_error(row.id))
            return
        ctx = ServiceRunContext(self, row)
        self._contexts[row.id] = ctx
        current = asyncio.current_task()
        if current is not None:
            self._tasks[row.id] = current
        try:
            await self._execute(row, tool, ctx, takeover)
        finally:
            self._tasks.pop(row.id, None)
            self._contexts.pop(row.id, None)
            ended = self._ended.pop(row.id, None)
            if ended is not None:
                ended.set()
        if not self._stopping:
            await self._dispatch_quietly()

    async def _execute(self, row: GenerationRow, tool: Tool, ctx: ServiceRunContext, takeover: bool) -> None:
        started = row.started_at or time.time()
        budget = max(0.0, tool.spec.timeout_seconds - (time.time() - started))
        try:
            async with asyncio.timeout(budget):
                outputs = await (tool.reattach(ctx) if takeover else tool.run(ctx))
            await ctx.flush()
            if outputs is None:
                await self._finish(row, "failed", error={
                    "code": "interrupted_by_restart",
                    "message": "The process running this generation stopped and the run could not be "
                               "re-attached or restarted"})
            else:
                row.output_ids = [o.id for o in outputs]
                await self._finish(row, "completed")
        except asyncio.CancelledError:
            if self._stopping:
                return  # handed over (durable) or resumed by the next start: stays running
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            await self._finish(row, "cancelled", error=await self._cancel_error(row.id))
        except TimeoutError:
            await self._finish(row, "failed", error={
                "code": "timeout", "message": f"The run exceeded the tool's limit of {tool.spec.timeout_seconds:g} s"})
        except ToolError as exc:
            error = {"code": exc.code, "message": exc.message}
            if exc.node_id:
                error["nodeId"] = exc.node_id
            await self._finish(row, "failed", error=error)
        except _Stopping:
            return
        except Exception as exc:
            log.exception("tool crashed", extra={"generation_id": row.id, "tool_id": row.tool_id})
            await self._finish(row, "failed", error={"code": "tool_error", "message": f"{type(exc).__name__}: {exc}"})

    async def _finish(self, row: GenerationRow, status: str, error: dict[str, Any] | None = None) -> None:
        """Record the end (exactly once across processes), then publish it."""
        if status not in FINAL or row.status in FINAL:
            return
        check_transition(row.status, status)
        ctx = self._contexts.get(row.id)
        if ctx is not None:
            await ctx.flush()  # the last progress goes out before the final update
            ctx.closed = True  # and nothing after it
        fence = row.attempt if row.status == "running" else None
        now = time.time()
        deliveries = self._plan_webhooks(row, status, now)
        won = await self.retrying(lambda: self.store.transition(
            row.id, {row.status}, status, expect_attempt=fence, error=error, output_ids=row.output_ids,
            finished_at=now, deliveries=deliveries))
        if won is None:
            return  # another runner (or a cancel) recorded the end first
        self._wake_webhooks(deliveries)
        row.status, row.error, row.finished_at = won.status, won.error, won.finished_at
        if won.status == "completed":
            self.positions.forget_durations(won.tool_id)  # a new duration for the estimate
        await self._publish_update(won)

    def _plan_webhooks(self, row: GenerationRow, status: str, now: float) -> Deliveries:
        return self.webhooks.plan(row, status, now) if self.webhooks is not None else []

    def _wake_webhooks(self, deliveries: Deliveries) -> None:
        if deliveries and self.webhooks is not None:
            self.webhooks.wake()

    async def webhook_deliveries(self, user_id: str, gen_id: str) -> http.WebhookDeliveryList:
        """openapi.yaml ``listGenerationWebhooks`` (another user's generation: ``NotFound``)."""
        await self._owned(user_id, gen_id)
        if self.webhooks is None:
            return http.WebhookDeliveryList(deliveries=[])
        return await self.webhooks.list_for(gen_id)

    async def retrying(self, write: Callable[[], Awaitable[T]]) -> T:
        """A store write that must not be lost to an outage: retried with backoff for
        ``store_retry_seconds`` (then the outage is reported)."""
        deadline = time.monotonic() + self.store_retry_seconds
        delay = 0.05
        while True:
            try:
                return await write()
            except StoreUnavailable as exc:
                if self._stopping:
                    raise _Stopping from exc
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("store unavailable, retrying in %.2f s: %s", delay, exc.message)
            await asyncio.sleep(delay)  # backoff between attempts of one write
            delay = min(delay * 2, 2.0)

    async def _publish_update(self, row: GenerationRow, *, position: int | None = None) -> None:
        """Publish the record's ``generationUpdate``; ``position`` (a queued run's, or a
        running run's remote one) only where a position is being announced."""
        await self._publish_lifecycle(row.user_id, await self._update_event(row, position=position))

    async def _update_event(self, row: GenerationRow, *, position: int | None = None) -> http.GenerationUpdateInput:
        outputs: list[http.Output] | msgspec.UnsetType = _UNSET
        if row.status == "completed":
            outputs = [self.outputs.describe(o) for o in await self.store.outputs(row.output_ids)]
        error: http.GenerationError | msgspec.UnsetType = _UNSET
        if row.error:
            error = http.GenerationError(code=row.error["code"], message=row.error["message"],
                                         node_id=row.error.get("nodeId", _UNSET))
        estimate = await self.positions.estimate(row.tool_id, position) if row.status == "queued" else None
        event = http.GenerationUpdateInput(generation_id=row.id, tool_id=row.tool_id,
                                           status=row.status, outputs=outputs, error=error,  # type: ignore[arg-type]
                                           deadline_at=_ts(row.deadline_at), queue_position=_opt(position),
                                           estimated_wait_seconds=_opt(estimate))
        return event

    async def _publish_lifecycle(self, user_id: str, event: http.GenerationUpdateInput) -> None:
        """Publish a lifecycle update now, or keep it for :meth:`_republish` (see the module
        docstring, "Bus outages"); updates of one user keep their order either way."""
        backlog = self._unpublished.get(user_id)
        if backlog is None:
            try:
                await self.publisher.publish_one(user_id, event)
            except BusError as exc:
                log.warning("could not publish a generation update, will retry: %s", exc.message,
                            extra={"user_id": user_id, "generation_id": event.generation_id})
            else:
                if event.status in FINAL:
                    await self.outbox.mark(event.generation_id)
                return
            backlog = self._unpublished[user_id] = deque()
            task = asyncio.create_task(self._republish(user_id, backlog))
            self._republishers.add(task)
            task.add_done_callback(self._republishers.discard)
        if len(backlog) >= MAX_UNPUBLISHED_PER_USER:
            dropped = backlog.popleft()
            log.error("dropped an unpublished generation update (too many waiting for the bus)",
                      extra={"user_id": user_id, "generation_id": dropped.generation_id})
        backlog.append(event)

    async def _republish(self, user_id: str, backlog: deque[http.GenerationUpdateInput]) -> None:
        deadline = time.monotonic() + self.store_retry_seconds
        delay = 0.05
        try:
            while backlog:
                await asyncio.sleep(delay)
                event = backlog[0]
                final = event.status in FINAL
                if final and not await self.outbox.claim(event.generation_id):
                    backlog.popleft()  # announced meanwhile, or being announced, by a sweep
                    continue
                try:
                    await self.publisher.publish_one(user_id, event)
                except BusError:
                    if final:
                        await self.outbox.release([event.generation_id])
                    if time.monotonic() + delay > deadline:
                        log.error("gave up publishing %d generation update(s): the bus stayed unavailable",
                                  len(backlog), extra={"user_id": user_id})
                        return
                    delay = min(max(delay * 2, 0.05), 2.0)
                else:
                    backlog.popleft()
                    if final:
                        await self.outbox.mark(event.generation_id)
                    delay = 0.0  # the bus is back: the rest at once
        except asyncio.CancelledError:
            if backlog:
                log.error("stopping with %d generation update(s) unpublished", len(backlog),
                          extra={"user_id": user_id})
            raise
        finally:
            self._unpublished.pop(user_id, None)

    async def publish(self, user_id: str, event: Any) -> bool:
        """Publish for a run; a bus outage is logged, never fatal to the run (the record
        stays right and clients resync over HTTP after ``recovered: false``). ``False``
        when the event was not published."""
        try:
            await self.publisher.publish_one(user_id, event)
        except BusError as exc:
            log.error("could not publish generation event: %s", exc.message, extra={"user_id": user_id})
        except EventTooLarge as exc:  # a tool's event over LIVEGATE_MAX_EVENT_BYTES: never on a stream
            log.warning("generation event dropped: %s", exc.message, extra={"user_id": user_id})
        else:
            return True
        return False
