"""Benchmark livegate against two peers written for the same job, in one invocation.

    .venv/bin/python bench/run.py                 # the full run (a few minutes)
    .venv/bin/python bench/run.py --quick         # < 60 s, small numbers
    .venv/bin/python bench/run.py --out r.json    # also write the report as JSON

Servers (each its own process, pinned to one core; the load generator to another):

* ``livegate``  a real ``livegate serve`` (the whole contract on: auth, validation,
  offsets, history, bounded queues, metrics);
* ``livegate-sse``  the same ``livegate serve``, its clients on Server-Sent Events
  (``GET /v1/sse`` with a Bearer token, asyncapi.yaml ``sseStream``) instead of WebSockets;
  reported as a ratio to ``livegate`` of the same run;
* ``floor``     a hand-written ``websockets`` + uvloop + msgspec server (bench/servers/floor.py);
* ``socketio``  python-socketio on uvicorn + uvloop (bench/servers/sio.py);
* ``livegate-redis2``  two ``livegate serve`` processes on one real ``redis-server`` (memory
  only): connection i of each user goes to process i % 2, so every event needs the Redis
  fan-out; publish batches alternate between the two processes. CPU is both gateways +
  redis-server (split reported), memory both gateways (Redis RSS reported apart). Reported
  as a ratio to ``livegate`` (the embedded default) of the same run. Not in the default list.

Scenarios (bench/README.md): ``max`` (as fast as the server delivers, closed loop with a
bounded number of undelivered events), ``rate`` (a fixed events/s), ``idle`` (many idle
connections, memory per connection), and ``deflate`` (livegate with permessage-deflate
negotiated vs not, at the fixed rate). Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/run.py`

from bench.loadgen import (
    RoundRobinPublisher,
    Stats,
    Workload,
    WsClient,
    close_clients,
    open_clients,
    wait_for,
)
from bench.procs import (
    BEFORE_SUFFIX,
    BENCH_DIR,
    REDIS_GATEWAYS,
    SSE_TARGETS,
    Server,
    Target,
    cpu_seconds,
    raise_nofile,
    rss_bytes,
)
from livegate.protocol.auth import mint_token
from livegate.testing.gateway import TEST_SECRET

SERVERS = ("livegate", "livegate-sse", "floor", "socketio")  # the default list
OPTIONAL = tuple(REDIS_GATEWAYS)  # livegate-redis2: selectable with --servers
#: Targets reported as a ratio to livegate (the WebSocket, embedded default) of the same run.
SAME_PROCESS_RATIOS = (*OPTIONAL, *SSE_TARGETS)
BASELINE = "livegate"  # the embedded default the multi-process targets are compared to
FIGURES = ("delivered_per_s", "cpu_us_per_event", "p50_ms", "p99_ms")


@dataclass
class Settings:
    users: int = 500
    conns_per_user: int = 2
    batch: int = 100
    max_seconds: float = 6.0
    max_batches: int = 20_000
    window_events: int = 4_000  # undelivered deliveries allowed in flight in `max`
    publishers: int = 2
    rate: int = 2_000
    rate_seconds: float = 6.0
    idle: int = 10_000
    deflate: bool = True
    server_core: int | None = 0
    load_core: int | None = 1
    drain_timeout: float = 30.0
    profile_dir: Path | None = None
    rounds: int = 3
    server_env: dict[str, dict[str, str]] = field(default_factory=dict)  # per target name

    @classmethod
    def quick(cls) -> Settings:
        return cls(users=50, max_seconds=1.5, rate_seconds=1.5, idle=300, max_batches=2_000,
                   window_events=1_000, drain_timeout=10.0, rounds=1)


# -- measurements ------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * q))]


def cpu_split(target: Target) -> tuple[float, float]:
    """CPU seconds so far of the target's server processes, and of its Redis (0 without one)."""
    gateways = sum(cpu_seconds(pid) for pid in target.pids)
    return gateways, (cpu_seconds(target.redis_pid) if target.redis_pid is not None else 0.0)


