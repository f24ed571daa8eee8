"""Generations per second, end to end: ``POST /v1/generations`` -> ``generationUpdate``
``completed`` on the user's WebSocket, for the embedded default and for a cluster.

    .venv/bin/python bench/generations.py            # full: 3 interleaved rounds per setup
    .venv/bin/python bench/generations.py --quick    # < 60 s, small numbers (the smoke test)
    .venv/bin/python bench/generations.py --out bench/results/generations.json

Setups (started once, measured in interleaved rounds: embedded, cluster, embedded, ...):

* ``embedded``  one ``livegate serve``: SQLite, the memory bus, the in-memory job engine
  (the default of ``make run``);
* ``cluster``   two ``livegate serve`` processes on one ``redis-server`` (the streams) and
  one PostgreSQL (records, outputs, procrastinate's job queue), both started here on free
  ports (``livegate.testing``); creates alternate between the two processes and each user's
  socket is on process ``user % 2``, so most runs are accepted, run and delivered by
  different processes.

The run is the cheapest the demo tool makes (``durationSeconds: 0``, one step,
``outputs: ["text"]``): the figure is the gateway's own cost per generation (HTTP create,
record writes, dispatch, job, output, three ``generationUpdate`` plus one progress event
through the bus), not a tool's. The demo tool is configured with ``max_concurrency = 256``
and the per-user limit raised, so the limits never queue a run; ``--concurrency`` runs are
kept in flight (closed loop) over ``--users`` users.

Figures per round: generations/s, server CPU per generation (``/proc/<pid>/stat``: the
gateways; PostgreSQL's postmaster with its backends, exited ones included; redis-server),
the database's and Redis's share of the cluster's CPU, and create -> completed latency
p50/p99. The report's ratios are cluster / embedded of the same run (medians of rounds).
Servers are pinned to core 0 and this load generator to core 1 (``--no-pin`` to not), as in
``bench/run.py``: the cluster's four processes share the one core the embedded process gets.
Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/generations.py`

import httpx
import websockets

from bench.procs import children, cpu_seconds, pin, tree_cpu_seconds
from bench.run import machine, percentile
from livegate.testing.postgres_server import PostgresServer
from livegate.testing.process import GatewayProcess
from livegate.testing.redis_server import RedisServer

SETUPS = ("embedded", "cluster")
INPUTS = {"prompt": "bench", "durationSeconds": 0, "steps": 1, "outputs": ["text"]}
TOOLS_TOML = """\
[[tools]]
id = "demo"
kind = "demo"
title = "Demo (bench)"
timeout_seconds = 60
max_concurrency = 256
"""


@dataclass
class Settings:
    users: int = 20
    concurrency: int = 16
    generations: int = 150  # per round
    warmup: int = 40  # per setup, before the first round
    rounds: int = 3
    round_timeout: float = 120.0  # seconds, per round
    server_core: int | None = 0
    load_core: int | None = 1

    @classmethod
    def quick(cls) -> Settings:
        return cls(users=4, concurrency=4, generations=24, warmup=4, rounds=1, round_timeout=30.0)


@dataclass
class Setup:
    """The processes of one setup and where to reach them."""

    name: str
    gateways: list[GatewayProcess]
    postgres: PostgresServer | None = None
    redis: RedisServer | None = None

    def cpu(self) -> dict[str, float]:
        """CPU seconds so far: gateways, PostgreSQL (whole process tree), Redis."""
        out = {"gateways": sum(cpu_seconds(g.pid) for g in self.gateways if g.pid is not None),
               "postgres": 0.0, "redis": 0.0}
        if self.postgres is not None and self.postgres.pid is not None:
            out["postgres"] = tree_cpu_seconds(self.postgres.pid)
        if self.redis is not None and self.redis.pid is not None:
            out["redis"] = cpu_seconds(self.redis.pid)
        return out

    def pids(self) -> list[int]:
        pids = [g.pid for g in self.gateways if g.pid is not None]
        if self.redis is not None and self.redis.pid is not None:
            pids.append(self.redis.pid)
        return pids


@contextlib.contextmanager
def started(name: str, work: Path, s: Settings) -> Iterator[Setup]:
    """Start a setup's processes (pinned to the server core when asked); stop them by PID."""
    tools = work / "tools.toml"
    tools.write_text(TOOLS_TOML)
    env = {"LIVEGATE_LOG_LEVEL": "WARNING", "LIVEGATE_TOOLS_FILE": str(tools),
           "LIVEGATE_MAX_CONCURRENCY_PER_USER": "64", "LIVEGATE_RATE_LIMIT": "1000", "LIVEGATE_RATE_BURST": "1000"}
    mine = os.sched_getaffinity(0)
    with contextlib.ExitStack() as stack:
        if s.server_core is not None:  # children inherit the creator's affinity
            os.sched_setaffinity(0, {s.server_core})
        try:
            setup = Setup(name, [])
            if name == "cluster":
                setup.postgres = stack.enter_context(PostgresServer())
                setup.redis = stack.enter_context(RedisServer())
                env |= {"LIVEGATE_DATABASE_URL": setup.postgres.url, "LIVEGATE_REDIS_URL": setup.redis.url}
            for i in range(2 if name == "cluster" else 1):
                gateway = GatewayProcess(work / f"{name}-{i}", env=env, startup_timeout=40)
                stack.callback(gateway.kill)
                setup.gateways.append(gateway.start())  # one by one: the first migrates the database
        finally:
            os.sched_setaffinity(0, mine)
        if s.server_core is not None:
            for pid in setup.pids():
                pin(pid, {s.server_core})
            if setup.postgres is not None and setup.postgres.pid is not None:
                # the postmaster and its live children; backends forked later inherit it
                for pid in [setup.postgres.pid, *children(setup.postgres.pid)]:
                    pin(pid, {s.server_core})
        yield setup


