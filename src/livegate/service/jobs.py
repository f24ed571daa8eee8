"""The job engine generations run on: `procrastinate <https://procrastinate.readthedocs.io>`_.

One task, :data:`TASK_NAME`, runs one generation by id. The engine knows nothing of
generations: it defers, runs, aborts and takes over *jobs*; what a job does is the
``runner`` the generation service hands to :meth:`JobEngine.open`.

Two connectors, one execution path:

- ``LIVEGATE_DATABASE_URL=postgresql://...``: procrastinate on PostgreSQL. Any process
  with a worker (``livegate serve`` by default, ``livegate worker`` without sockets)
  fetches jobs; ``LISTEN/NOTIFY`` brings a deferred job to an idle worker and an abort
  request to the worker that runs it within milliseconds (the abort cancels the job's
  asyncio task: that is how a cancel accepted by any process reaches the run).
- unset: procrastinate's in-memory connector, in this one process (the embedded
  default: SQLite records, no PostgreSQL). Jobs die with the process; the generation
  service re-defers unfinished runs on start (:attr:`JobEngine.durable` is ``False``).

Takeover. Every worker heartbeats (every ``takeover_seconds / 3``); a job whose worker
has not heartbeated for ``takeover_seconds`` (SIGKILL, a frozen machine, a partition) is
*stalled*, and every engine looks for stalled jobs as often as it heartbeats and puts
them back to ``todo`` (:meth:`JobEngine.retry_stalled`), where any worker fetches them.
The runner sees a generation that is already ``running`` and takes it over (re-attach,
restart or fail, per tool). Each job carries ``lock=<generation id>``, so two jobs of one
generation never run at once in the engine; the generation record's ``attempt`` fences
the rare runner that is still alive after being declared stalled (its writes lose).

Why procrastinate, in short (docs/scaling.md has the comparison and measurements): it
needs nothing but the PostgreSQL the records already live in, it has worker heartbeats,
stalled-job queries and abort-by-notification built in, its async tasks run on our event
loop next to the gateway, and the same API runs on an in-memory connector for the
single-process default.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import procrastinate
from procrastinate import testing as procrastinate_testing

from livegate.errors import StoreUnavailable

__all__ = ["TASK_NAME", "JobEngine", "procrastinate_conninfo", "queue_for"]

log = logging.getLogger("livegate.jobs")

TASK_NAME = "livegate.run_generation"
QUEUE_PREFIX = "tool:"


def queue_for(tool_id: str) -> str:
    """One queue per tool: a worker fetches only jobs of the tools it has configured, so
    heavy adapters (and their credentials) can live on some processes only."""
    return QUEUE_PREFIX + tool_id

Runner = Callable[[str], Awaitable[None]]

# procrastinate logs every job start and end at INFO: per-run lines belong to livegate's
# own log (livegate.generations), so its worker speaks only when something is wrong.
logging.getLogger("procrastinate").setLevel(logging.WARNING)


def procrastinate_conninfo(database_url: str) -> str:
    """A libpq conninfo for psycopg from a ``postgresql://`` or SQLAlchemy-style URL."""
    for prefix in ("postgresql+psycopg://", "postgresql+asyncpg://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql://" + database_url[len(prefix):]
    return database_url


class JobEngine:
    """Defer, run, abort and take over generation jobs (see the module docstring)."""

    def __init__(self, database_url: str | None, *, concurrency: int = 32, takeover_seconds: float = 30.0,
                 run_worker: bool = True, name: str = "livegate") -> None:
        self.durable = database_url is not None
        self.concurrency = concurrency
        self.takeover_seconds = takeover_seconds
        self.run_worker = run_worker
        self.name = name
        self.fetch_poll_seconds = 0.25
        connector: Any
        if database_url is not None:
            connector = procrastinate.PsycopgConnector(
                conninfo=procrastinate_conninfo(database_url),
                kwargs={"connect_timeout": 5},
                min_size=1, max_size=max(4, min(concurrency, 16)),
            )
        else:
            connector = procrastinate_testing.InMemoryConnector()
        self.app = procrastinate.App(connector=connector)
        self._runner: Runner | None = None
        self._worker_task: asyncio.Task[None] | None = None
        self._sweeper_task: asyncio.Task[None] | None = None
        self._opened = False
        self._stopping = False

        self.tool_ids: list[str] = []

        @self.app.task(name=TASK_NAME, queue=queue_for("default"))
        async def run_generation(generation_id: str) -> None:
            if self._runner is None:  # pragma: no cover - open() sets it before any worker runs
                raise RuntimeError("job engine has no runner")
            await self._runner(generation_id)

        self._task = run_generation

    # -- life cycle ---------------------------------------------------------------------

    async def open(self, runner: Runner, tool_ids: list[str]) -> None:
        """Connect; jobs of ``tool_ids`` fetched from now on run ``runner(generation_id)``."""
        self._runner = runner
        self.tool_ids = list(tool_ids)
        try:
            await self.app.open_async()
        except Exception as exc:
            raise StoreUnavailable(f"job engine cannot reach the database: {exc}") from exc
        self._opened = True

    async def start(self) -> None:
        """Start this process's worker (unless ``run_worker`` is off) and stalled-job sweeper."""
        self._stopping = False
        if self.run_worker and self.tool_ids:
            self._worker_task = asyncio.create_task(self._supervise_worker(), name="livegate-job-worker")
        if self.durable:
            self._sweeper_task = asyncio.create_task(self._sweep_forever(), name="livegate-job-sweeper")

    async def stop(self) -> None:
        await self.stop_worker()
        await self.close()

    async def stop_worker(self) -> None:
        """Stop the worker and the sweeper (the runner's own runs must have ended: the
        worker waits for them). The engine stays open (e.g. to hand runs over with
        :meth:`defer`) until :meth:`close`."""
        self._stopping = True
        for task in (self._sweeper_task, self._worker_task):
            if task is not None:
                task.cancel()
        for task in (self._sweeper_task, self._worker_task):
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, timeout=10.0)
        self._sweeper_task = self._worker_task = None

    async def close(self) -> None:
        if self._opened:
            with contextlib.suppress(Exception):
                await self.app.close_async()
            self._opened = False

    async def _supervise_worker(self) -> None:
        """Run procrastinate's worker; restart it (with backoff) when it stops on its own,
        e.g. when a heartbeat failed during a database outage."""
        backoff = 0.5
        while not self._stopping:
            try:
                await self.app.run_worker_async(
                    queues=[queue_for(t) for t in self.tool_ids], name=self.name, concurrency=self.concurrency, wait=True,
                    install_signal_handlers=False, listen_notify=True,
                    # NOTIFY brings a new job within ms, but procrastinate 3.10's worker
                    # clears its "new job" flag *after* each fetch, so a job inserted
                    # during a fetch waits for the next poll (bench/job_engine.py saw a
                    # p95 of 5 s with a 5 s poll): poll often, it is one cheap query.
                    fetch_job_polling_interval=self.fetch_poll_seconds,
                    abort_job_polling_interval=1.0,
                    update_heartbeat_interval=max(0.2, self.takeover_seconds / 3),
                    stalled_worker_timeout=self.takeover_seconds,
                    # No shutdown_graceful_timeout (procrastinate's default: none): a worker
                    # that stops on its own (a heartbeat failed: database outage) lets its
                    # running jobs finish; the service cancels its own runs before it stops
                    # the worker.
                    # the generation's record holds the outcome: no job row outlives its run
                    # (kept ones would grow the in-memory engine and procrastinate_jobs for ever)
                    delete_jobs="always",
                )
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("job worker stopped: %s; restarting in %.1f s", exc, backoff)
            if self._stopping:
                return
            await asyncio.sleep(backoff)  # a backoff between restarts, not a wait for state
            backoff = min(backoff * 2, 10.0)

    async def _sweep_forever(self) -> None:
        interval = max(0.2, self.takeover_seconds / 3)
        while not self._stopping:
            await asyncio.sleep(interval)  # the sweep period itself
            try:
                await self.retry_stalled()
            except Exception as exc:
                log.warning("stalled-job sweep failed: %s", exc)

    # -- jobs ---------------------------------------------------------------------------

    async def defer(self, generation_id: str, tool_id: str) -> str:
        """Queue a job for ``generation_id``; any worker of ``tool_id`` may fetch it.
        Returns its id."""
        try:
            job_id = await self._task.configure(lock=generation_id, queue=queue_for(tool_id)).defer_async(
                generation_id=generation_id)
        except Exception as exc:
            raise StoreUnavailable(f"cannot defer the job of {generation_id}: {exc}") from exc
        return str(job_id)

    async def abort(self, job_id: str) -> None:
        """Drop a job still waiting, or ask the worker running it to cancel it (the
        request travels by ``NOTIFY``; workers also poll for it every second)."""
        try:
            await self.app.job_manager.cancel_job_by_id_async(int(job_id), abort=True, delete_job=True)
        except (KeyError, ValueError):
            return  # unknown job (in-memory engine after a restart): nothing runs it
        except Exception as exc:
            raise StoreUnavailable(f"cannot abort job {job_id}: {exc}") from exc

    async def exists(self, job_id: str) -> bool:
        """Whether the job is still in the engine (waiting, running or being retried): a
        job leaves it only when it ended (``delete_jobs="always"``) or was aborted."""
        try:
            return bool(list(await self.app.job_manager.list_jobs_async(id=int(job_id))))
        except ValueError:
            return False
        except Exception as exc:
            raise StoreUnavailable(f"cannot look up job {job_id}: {exc}") from exc

    async def retry_stalled(self) -> int:
        """Put jobs of workers silent for ``takeover_seconds`` back to ``todo``."""
        manager = self.app.job_manager
        stalled = list(await manager.get_stalled_jobs(task_name=TASK_NAME, seconds_since_heartbeat=self.takeover_seconds))
        for job in stalled:
            log.warning("retrying the job of a silent worker",
                        extra={"job_id": job.id, "generation_id": job.task_kwargs.get("generation_id")})
            with contextlib.suppress(Exception):
                await manager.retry_job(job)
        return len(stalled)
