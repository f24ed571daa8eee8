"""Durable records across a gateway restart on the same data directory: history and
outputs are kept, runs a dead process left ``running`` are taken over on start-up — run again where that
is safe (demo: deterministic), failed with ``interrupted_by_restart`` where it is not (an
OpenAI request that already went upstream), followed to their end by prompt id (ComfyUI,
with the fake still holding the prompt)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from livegate.testing.gateway import RunningGateway, running_gateway
from livegate.testing.spec_validation import schema_errors

from ._generations import fakes, follow
from .conftest import Probe


async def start(gw: RunningGateway, tool: str, **inputs: Any) -> str:
    async with gw.http("alice") as client:
        response = await client.post("/v1/generations", json={"toolId": tool, "inputs": inputs})
    assert response.status_code == 202, response.text
    return response.json()["id"]  # type: ignore[no-any-return]


async def get(gw: RunningGateway, gen_id: str) -> dict[str, Any]:
    async with gw.http("alice") as client:
        record = (await client.get(f"/v1/generations/{gen_id}")).json()
    assert not schema_errors(record, "Generation", "asyncapi"), record
    return record  # type: ignore[no-any-return]


async def probe(gw: RunningGateway) -> Probe:
    import websockets

    ws = await websockets.connect(gw.ws_url, compression=None, max_queue=None)
    p = Probe(ws)
    await p.auth(gw.token("alice"))
    return p


async def wait_status(gw: RunningGateway, gen_id: str, status: str, timeout: float = 5) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while (record := await get(gw, gen_id))["status"] != status:
            await asyncio.sleep(0.02)
    return record


async def test_history_survives_and_unattachable_runs_fail_with_a_reason(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with fakes(tmp_path) as (openai, _comfy, tools_file):
        async with running_gateway(data, tools_file=str(tools_file)) as first:
            watcher = await probe(first)
            done = await start(first, "demo", prompt="kept", durationSeconds=0)
            completed = (await follow(watcher, done))[-1]
            demo = await start(first, "demo", durationSeconds=2)
            openai.hang_after_events = 3
            chat = await start(first, "chat", prompt="Say hello")
            await wait_status(first, demo, "running")
            await openai.wait_for(lambda: len(openai.requests) == 1)
            old_url = completed["outputs"][0]["url"]
        # the process is gone; a new one starts on the same files
        async with running_gateway(data, tools_file=str(tools_file)) as second:
            kept = await get(second, done)
            assert kept["status"] == "completed" and kept["inputs"] == {"prompt": "kept", "durationSeconds": 0}
            assert [o["id"] for o in kept["outputs"]] == [o["id"] for o in completed["outputs"]]
            async with second.http() as anonymous:
                for url in (old_url, kept["outputs"][0]["url"]):  # the old signed URL is still good
                    response = await anonymous.get(url)
                    assert response.status_code == 200 and response.content.startswith(b"\x89PNG")
            # the chat request had gone upstream: never sent twice, failed with the reason
            failed = await wait_status(second, chat, "failed")
            assert failed["error"]["code"] == "interrupted_by_restart" and failed["error"]["message"]
            assert "finishedAt" in failed
            assert len(openai.requests) == 1
            # the demo run is deterministic: the new process runs it again to its end
            restarted = await wait_status(second, demo, "completed", timeout=30)
            assert restarted["outputs"] and restarted["inputs"] == {"durationSeconds": 2}
            async with second.http("alice") as client:
                page = (await client.get("/v1/generations")).json()
            assert [g["id"] for g in page["items"]] == [chat, demo, done]
            assert [g["status"] for g in page["items"]] == ["failed", "completed", "completed"]


async def test_a_comfyui_run_is_reattached_by_prompt_id(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with fakes(tmp_path) as (_openai, comfy, tools_file):
        async with running_gateway(data, tools_file=str(tools_file)) as first:
            gen_id = await start(first, "comfy-slow")
            await comfy.wait_for(lambda: comfy.running_prompt_id is not None)
            prompt_id = comfy.running_prompt_id or ""
            await comfy.wait_for_node(prompt_id, "2")
            comfy.pause()  # ComfyUI holds the prompt while the gateway is away
        assert comfy.running_prompt_id == prompt_id  # stopping the gateway did not interrupt it
        assert comfy.connection_count == 0

        async with running_gateway(data, tools_file=str(tools_file)) as second:
            watcher = await probe(second)
            record = await get(second, gen_id)
            assert record["status"] == "running"  # re-attached, not failed
            await comfy.wait_for(lambda: comfy.connection_count == 1)  # following the prompt again
            comfy.resume()
            events = await follow(watcher, gen_id)
            assert [e["type"] for e in events[:-1]] == ["generationProgress"] * (len(events) - 1)
            final = events[-1]
            assert final["status"] == "completed", final
            [output] = final["outputs"]
            assert output["kind"] == "image" and output["filename"].startswith("gateway_slow_")
            async with httpx.AsyncClient(base_url=second.http_url) as anonymous:
                assert (await anonymous.get(output["url"])).content.startswith(b"\x89PNG")
            assert (await get(second, gen_id))["status"] == "completed"
            assert len(comfy.submitted) == 1  # followed, never submitted again