class Users:
    """One WebSocket per user (user ``i`` on gateway ``i % N``) that resolves the waiting
    create of every ``completed`` (or failed) ``generationUpdate`` it receives."""

    def __init__(self, setup: Setup, count: int) -> None:
        self.setup = setup
        self.ids = [f"g{i}" for i in range(count)]
        self.tokens = {u: setup.gateways[0].token(u, ttl_seconds=3600) for u in self.ids}
        self.waiting: dict[str, asyncio.Future[str]] = {}
        self.early: dict[str, str] = {}  # finished before the create's response arrived
        self._tasks: list[asyncio.Task[None]] = []
        self._sockets: list[Any] = []

    async def open(self) -> None:
        for i, user in enumerate(self.ids):
            gateway = self.setup.gateways[i % len(self.setup.gateways)]
            ws = await websockets.connect(gateway.ws_url, compression=None, max_size=2**22)
            await ws.send(json.dumps({"type": "auth", "token": self.tokens[user]}))
            welcome = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert welcome["type"] == "welcome", welcome
            self._sockets.append(ws)
            self._tasks.append(asyncio.create_task(self._read(ws)))

    async def _read(self, ws: Any) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in ws:
                event = json.loads(frame)
                if event.get("type") != "generationUpdate" or event["status"] not in {"completed", "failed", "cancelled"}:
                    continue
                waiter = self.waiting.pop(event["generationId"], None)
                if waiter is None:
                    self.early[event["generationId"]] = event["status"]
                elif not waiter.done():
                    waiter.set_result(event["status"])

    async def close(self) -> None:
        for ws in self._sockets:
            with contextlib.suppress(Exception):
                await ws.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def run_round(setup: Setup, users: Users, clients: list[httpx.AsyncClient], count: int,
                    s: Settings) -> dict[str, Any]:
    """``count`` generations, ``s.concurrency`` in flight, creates alternating between the
    gateways; bounded by ``s.round_timeout``."""
    loop = asyncio.get_running_loop()
    user_cycle = itertools.cycle(users.ids)
    client_cycle = itertools.cycle(clients)
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    issued = 0
    deadline = time.monotonic() + s.round_timeout

    async def one() -> None:
        user, client = next(user_cycle), next(client_cycle)
        started = time.monotonic()
        response = await client.post("/v1/generations", json={"toolId": "demo", "inputs": INPUTS},
                                     headers={"Authorization": f"Bearer {users.tokens[user]}"})
        if response.status_code != 202:
            outcomes[f"http_{response.status_code}"] = outcomes.get(f"http_{response.status_code}", 0) + 1
            return
        gen_id = response.json()["id"]
        status = users.early.pop(gen_id, None)
        if status is None:
            waiter: asyncio.Future[str] = loop.create_future()
            users.waiting[gen_id] = waiter
            try:
                status = await asyncio.wait_for(waiter, max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                users.waiting.pop(gen_id, None)
                status = "timeout"
        outcomes[status] = outcomes.get(status, 0) + 1
        if status == "completed":
            latencies.append(time.monotonic() - started)

    async def worker() -> None:
        nonlocal issued
        while issued < count and time.monotonic() < deadline:
            issued += 1
            await one()

    cpu0 = setup.cpu()
    t0 = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(s.concurrency)))
    seconds = time.monotonic() - t0
    cpu1 = setup.cpu()
    cpu = {k: cpu1[k] - cpu0[k] for k in cpu0}
    completed = outcomes.get("completed", 0)
    total_cpu = sum(cpu.values())
    lat = sorted(latencies)

    def per_gen_ms(value: float) -> float:
        return round(value * 1000 / completed, 3) if completed else float("nan")

    return {
        "issued": issued, "completed": completed, "outcomes": outcomes, "seconds": round(seconds, 3),
        "generations_per_s": round(completed / seconds, 2) if seconds > 0 else float("nan"),
        "cpu_ms_per_generation": per_gen_ms(total_cpu),
        "cpu_ms_per_generation_gateways": per_gen_ms(cpu["gateways"]),
        "cpu_ms_per_generation_postgres": per_gen_ms(cpu["postgres"]),
        "cpu_ms_per_generation_redis": per_gen_ms(cpu["redis"]),
        "postgres_share": round(cpu["postgres"] / total_cpu, 3) if total_cpu else float("nan"),
        "redis_share": round(cpu["redis"] / total_cpu, 3) if total_cpu else float("nan"),
        "p50_ms": round(percentile(lat, 0.50) * 1000, 1),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 1),
    }


