"""Validation never blocks the event loop (issue 14): ``inputs`` are bounded in size and
array length before the tool's JSON Schema runs (``uniqueItems`` over 3,000 objects took
14 s on the loop), and the schema check runs off the loop; ``/healthz`` keeps answering
in milliseconds meanwhile."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx

from livegate.testing.gateway import running_gateway
from tests.app._hostile import assert_problem, no_error_logs


def hostile(count: int) -> bytes:
    """The issue's 37 KB body: ``inputs.outputs`` holding ``count`` small distinct objects."""
    return json.dumps({"toolId": "demo", "inputs": {"outputs": [{"k": i} for i in range(count)]}}).encode()


async def _healthz_latencies(client: httpx.AsyncClient, stop: asyncio.Event) -> list[float]:
    latencies = []
    while not stop.is_set():
        started = time.perf_counter()
        response = await client.get("/healthz")
        assert response.status_code == 200
        latencies.append(time.perf_counter() - started)
        await asyncio.sleep(0.002)
    return latencies


async def _while_healthz(gw: Any, work: Any) -> tuple[Any, list[float]]:
    async with httpx.AsyncClient(base_url=gw.http_url, timeout=10) as health:
        await health.get("/healthz")  # the connection is open before the clock starts
        stop = asyncio.Event()
        watcher = asyncio.create_task(_healthz_latencies(health, stop))
        try:
            result = await work
        finally:
            stop.set()
        return result, await watcher


async def test_the_hostile_3000_item_inputs_get_a_quick_422_and_healthz_stays_fast(tmp_path) -> None:
    body = hostile(3000)
    assert 30_000 < len(body) < 40_000
    async with running_gateway(tmp_path) as gw, gw.http("alice") as client:
        with no_error_logs():
            started = time.perf_counter()
            responses, latencies = await _while_healthz(gw, asyncio.gather(*(
                client.post("/v1/generations", content=body, headers={"content-type": "application/json"})
                for _ in range(8))))
            elapsed = time.perf_counter() - started
        for response in responses:
            problem = assert_problem(response.status_code, response.headers, response.content, {422})
            assert problem["code"] == "validation_failed"
            assert problem["errors"][0]["path"] == "$.inputs.outputs", problem
        assert elapsed < 2.0, elapsed  # eight of them; one took 14 s before
        # milliseconds on an idle machine; the bound leaves room for a loaded CI host and is
        # still far below the 14 s the pairwise check froze the loop for before
        assert latencies and max(latencies) < 0.5, sorted(latencies)[-3:]


async def test_inputs_at_the_bound_are_validated_off_the_loop(tmp_path) -> None:
    # 256 items pass the bound and reach jsonschema's pairwise uniqueItems (~0.1 s each):
    # in a worker thread, so /healthz answers in milliseconds throughout.
    async with running_gateway(tmp_path) as gw, gw.http("alice") as client:
        with no_error_logs():
            responses, latencies = await _while_healthz(gw, asyncio.gather(*(
                client.post("/v1/generations", content=hostile(256), headers={"content-type": "application/json"})
                for _ in range(4))))
        for response in responses:
            problem = assert_problem(response.status_code, response.headers, response.content, {422})
            assert problem["errors"][0]["path"].startswith("$.inputs.outputs[")
        # milliseconds on an idle machine; the bound leaves room for a loaded CI host and is
        # still far below the 14 s the pairwise check froze the loop for before
        assert latencies and max(latencies) < 0.5, sorted(latencies)[-3:]
        too_big = json.dumps({"toolId": "demo", "inputs": {"prompt": "p" * 300_000}})
        response = await client.post("/v1/generations", content=too_big, headers={"content-type": "application/json"})
        problem = assert_problem(response.status_code, response.headers, response.content, {422})
        assert problem["errors"][0]["path"] == "$.inputs" and "limit" in problem["errors"][0]["message"]