def figures(stats: Stats, cpu: tuple[float, float], seconds: float, published: int, expected: int,
            target: Target) -> dict[str, Any]:
    """``cpu`` is (server processes, Redis) over the scenario; the per-event figure is their sum."""
    lat = sorted(stats.latencies)
    delivered = stats.delivered
    gateways_cpu, redis_cpu = cpu
    out = {
        "published": published,
        "delivered": delivered,
        "expected": expected,
        "seconds": round(seconds, 3),
        "delivered_per_s": round(delivered / seconds, 1) if seconds > 0 else 0.0,
        "cpu_s": round(gateways_cpu + redis_cpu, 3),
        "cpu_us_per_event": per_event(gateways_cpu + redis_cpu, delivered),
        "p50_ms": round(percentile(lat, 0.50) * 1000, 2),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 2),
        "compressed_frames": stats.compressed,
        "bytes_per_event": round(stats.bytes_received / delivered, 1) if delivered else float("nan"),
    }
    if target.redis_pid is not None:
        out["cpu_us_per_event_gateways"] = per_event(gateways_cpu, delivered)
        out["cpu_us_per_event_redis"] = per_event(redis_cpu, delivered)
    return out


def per_event(cpu: float, delivered: int) -> float:
    return round(cpu * 1e6 / delivered, 2) if delivered else float("nan")


def tokens_for(users: int, per_user: int, prefix: str = "u") -> list[str]:
    return [mint_token(TEST_SECRET, f"{prefix}{u}", ttl_seconds=3600) for u in range(users) for _ in range(per_user)]


async def open_target_clients(stats: Stats, target: Target, users: int, per_user: int, prefix: str = "u",
                              **kwargs: Any) -> list[WsClient]:
    """``per_user`` connections per user; connection i of a user goes to ``ws_ports[i % len]``, so on a
    multi-process target a user's connections sit on different processes (the Redis fan-out case)."""
    tokens = tokens_for(users, per_user, prefix)
    ports = target.ws_ports
    clients: list[WsClient] = []
    for index, port in enumerate(ports):
        mine = [tok for j, tok in enumerate(tokens) if (j % per_user) % len(ports) == index]
        if mine:
            clients += await open_clients(stats, host="127.0.0.1", port=port, path=target.ws_path,
                                          dialect=target.dialect, tokens=mine, **kwargs)
    return clients


def publisher(target: Target, first: int = 0) -> RoundRobinPublisher:
    """Keep-alive publisher(s); batches alternate between the target's publish ports."""
    return RoundRobinPublisher("127.0.0.1", target.publish_ports, target.service_token, first=first)


async def scenario_max(target: Target, s: Settings, stats: Stats, work: Workload) -> dict[str, Any]:
    """As fast as possible: publishers keep at most ``window_events`` deliveries in flight."""
    stats.reset()
    stats.record_latency = True
    counters = {"expected": 0, "published": 0, "batches": 0}
    started = time.monotonic()
    deadline = started + s.max_seconds
    cpu0 = cpu_split(target)

    async def publish_loop(index: int) -> None:
        async with publisher(target, first=index) as pub:
            while time.monotonic() < deadline and counters["batches"] < s.max_batches:
                if not await wait_for(lambda: counters["expected"] - stats.delivered < s.window_events,
                                      max(0.0, deadline - time.monotonic()), step=0.0005):
                    break
                body, targets = work.body()
                counters["batches"] += 1
                counters["published"] += len(targets)
                counters["expected"] += len(targets) * s.conns_per_user
                await pub.post(body)

    await asyncio.gather(*(publish_loop(i) for i in range(s.publishers)))
    await wait_for(lambda: stats.delivered >= counters["expected"], s.drain_timeout)
    seconds = time.monotonic() - started
    cpu1 = cpu_split(target)
    stats.record_latency = False
    return figures(stats, (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]), seconds, counters["published"],
                   counters["expected"], target)


async def scenario_rate(target: Target, s: Settings, stats: Stats, work: Workload) -> dict[str, Any]:
    """A fixed ``rate`` events/s: one batch every ``batch / rate`` seconds, on a schedule."""
    stats.reset()
    stats.record_latency = True
    interval = s.batch / s.rate
    count = max(1, int(s.rate_seconds / interval))
    expected = published = 0
    started = time.monotonic()
    cpu0 = cpu_split(target)
    async with publisher(target) as pub:
        for i in range(count):
            delay = started + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            body, targets = work.body()
            published += len(targets)
            expected += len(targets) * s.conns_per_user
            await pub.post(body)
    await wait_for(lambda: stats.delivered >= expected, s.drain_timeout)
    seconds = time.monotonic() - started
    cpu1 = cpu_split(target)
    stats.record_latency = False
    out = figures(stats, (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]), seconds, published, expected, target)
    out["target_rate"] = s.rate
    return out


