"""A short, bounded measurement of livegate scaled out on Redis (docs/scaling.md).

    .venv/bin/python bench/scale_probe.py                 # ~1 minute on 2 cores
    .venv/bin/python bench/scale_probe.py --processes 1,2,3 --users 250 --seconds 5 --json out.json

What it measures, each figure from this one run on this machine:

1. Redis memory per user stream: ``MEMORY USAGE`` of a stream's keys after 1000 events of
   ~300 bytes (the default history bound), and ``used_memory`` per subscribed channel
   (what each user with an open connection costs on a process's pub/sub connection).
2. For the embedded default (memory bus, one process) and for N gateway processes on one
   Redis: ``users x tabs`` WebSocket connections, the tabs of one user spread over
   different processes (the cross-process case); events of ~300 bytes published over
   HTTP in batches of 100 to random users, as fast as the publisher can, for ``--seconds``.
   Reported: published and delivered events/s, p50/p99 publish-to-receive latency
   (server ``timestamp`` to client receipt, ms resolution), gateway CPU microseconds per
   delivered event, Redis CPU microseconds per published event, gateway RSS per idle
   connection.

Load generator, gateways and Redis all share the machine's cores, so the absolute
numbers are a floor for this hardware, not a capacity claim; docs/scaling.md keeps the
measurement and the arithmetic apart.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import redis.asyncio as aioredis
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/scale_probe.py`

from bench.procs import cpu_seconds, rss_bytes
from livegate.bus.base import PublishItem
from livegate.bus.redis import RedisBus
from livegate.testing.process import GatewayProcess
from livegate.testing.redis_server import RedisServer


async def redis_cpu(client: aioredis.Redis) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


# -- 1. Redis memory ---------------------------------------------------------------------------


async def measure_memory(redis: RedisServer) -> dict[str, Any]:
    bus = RedisBus(redis.url, max_events=1000)
    await bus.start()
    admin = aioredis.Redis.from_url(redis.url)
    try:
        payload = json.dumps({"type": "notification", "timestamp": "2026-01-01T00:00:00.000Z", "level": "info",
                              "message": "m" * 212}).encode()
        stream = "memory-probe"
        for _ in range(15):  # 1500 events: the stream is trimmed to 1000
            await bus.publish([PublishItem(stream, payload) for _ in range(100)])
        meta, log = f"lg:{{{stream}}}:m", f"lg:{{{stream}}}:s"
        stream_bytes = await admin.memory_usage(log, samples=0)
        meta_bytes = await admin.memory_usage(meta, samples=0)
        xlen = await admin.xlen(log)
        # Subscribed channels: one pub/sub connection holding many channels (as a process does).
        before = (await admin.info("memory"))["used_memory"]
        pubsub = admin.pubsub()
        channels = [f"lg:{{probe-user-{i}}}:c" for i in range(20_000)]
        for start in range(0, len(channels), 1000):
            await pubsub.subscribe(*channels[start:start + 1000])
        await asyncio.sleep(0.2)
        after = (await admin.info("memory"))["used_memory"]
        await pubsub.aclose()
        return {
            "event_bytes": len(payload) + 2 + len('"epoch":"0123456789abcdef","offset":1000,'),
            "stored_body_bytes": len(payload),
            "events_kept": xlen,
            "stream_key_bytes": stream_bytes,
            "meta_key_bytes": meta_bytes,
            "bytes_per_event": round(stream_bytes / xlen, 1),
            "subscribed_channels": len(channels),
            "bytes_per_subscribed_channel": round((after - before) / len(channels), 1),
        }
    finally:
        await admin.aclose()
        await bus.stop()


# -- 2. delivery -------------------------------------------------------------------------------


@dataclass
class Result:
    setup: str
    processes: int
    connections: int
    seconds: float
    published_per_s: float
    delivered_per_s: float
    latency_p50_ms: float
    latency_p99_ms: float
    gateway_cpu_us_per_delivered: float
    redis_cpu_us_per_published: float | None
    gateway_rss_per_idle_connection_bytes: float


class Counter:
    def __init__(self) -> None:
        self.delivered = 0
        self.latencies: list[float] = []
        self.measuring = False


async def client(url: str, token: str, counter: Counter, ready: asyncio.Event, stop: asyncio.Event) -> None:
    async with websockets.connect(url, max_queue=None, compression=None, open_timeout=20, max_size=2**22) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        welcome = await asyncio.wait_for(ws.recv(), 20)
        assert '"type":"welcome"' in welcome, welcome[:200]
        ready.set()
        while not stop.is_set():
            try:
                frame = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            if not counter.measuring or '"type":"notification"' not in frame:
                continue
            counter.delivered += 1
            if counter.delivered % 20 == 0:  # sample: parsing every frame would cost the load generator
                stamp = frame[frame.index('"timestamp":"') + 13:][:24]
                sent = datetime.fromisoformat(stamp).timestamp()
                counter.latencies.append(time.time() - sent)


async def publisher(gateways: list[GatewayProcess], users: list[str], stop: asyncio.Event,
                    published: list[int]) -> None:
    message = "m" * 212  # ~300 bytes on the wire with epoch, offset, type, level, timestamp
    async with httpx.AsyncClient(timeout=10, limits=httpx.Limits(max_connections=8)) as http:
        n = 0
        while not stop.is_set():
            gw = gateways[n % len(gateways)]
            n += 1
            body = {"events": [{"userId": random.choice(users), "event": {
                "type": "notification", "level": "info", "message": message}} for _ in range(100)]}
            response = await http.post(f"{gw.http_url}/v1/events", json=body,
                                       headers={"Authorization": f"Bearer {gw.service_token}"})
            response.raise_for_status()
            published[0] += 100


async def run_setup(name: str, gateways: list[GatewayProcess], users: int, tabs: int, seconds: float,
                    admin: aioredis.Redis | None) -> Result:
    user_ids = [f"{name}-{i}" for i in range(users)]
    counter, stop = Counter(), asyncio.Event()
    pids = [gw.pid for gw in gateways if gw.pid]
    rss_before = sum(rss_bytes(p) for p in pids)
    tasks, readies = [], []
    for i, user in enumerate(user_ids):
        for t in range(tabs):
            gw = gateways[(i + t) % len(gateways)]  # a user's tabs on different processes
            ready = asyncio.Event()
            readies.append(ready)
            tasks.append(asyncio.create_task(client(gw.ws_url, gw.token(user), counter, ready, stop)))
            if len(tasks) % 100 == 0:
                await asyncio.sleep(0.05)
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    await asyncio.sleep(0.5)
    rss_idle = sum(rss_bytes(p) for p in pids)
    connections = len(tasks)

    published, pub_stop = [0], asyncio.Event()
    pub = [asyncio.create_task(publisher(gateways, user_ids, pub_stop, published)) for _ in range(2)]
    await asyncio.sleep(1.0)  # warm-up
    cpu0 = sum(cpu_seconds(p) for p in pids)
    rcpu0 = await redis_cpu(admin) if admin else 0.0
    pub0, counter.delivered, counter.measuring, t0 = published[0], 0, True, time.monotonic()
    await asyncio.sleep(seconds)
    elapsed = time.monotonic() - t0
    counter.measuring = False
    delivered, pub_count = counter.delivered, published[0] - pub0
    cpu = sum(cpu_seconds(p) for p in pids) - cpu0
    rcpu = (await redis_cpu(admin) - rcpu0) if admin else None
    pub_stop.set()
    await asyncio.gather(*pub, return_exceptions=True)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    lat = sorted(counter.latencies) or [0.0]
    return Result(
        setup=name, processes=len(gateways), connections=connections, seconds=round(elapsed, 2),
        published_per_s=round(pub_count / elapsed), delivered_per_s=round(delivered / elapsed),
        latency_p50_ms=round(statistics.median(lat) * 1000, 1),
        latency_p99_ms=round(lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000, 1),
        gateway_cpu_us_per_delivered=round(cpu / max(delivered, 1) * 1e6, 1),
        redis_cpu_us_per_published=round(rcpu / max(pub_count, 1) * 1e6, 1) if rcpu is not None else None,
        gateway_rss_per_idle_connection_bytes=round((rss_idle - rss_before) / max(connections, 1)),
    )


def start_all(base: Path, count: int, env: dict[str, str]) -> list[GatewayProcess]:
    gateways = [GatewayProcess(base / f"gw{i}", env={**env, "LIVEGATE_LOG_LEVEL": "WARNING",
                                                      "LIVEGATE_MAX_CONNECTIONS_PER_USER": "64"})
                for i in range(count)]
    for gw in gateways:
        gw.start()
    return gateways


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
                              "users": args.users, "tabs": args.tabs, "results": []}
    base = Path(tempfile.mkdtemp(prefix="livegate-scale-probe-"))
    with RedisServer() as redis:
        report["redis_memory"] = await measure_memory(redis)
        setups: list[tuple[str, int, dict[str, str]]] = [("memory", 1, {})]
        setups += [(f"redis-{n}", n, {"LIVEGATE_REDIS_URL": redis.url}) for n in args.processes]
        for name, count, env in setups:
            gateways = start_all(base / name, count, env)
            admin = aioredis.Redis.from_url(redis.url) if env else None
            try:
                result = await run_setup(name, gateways, args.users, args.tabs, args.seconds, admin)
                report["results"].append(asdict(result))
                print(json.dumps(asdict(result)), file=sys.stderr)
            finally:
                if admin is not None:
                    await admin.aclose()
                for gw in gateways:
                    gw.terminate()
    baseline = report["results"][0]
    for row in report["results"]:
        row["delivered_ratio_to_memory"] = round(row["delivered_per_s"] / max(baseline["delivered_per_s"], 1), 2)
        row["cpu_ratio_to_memory"] = round(
            row["gateway_cpu_us_per_delivered"] / max(baseline["gateway_cpu_us_per_delivered"], 0.1), 2)
    return report


def print_table(report: dict[str, Any]) -> None:
    m = report["redis_memory"]
    print(f"Redis: one stream of {m['events_kept']} events ({m['stored_body_bytes']} B bodies): "
          f"stream {m['stream_key_bytes']} B + meta {m['meta_key_bytes']} B = {m['bytes_per_event']} B/event; "
          f"{m['bytes_per_subscribed_channel']} B per subscribed channel ({m['subscribed_channels']} channels)")
    cols = ["setup", "processes", "connections", "published_per_s", "delivered_per_s", "latency_p50_ms",
            "latency_p99_ms", "gateway_cpu_us_per_delivered", "redis_cpu_us_per_published",
            "gateway_rss_per_idle_connection_bytes", "delivered_ratio_to_memory", "cpu_ratio_to_memory"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in report["results"]:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", default="1,2,3", help="gateway counts on Redis (default 1,2,3)")
    parser.add_argument("--users", type=int, default=250)
    parser.add_argument("--tabs", type=int, default=2, help="connections per user (default 2)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per setup (default 5)")
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args()
    args.processes = [int(x) for x in args.processes.split(",") if x]
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    report = asyncio.run(asyncio.wait_for(main_async(args), 300))
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
