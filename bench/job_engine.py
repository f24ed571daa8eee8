"""How fast the job engine moves a generation between processes (service/jobs.py).

Two :class:`~livegate.service.jobs.JobEngine` instances on one real PostgreSQL (started
here, on a free port) stand for two processes: one defers, the other's worker runs. For
each round it measures

* **dispatch**: ``defer`` on engine A -> the runner starts on engine B (LISTEN/NOTIFY);
* **cancel**: ``abort`` on engine A -> the running job's task is cancelled on engine B;

and the same two on the in-memory engine of the embedded default, in the same
invocation, so the figures can be read as ratios on a noisy machine::

    .venv/bin/python bench/job_engine.py --rounds 200     # ~20 s
    .venv/bin/python bench/job_engine.py --quick          # smoke (tests/bench)

Prints one JSON object (medians and p95 in milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from livegate.service.jobs import JobEngine
from livegate.store import SqlStore
from livegate.testing.postgres_server import PostgresServer

TOOL = "bench"


class Probe:
    """The runner: records when each job starts, and waits to be cancelled."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.cancelled: dict[str, float] = {}
        self._events: dict[str, asyncio.Event] = {}

    def event(self, key: str) -> asyncio.Event:
        return self._events.setdefault(key, asyncio.Event())

    async def run(self, generation_id: str) -> None:
        self.started[generation_id] = time.perf_counter()
        self.event("start:" + generation_id).set()
        if generation_id.startswith("hold-"):
            try:
                await asyncio.sleep(60)  # the "work" a cancel interrupts
            except asyncio.CancelledError:
                self.cancelled[generation_id] = time.perf_counter()
                self.event("cancel:" + generation_id).set()
                raise


def summary(samples: list[float]) -> dict[str, float]:
    ms = sorted(s * 1000 for s in samples)
    return {"median_ms": round(statistics.median(ms), 2),
            "p95_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.95))], 2), "n": len(ms)}


async def measure(deferrer: JobEngine, runner_probe: Probe, rounds: int, cancels: int) -> dict[str, Any]:
    dispatch, cancel = [], []
    for i in range(rounds):
        gen_id = f"run-{i}-{time.monotonic_ns()}"
        sent = time.perf_counter()
        await deferrer.defer(gen_id, TOOL)
        await asyncio.wait_for(runner_probe.event("start:" + gen_id).wait(), 10)
        dispatch.append(runner_probe.started[gen_id] - sent)
    for i in range(cancels):
        gen_id = f"hold-{i}-{time.monotonic_ns()}"
        job_id = await deferrer.defer(gen_id, TOOL)
        await asyncio.wait_for(runner_probe.event("start:" + gen_id).wait(), 10)
        sent = time.perf_counter()
        await deferrer.abort(job_id)
        await asyncio.wait_for(runner_probe.event("cancel:" + gen_id).wait(), 10)
        cancel.append(runner_probe.cancelled[gen_id] - sent)
    return {"dispatch": summary(dispatch), "cancel": summary(cancel)}


async def postgres_pair(url: str, rounds: int, cancels: int) -> dict[str, Any]:
    store = SqlStore(url)
    await store.open()  # migrations, including procrastinate's schema
    await store.close()
    probe = Probe()
    a = JobEngine(url, run_worker=False, takeover_seconds=30)
    b = JobEngine(url, run_worker=True, takeover_seconds=30)
    await a.open(Probe().run, [TOOL])
    await b.open(probe.run, [TOOL])
    await a.start()
    await b.start()
    try:
        await asyncio.sleep(0.5)  # the worker's LISTEN is up (a warm-up, not a correctness wait)
        return await measure(a, probe, rounds, cancels)
    finally:
        await a.stop()
        await b.stop()


async def in_memory(rounds: int, cancels: int) -> dict[str, Any]:
    probe = Probe()
    engine = JobEngine(None)
    await engine.open(probe.run, [TOOL])
    await engine.start()
    try:
        await asyncio.sleep(0.2)
        return await measure(engine, probe, rounds, cancels)
    finally:
        await engine.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--cancels", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="10 rounds, 5 cancels")
    args = parser.parse_args()
    rounds, cancels = (10, 5) if args.quick else (args.rounds, args.cancels)
    with PostgresServer() as server:
        url = server.create_database("bench_jobs")
        pg = asyncio.run(postgres_pair(url, rounds, cancels))
    memory = asyncio.run(in_memory(rounds, cancels))
    report = {
        "postgres_two_engines": pg,
        "in_memory_one_engine": memory,
        "ratio_dispatch_median": round(pg["dispatch"]["median_ms"] / max(memory["dispatch"]["median_ms"], 1e-3), 1),
        "ratio_cancel_median": round(pg["cancel"]["median_ms"] / max(memory["cancel"]["median_ms"], 1e-3), 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