async def warm_up(target: Target, s: Settings, stats: Stats, work: Workload, batches: int = 10) -> None:
    stats.reset()
    expected = 0
    async with publisher(target) as pub:
        for _ in range(batches):
            body, targets = work.body()
            expected += len(targets) * s.conns_per_user
            await pub.post(body)
    if not await wait_for(lambda: stats.delivered >= expected, s.drain_timeout):
        raise RuntimeError(f"{target.name}: warm-up delivered {stats.delivered} of {expected}")


async def run_delivery(target: Target, s: Settings, *, scenarios: tuple[str, ...] = ("max", "rate"),
                       deflate_phases: bool = False) -> dict[str, Any]:
    stats = Stats()
    work = Workload(s.users, s.batch)
    results: dict[str, Any] = {}
    phases = [(False, "")] if not deflate_phases else [(False, "deflate_off"), (True, "deflate_on")]
    for deflate, label in phases:
        clients = await open_target_clients(stats, target, s.users, s.conns_per_user, deflate=deflate)
        try:
            await warm_up(target, s, stats, work)
            for name in scenarios:
                runner = scenario_max if name == "max" else scenario_rate
                profiler = start_profiler(target, s, name)
                try:
                    results[label or name] = await runner(target, s, stats, work)
                finally:
                    stop_profiler(profiler)
        finally:
            await close_clients(clients)
        await asyncio.sleep(0.2)  # let the server tidy up the closed connections
    results["closes"] = dict(stats.closes)
    return results


