"""Server CPU on livegate's queued path: resume replays and progress events (bench/README.md).

    .venv/bin/python bench/queued_probe.py                      # ~1 minute
    .venv/bin/python bench/queued_probe.py --baseline HEAD~1    # and the code at a ref, interleaved

``bench/run.py`` publishes notifications, which take the fan-out's synchronous send. Two
paths it does not load go through each connection's writer task instead:

* **replay**: 1,000 events in one user's history; connections resume from offset 0, five at a
  time, each waiting for all 1,000 (server CPU per replayed event);
* **progress**: ``generationProgress`` events (each with a conflation key, so always queued),
  distinct generation ids so none is conflated, to 20 users x 2 connections, in batches of
  100 (server CPU per delivered event).

The gateway (a real ``livegate serve``) is pinned to core 0 and this process (a ``websockets``
client) to core 1. Rounds alternate between the targets; each figure is the median of its
rounds. Every wait is bounded (30-60 s); nothing is asserted about speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `python bench/queued_probe.py`

from bench.procs import cpu_seconds, pin
from bench.run import export_source
from livegate.testing.gateway import TEST_SERVICE_TOKEN
from livegate.testing.process import GatewayProcess

HISTORY = 1_000
USERS = 20


async def _publish(http: httpx.AsyncClient, events: list[dict[str, object]]) -> dict[str, object]:
    response = await http.post("/v1/events", json={"events": events})
    response.raise_for_status()
    return dict(response.json())


async def replay_us(gw: GatewayProcess, resumes: int) -> float:
    """Server CPU microseconds per replayed event."""
    assert gw.pid is not None
    async with httpx.AsyncClient(base_url=gw.http_url, headers={"authorization": f"Bearer {TEST_SERVICE_TOKEN}"}) as http:
        user = f"r{os.urandom(4).hex()}"
        for start in range(0, HISTORY, 100):
            result = await _publish(http, [{"userId": user, "event": {
                "type": "notification", "level": "info", "message": "x" * 200 + str(n)}} for n in range(start, start + 100)])
    epoch = result["results"][0]["epoch"]  # type: ignore[index]
    token = gw.token(user)

    async def resume() -> None:
        async with websockets.connect(gw.ws_url, compression=None, max_queue=None) as ws:
            await ws.send(json.dumps({"type": "auth", "token": token, "resume": {"epoch": epoch, "offset": 0}}))
            got = 0
            async with asyncio.timeout(30):
                while got < HISTORY:
                    got += '"offset"' in await ws.recv()

    await resume()  # warm-up
    before = cpu_seconds(gw.pid)
    for _ in range(resumes // 5):
        await asyncio.gather(*(resume() for _ in range(5)))
    return (cpu_seconds(gw.pid) - before) / (resumes // 5 * 5 * HISTORY) * 1e6


async def progress_us(gw: GatewayProcess, batches: int) -> float:
    """Server CPU microseconds per delivered (queued, not conflated) progress event."""
    assert gw.pid is not None
    tag = os.urandom(4).hex()
    conns = []
    try:
        for i in range(USERS * 2):
            ws = await websockets.connect(gw.ws_url, compression=None, max_queue=None)
            conns.append(ws)
            await ws.send(json.dumps({"type": "auth", "token": gw.token(f"p{tag}-{i // 2}")}))
            await ws.recv()

        async def drain(ws: websockets.ClientConnection, want: int) -> None:
            got = 0
            async with asyncio.timeout(60):
                while got < want:
                    got += '"generationProgress"' in await ws.recv()

        per_user = 100 // USERS
        async with httpx.AsyncClient(base_url=gw.http_url,
                                     headers={"authorization": f"Bearer {TEST_SERVICE_TOKEN}"}) as http:
            before = cpu_seconds(gw.pid)
            for k in range(batches):
                await _publish(http, [{"userId": f"p{tag}-{u}", "event": {
                    "type": "generationProgress", "generationId": f"g{u}-{k}-{j}", "fraction": 0.5}}
                    for j in range(per_user) for u in range(USERS)])
                await asyncio.gather(*(drain(ws, per_user) for ws in conns))
            return (cpu_seconds(gw.pid) - before) / (batches * per_user * USERS * 2) * 1e6
    finally:
        for ws in conns:
            await ws.close()


async def main_async(args: argparse.Namespace, work: Path) -> dict[str, dict[str, object]]:
    targets: dict[str, dict[str, str]] = {"livegate": {}}
    if args.baseline:
        targets["livegate-before"] = {"PYTHONPATH": str(export_source(args.baseline, work / "baseline"))}
    os.sched_setaffinity(0, {1})
    runs: dict[str, dict[str, list[float]]] = {name: {"replay": [], "progress": []} for name in targets}
    for _ in range(args.rounds):
        for name, env in targets.items():
            with GatewayProcess(work / name, env={"LIVEGATE_LOG_LEVEL": "WARNING", **env}) as gw:
                assert gw.pid is not None
                pin(gw.pid, {0})
                runs[name]["replay"].append(await replay_us(gw, args.resumes))
                runs[name]["progress"].append(await progress_us(gw, args.progress_batches))
            print(f"  {name}: replay {runs[name]['replay'][-1]:.2f} us/event, "
                  f"progress {runs[name]['progress'][-1]:.2f} us/event", file=sys.stderr, flush=True)
    report: dict[str, dict[str, object]] = {}
    for name, figures in runs.items():
        report[name] = {}
        for figure, values in figures.items():
            report[name][figure] = round(statistics.median(values), 2)
            report[name][f"{figure}_rounds"] = [round(v, 2) for v in values]
    return report


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--resumes", type=int, default=40, help="resumes of 1,000 events per round")
    p.add_argument("--progress-batches", type=int, default=120, help="batches of 100 progress events per round")
    p.add_argument("--baseline", metavar="GITREF", help="also run src/ at this git ref, interleaved")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="livegate-queued-") as tmp:
        report = asyncio.run(main_async(args, Path(tmp)))
    print(json.dumps(report, indent=2))
    if "livegate-before" in report:
        now, before = report["livegate"], report["livegate-before"]
        ratios = {f: float(now[f]) / float(before[f]) for f in ("replay", "progress")}  # type: ignore[arg-type]
        print(f"livegate / livegate-before: replay {ratios['replay']:.2f}, progress {ratios['progress']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