FIGURES = ("generations_per_s", "cpu_ms_per_generation", "cpu_ms_per_generation_gateways",
           "cpu_ms_per_generation_postgres", "cpu_ms_per_generation_redis", "postgres_share", "redis_share",
           "p50_ms", "p99_ms")


@dataclass
class Running:
    setup: Setup
    users: Users
    clients: list[httpx.AsyncClient] = field(default_factory=list)


async def main_async(s: Settings, work: Path) -> dict[str, Any]:
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "settings": {k: v for k, v in vars(s).items()}, "inputs": INPUTS,
        "rounds": {name: [] for name in SETUPS}, "results": {}, "ratios": {}, "notes": [],
    }
    cores = os.sched_getaffinity(0)
    if s.server_core is not None and ({s.server_core, s.load_core} - cores or s.server_core == s.load_core):
        report["notes"].append(f"cannot pin server and load to different cores (have {sorted(cores)})")
        s.server_core = s.load_core = None
    with contextlib.ExitStack() as stack:
        running: dict[str, Running] = {}
        for name in SETUPS:
            (work / name).mkdir()
            setup = stack.enter_context(started(name, work / name, s))
            running[name] = Running(setup, Users(setup, s.users))
        if s.load_core is not None:
            os.sched_setaffinity(0, {s.load_core})
        async with contextlib.AsyncExitStack() as astack:
            for run in running.values():
                await run.users.open()
                astack.push_async_callback(run.users.close)
                for gateway in run.setup.gateways:
                    client = httpx.AsyncClient(base_url=gateway.http_url, timeout=30,
                                               limits=httpx.Limits(max_keepalive_connections=s.concurrency))
                    run.clients.append(await astack.enter_async_context(client))
                await run_round(run.setup, run.users, run.clients, s.warmup, s)  # warm-up, not reported
            for index in range(s.rounds):
                for name in SETUPS:  # interleaved: embedded, cluster, embedded, ...
                    run = running[name]
                    figures = await run_round(run.setup, run.users, run.clients, s.generations, s)
                    figures["round"] = index + 1
                    report["rounds"][name].append(figures)
                    print(f"round {index + 1} {name}: {figures['generations_per_s']} gen/s, "
                          f"{figures['cpu_ms_per_generation']} ms CPU/gen, outcomes {figures['outcomes']}", flush=True)
    for name in SETUPS:
        rounds = report["rounds"][name]
        report["results"][name] = {k: round(statistics.median(r[k] for r in rounds), 3) for k in FIGURES}
        report["results"][name]["completed"] = sum(r["completed"] for r in rounds)
        report["results"][name]["issued"] = sum(r["issued"] for r in rounds)
    embedded, cluster = report["results"]["embedded"], report["results"]["cluster"]
    report["ratios"]["cluster/embedded"] = {
        k: round(cluster[k] / embedded[k], 2) if embedded[k] else float("nan")
        for k in ("generations_per_s", "cpu_ms_per_generation", "p50_ms", "p99_ms")
    }
    return report


def render(report: dict[str, Any]) -> str:
    lines = [f"{report['date']}, {report['machine']}", "",
             "| setup | generations/s | CPU ms/generation | gateways | PostgreSQL | Redis | DB share | Redis share "
             "| p50 ms | p99 ms |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name in SETUPS:
        r = report["results"][name]
        lines.append(f"| {name} | {r['generations_per_s']} | {r['cpu_ms_per_generation']} | "
                     f"{r['cpu_ms_per_generation_gateways']} | {r['cpu_ms_per_generation_postgres']} | "
                     f"{r['cpu_ms_per_generation_redis']} | {r['postgres_share']:.1%} | {r['redis_share']:.1%} | "
                     f"{r['p50_ms']} | {r['p99_ms']} |")
    ratios = report["ratios"]["cluster/embedded"]
    lines += ["", "cluster/embedded: " + ", ".join(f"{k} {v}" for k, v in ratios.items())]
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small numbers, one round (< 60 s)")
    p.add_argument("--users", type=int)
    p.add_argument("--concurrency", type=int, help="generations in flight")
    p.add_argument("--generations", type=int, help="per setup and round")
    p.add_argument("--rounds", type=int)
    p.add_argument("--no-pin", action="store_true", help="do not pin servers and load generator to cores")
    p.add_argument("--out", type=Path, help="also write the JSON report here")
    args = p.parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    for key in ("users", "concurrency", "generations", "rounds"):
        if getattr(args, key) is not None:
            setattr(s, key, getattr(args, key))
    if args.no_pin:
        s.server_core = s.load_core = None
    return s, args


def main(argv: list[str] | None = None) -> int:
    s, args = parse(argv)
    with tempfile.TemporaryDirectory(prefix="livegate-bench-gen-") as tmp:
        report = asyncio.run(main_async(s, Path(tmp)))
    print(render(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    failed = {n: r["issued"] - r["completed"] for n, r in report["results"].items() if r["issued"] != r["completed"]}
    if failed:
        print(f"not every generation completed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