def start_profiler(target: Target, s: Settings, scenario: str) -> subprocess.Popen[bytes] | None:
    """``--profile DIR``: py-spy (installed by hand, for profiling only) samples the server (the first
    process of a multi-process target)."""
    if s.profile_dir is None:
        return None
    spy = Path(sys.executable).parent / "py-spy"
    out = s.profile_dir / f"{target.name}-{scenario}.txt"
    return subprocess.Popen([str(spy), "record", "-p", str(target.pid), "-f", "raw", "-o", str(out), "-r", "200",
                             "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler: subprocess.Popen[bytes] | None) -> None:
    if profiler is not None:
        profiler.send_signal(signal.SIGINT)
        try:
            profiler.wait(20)
        except subprocess.TimeoutExpired:
            profiler.kill()
            profiler.wait(5)


async def run_idle(target: Target, s: Settings) -> dict[str, Any]:
    """RSS delta per idle authenticated connection (after a warm-up set of connections).

    RSS is that of the server processes (both gateways of a multi-process target); Redis's RSS
    is reported apart. CPU per connect is servers + Redis (split reported with Redis)."""
    stats = Stats()
    per_user = 2
    users = max(1, s.idle // per_user)
    warm = await open_target_clients(stats, target, 10, per_user, prefix="warm")
    await asyncio.sleep(0.5)
    rss0 = sum(rss_bytes(pid) for pid in target.pids)
    redis_rss0 = rss_bytes(target.redis_pid) if target.redis_pid is not None else 0
    cpu0 = cpu_split(target)
    started = time.monotonic()
    clients: list[Any] = []
    try:
        clients = await open_target_clients(stats, target, users, per_user, timeout=300.0)
        connect_seconds = time.monotonic() - started
        cpu1 = cpu_split(target)
        await asyncio.sleep(1.0)
        rss1 = sum(rss_bytes(pid) for pid in target.pids)
        redis_rss1 = rss_bytes(target.redis_pid) if target.redis_pid is not None else 0
    finally:
        await close_clients(clients + warm, timeout=30)
    n = len(clients)
    gateways_cpu, redis_cpu = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    out = {
        "connections": n,
        "rss_before_mb": round(rss0 / 2**20, 1),
        "rss_after_mb": round(rss1 / 2**20, 1),
        "kb_per_connection": round((rss1 - rss0) / n / 1024, 2),
        "connect_seconds": round(connect_seconds, 2),
        "cpu_ms_per_connect": round((gateways_cpu + redis_cpu) * 1000 / n, 3),
    }
    if target.redis_pid is not None:
        out.update({
            "processes": len(target.pids),
            "redis_rss_before_mb": round(redis_rss0 / 2**20, 1),
            "redis_rss_after_mb": round(redis_rss1 / 2**20, 1),
            "redis_kb_per_connection": round((redis_rss1 - redis_rss0) / n / 1024, 2),
            "cpu_ms_per_connect_gateways": round(gateways_cpu * 1000 / n, 3),
            "cpu_ms_per_connect_redis": round(redis_cpu * 1000 / n, 3),
        })
    return out


# -- report ------------------------------------------------------------------------------


def median_of_rounds(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per scenario, the median of every numeric figure over the rounds (all kept in ``rounds``)."""
    out: dict[str, Any] = {}
    for scenario, first in runs[0].items():
        if scenario == "closes":
            merged: dict[str, int] = {}
            for run in runs:
                for code, count in run["closes"].items():
                    merged[str(code)] = merged.get(str(code), 0) + count
            out["closes"] = merged
            continue
        median: dict[str, Any] = {}
        for key, value in first.items():
            values = [run[scenario][key] for run in runs]
            median[key] = round(float(statistics.median(values)), 2) if isinstance(value, float) else value
        median["delivered"] = sum(run[scenario]["delivered"] for run in runs)
        median["expected"] = sum(run[scenario]["expected"] for run in runs)
        median["rounds"] = [run[scenario] for run in runs]
        out[scenario] = median
    return out


def ratio(a: float, b: float) -> float:
    try:
        return round(a / b, 2)
    except (ZeroDivisionError, TypeError):
        return float("nan")


def add_ratios(report: dict[str, Any]) -> None:
    res = report["results"]
    lg = res.get("livegate") or {}
    ratios: dict[str, Any] = {}
    for peer in ("floor", "socketio"):
        other = res.get(peer)
        if not other or not lg:
            continue
        r: dict[str, Any] = {}
        for scen in ("max", "rate"):
            if scen in lg and scen in other:
                r[scen] = {f: ratio(lg[scen][f], other[scen][f]) for f in FIGURES}
        if "idle" in lg and "idle" in other:
            r["idle"] = {"kb_per_connection": ratio(lg["idle"]["kb_per_connection"],
                                                    other["idle"]["kb_per_connection"])}
        ratios[f"livegate/{peer}"] = r
    # Multi-process targets, and the SSE wire, against the embedded default's WebSocket of the
    # same run (target / livegate): every delivery figure, and per idle connection the memory
    # and the connect CPU.
    for name in SAME_PROCESS_RATIOS:
        other = res.get(name)
        if not other or not lg:
            continue
        r = {}
        for scen in ("max", "rate"):
            if scen in lg and scen in other:
                r[scen] = {f: ratio(other[scen][f], lg[scen][f]) for f in FIGURES}
        if "idle" in lg and "idle" in other:
            r["idle"] = {f: ratio(other["idle"][f], lg["idle"][f]) for f in ("kb_per_connection", "cpu_ms_per_connect")}
        ratios[f"{name}/{BASELINE}"] = r
    # --baseline: this code against the code at the ref (livegate / livegate-before, and
    # livegate-redis2 / livegate-redis2-before when the Redis pair runs too).
    for now_name in (BASELINE, *OPTIONAL):
        now, before = res.get(now_name), res.get(now_name + BEFORE_SUFFIX)
        if not now or not before:
            continue
        r = {scen: {f: ratio(now[scen][f], before[scen][f]) for f in FIGURES}
             for scen in ("max", "rate") if scen in now and scen in before}
        if "idle" in now and "idle" in before:
            r["idle"] = {f: ratio(now["idle"][f], before["idle"][f]) for f in ("kb_per_connection", "cpu_ms_per_connect")}
        ratios[f"{now_name}/{now_name}{BEFORE_SUFFIX}"] = r
    report["ratios"] = ratios
    targets: dict[str, Any] = {}
    report["targets"] = targets
    if not lg:
        return
    cpu = lg.get("max", {}).get("cpu_us_per_event")
    if "floor" in res and "max" in res["floor"]:
        v = ratio(cpu, res["floor"]["max"]["cpu_us_per_event"])
        targets["cpu_vs_floor <= 1.3"] = {"value": v, "met": v <= 1.3}
    if "socketio" in res and "max" in res["socketio"]:
        v = ratio(res["socketio"]["max"]["cpu_us_per_event"], cpu)
        targets["socketio_cpu / livegate_cpu >= 3.5"] = {"value": v, "met": v >= 3.5}
    if "rate" in lg:
        v = lg["rate"]["p99_ms"]
        targets[f"p99 at {lg['rate']['target_rate']} ev/s < 20 ms"] = {"value": v, "met": v < 20}
    if "idle" in lg:
        v = lg["idle"]["kb_per_connection"]
        targets["KB per idle connection <= 20"] = {"value": v, "met": v <= 20}


def markdown(report: dict[str, Any]) -> str:
    res = report["results"]
    lines = [f"livegate bench, {report['date']}, {report['machine']}", ""]
    lines.append("| server | scenario | delivered ev/s | CPU us/event | p50 ms | p99 ms |")
    lines.append("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, scen in res.items():
        for key, value in scen.items():
            if isinstance(value, dict) and "cpu_us_per_event" in value:
                lines.append(f"| {name} | {key} | {value['delivered_per_s']:,.0f} | {value['cpu_us_per_event']} | "
                             f"{value['p50_ms']} | {value['p99_ms']} |")
    lines += ["", "| server | idle connections | KB/connection | CPU ms/connect |", "| --- | ---: | ---: | ---: |"]
    for name, scen in res.items():
        if "idle" in scen:
            i = scen["idle"]
            lines.append(f"| {name} | {i['connections']:,} | {i['kb_per_connection']} | {i['cpu_ms_per_connect']} |")
    for name, scen in res.items():
        split = [f"{key} {v['cpu_us_per_event_gateways']} + {v['cpu_us_per_event_redis']}" for key, v in scen.items()
                 if isinstance(v, dict) and "cpu_us_per_event_redis" in v]
        if split:
            lines += ["", f"{name}: CPU us/event gateways + redis: " + "; ".join(split)]
            if "idle" in scen:
                i = scen["idle"]
                lines.append(f"{name}: idle, gateways' RSS {i['rss_before_mb']} -> {i['rss_after_mb']} MB (in KB/connection "
                             f"above); redis RSS {i['redis_rss_before_mb']} -> {i['redis_rss_after_mb']} MB "
                             f"({i['redis_kb_per_connection']} KB/connection); CPU ms/connect gateways "
                             f"{i['cpu_ms_per_connect_gateways']} + redis {i['cpu_ms_per_connect_redis']}")
    for pair, r in report.get("ratios", {}).items():
        lines.append("")
        lines.append(f"{pair}: " + "; ".join(
            f"{scen} " + ", ".join(f"{k} {v}" for k, v in figs.items()) for scen, figs in r.items()))
    if report.get("targets"):
        lines.append("")
        for name, t in report["targets"].items():
            lines.append(f"- {name}: {t['value']} ({'met' if t['met'] else 'MISSED'})")
    for note in report.get("notes", []):
        lines.append(f"- note: {note}")
    return "\n".join(lines)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, Python {platform.python_version()}"


async def main_async(s: Settings, servers: tuple[str, ...], work_dir: Path) -> dict[str, Any]:
    import livegate

    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "settings": {k: v for k, v in vars(s).items()},
        "livegate_version": getattr(livegate, "__version__", "?"),
        "results": {},
        "notes": [],
    }
    fds = raise_nofile(s.idle + 2_000)
    if fds < s.idle + 200:
        report["notes"].append(f"RLIMIT_NOFILE is {fds}: idle measured with {fds - 500} connections, not {s.idle}")
        s.idle = max(10, fds - 500)
    cores = os.sched_getaffinity(0)
    if s.server_core not in cores or s.load_core not in cores or s.server_core == s.load_core:
        report["notes"].append(f"cannot pin server and load to different cores (have {sorted(cores)})")
        s.server_core = s.load_core = None
    if s.load_core is not None:
        os.sched_setaffinity(0, {s.load_core})
    # Delivery scenarios in interleaved rounds (A B C A B C ...), each figure the median of
    # its rounds: a burst of load from elsewhere on the machine then hits every server alike.
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for index in range(s.rounds):
        for name in servers:
            with Server(name, work_dir, env=s.server_env.get(name), server_core=s.server_core) as target:
                rounds[name].append(await run_delivery(target, s))
            print(f"  {name} delivery round {index + 1}/{s.rounds} done", file=sys.stderr, flush=True)
    for name in servers:
        entry = median_of_rounds(rounds[name])
        with Server(name, work_dir, env=s.server_env.get(name), server_core=s.server_core) as target:
            entry["idle"] = await run_idle(target, s)
        report["results"][name] = entry
        print(f"  {name} idle done", file=sys.stderr, flush=True)
    if s.deflate and "livegate" in servers:
        with Server("livegate-deflate", work_dir, env={"LIVEGATE_PERMESSAGE_DEFLATE": "1"},
                    server_core=s.server_core) as target:
            report["results"]["livegate-deflate"] = await run_delivery(target, s, scenarios=("rate",),
                                                                       deflate_phases=True)
        print("  livegate-deflate done", file=sys.stderr, flush=True)
    add_ratios(report)
    return report


def parse(argv: list[str] | None) -> tuple[Settings, argparse.Namespace]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small numbers, finishes in < 60 s")
    p.add_argument("--servers", default=",".join(SERVERS),
                   help="comma-separated subset of " + ",".join(SERVERS) + ", plus " + ",".join(OPTIONAL)
                   + " (2 gateway processes + Redis) and livegate@<uvicorn ws impl> "
                   "(livegate@wsproto, livegate@websockets) to compare WebSocket stacks")
    p.add_argument("--users", type=int)
    p.add_argument("--conns-per-user", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--max-seconds", type=float)
    p.add_argument("--rate", type=int)
    p.add_argument("--rate-seconds", type=float)
    p.add_argument("--idle", type=int)
    p.add_argument("--rounds", type=int, help="interleaved delivery rounds per server (median reported)")
    p.add_argument("--no-deflate", action="store_true", help="skip the permessage-deflate comparison")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and load to cores")
    p.add_argument("--out", type=Path, help="write the JSON report here")
    p.add_argument("--profile", type=Path, help="sample servers with py-spy into this directory (dev only)")
    p.add_argument("--baseline", metavar="GITREF",
                   help=f"also run livegate's src/ at this git ref as {BASELINE + BEFORE_SUFFIX!r}, interleaved with the "
                   "current code, and report livegate/livegate-before (before/after in one run)")
    args = p.parse_args(argv)
    s = Settings.quick() if args.quick else Settings()
    for name in ("users", "conns_per_user", "batch", "max_seconds", "rate", "rate_seconds", "idle", "rounds"):
        value = getattr(args, name)
        if value is not None:
            setattr(s, name, value)
    s.deflate = not args.no_deflate
    s.profile_dir = args.profile
    if args.no_pin:
        s.server_core = s.load_core = None
    return s, args


def export_source(ref: str, into: Path) -> Path:
    """``src/`` of this repository at ``ref`` (``git archive``), for ``--baseline``: the child
    gets it first on ``PYTHONPATH``, ahead of the editable install of the working tree."""
    repo = BENCH_DIR.parent
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", ref, "src"],
                             capture_output=True, check=False, timeout=60)
    if archive.returncode != 0:
        raise SystemExit(f"--baseline {ref}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True, timeout=60)
    return into / "src"


def main(argv: list[str] | None = None) -> int:
    s, args = parse(argv)
    servers = tuple(x for x in args.servers.split(",") if x)
    unknown = {x for x in servers if x not in SERVERS + OPTIONAL and not x.startswith("livegate@")}
    if unknown:
        raise SystemExit(f"unknown servers: {sorted(unknown)}")
    import uvloop

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="livegate-bench-") as tmp:
        if args.baseline:
            source = export_source(args.baseline, Path(tmp) / "baseline")
            for name in [n for n in (BASELINE, *OPTIONAL) if n in servers] or [BASELINE]:
                twin = name + BEFORE_SUFFIX  # the same target on the ref's code, right after it
                s.server_env[twin] = {"PYTHONPATH": str(source)}
                if twin not in servers:
                    at = servers.index(name) + 1 if name in servers else 0
                    servers = (*servers[:at], twin, *servers[at:])
        report = uvloop.run(main_async(s, servers, Path(tmp)))
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    print(markdown(report))
    print(f"(wall time {report['wall_seconds']} s)")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
