"""End to end, for each tool kind: a generation started over HTTP reaches a connected
WebSocket client as its whole life, in order, every frame valid against asyncapi.yaml;
its typed outputs are then fetched through their signed URLs. Tools come from a TOML
file pointing at the fake OpenAI and fake ComfyUI: no code per tool."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from livegate.testing.spec_validation import schema_errors

from ._generations import Stack, check_order, follow, stack


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Stack]:
    async with stack(tmp_path) as s:
        yield s


async def start(s: Stack, user: str, tool: str, **inputs: Any) -> str:
    async with s.gw.http(user) as client:
        response = await client.post("/v1/generations", json={"toolId": tool, "inputs": inputs})
    assert response.status_code == 202, response.text
    return response.json()["id"]  # type: ignore[no-any-return]


async def fetch(s: Stack, output: dict[str, Any]) -> bytes:
    async with s.gw.http() as anonymous:  # as an <img>/<audio> element would
        response = await anonymous.get(output["url"])
    assert response.status_code == 200 and response.headers["content-type"] == output["mediaType"]
    assert len(response.content) == output["sizeBytes"]
    return response.content


def data_url(preview: dict[str, Any]) -> bytes:
    prefix = f"data:{preview['mediaType']};base64,"
    assert preview["url"].startswith(prefix)
    return base64.b64decode(preview["url"][len(prefix):])


async def matches_http(s: Stack, user: str, gen_id: str, final: dict[str, Any]) -> None:
    """The record over HTTP agrees with what the stream said."""
    async with s.gw.http(user) as client:
        record = (await client.get(f"/v1/generations/{gen_id}")).json()
    assert not schema_errors(record, "Generation", "asyncapi")
    assert record["status"] == final["status"]
    assert [o["id"] for o in record["outputs"]] == [o["id"] for o in final.get("outputs", [])]
    assert record.get("error") == final.get("error")


async def test_demo(env: Stack) -> None:
    alice, bob = await env.probe("alice"), await env.probe("bob")
    gen_id = await start(env, "alice", "demo", prompt="a red kite")
    events = await follow(alice, gen_id)
    progress = check_order(events, "completed")
    assert [(p["step"], p["totalSteps"]) for p in progress] == [(1, 3), (2, 3), (3, 3)]
    assert progress[-1]["fraction"] == 1.0
    for p in progress:
        assert p["preview"]["mediaType"] == "image/jpeg"
        Image.open(io.BytesIO(data_url(p["preview"]))).verify()
    texts = [p["partialText"] for p in progress]
    assert all(b.startswith(a) and len(b) > len(a) for a, b in itertools.pairwise(texts))

    final = events[-1]
    assert final["toolId"] == "demo"
    image, text, audio = final["outputs"]
    assert (image["kind"], image["mediaType"], image["width"], image["height"]) == ("image", "image/png", 512, 512)
    assert Image.open(io.BytesIO(await fetch(env, image))).size == (512, 512)
    assert text["kind"] == "text" and text["text"] == texts[-1] and "a red kite" in text["text"]
    assert (await fetch(env, text)).decode() == text["text"]
    assert audio["kind"] == "audio" and (await fetch(env, audio))[8:12] == b"WAVE"
    await matches_http(env, "alice", gen_id, final)
    with pytest.raises(TimeoutError):
        await bob.recv(0.2)  # another user's connection heard nothing


async def test_openai_chat_streams_partial_text(env: Stack) -> None:
    probe = await env.probe("alice")
    gen_id = await start(env, "alice", "chat", prompt="Say hello")
    events = await follow(probe, gen_id)
    progress = check_order(events, "completed")
    assert progress[0]["message"] == "Asking gpt-4o-mini"
    texts = [p["partialText"] for p in progress if "partialText" in p]
    assert texts and texts[-1] == "Hello! How can I help?"
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
    [output] = events[-1]["outputs"]
    assert (output["kind"], output["text"]) == ("text", "Hello! How can I help?")
    assert (await fetch(env, output)).decode() == output["text"]
    [call] = [r for r in env.openai.requests if r.path == "/v1/chat/completions"]
    assert call.body["stream"] is True and call.body["messages"][-1] == {"role": "user", "content": "Say hello"}
    await matches_http(env, "alice", gen_id, events[-1])


async def test_openai_image(env: Stack) -> None:
    probe = await env.probe("alice")
    gen_id = await start(env, "alice", "image", prompt="a lighthouse")
    events = await follow(probe, gen_id)
    check_order(events, "completed")
    [output] = events[-1]["outputs"]
    assert output["kind"] == "image" and output["mediaType"] == "image/png"
    with Image.open(io.BytesIO(await fetch(env, output))) as picture:
        assert picture.size == (output["width"], output["height"])


async def test_openai_errors_reach_the_client_with_their_code(env: Stack) -> None:
    env.openai.fail_next("429_insufficient_quota")
    probe = await env.probe("alice")
    gen_id = await start(env, "alice", "chat", prompt="Say hello")
    events = await follow(probe, gen_id)
    check_order(events, "failed")
    assert events[-1]["error"]["code"] == "upstream_rate_limited" and "quota" in events[-1]["error"]["message"]


async def test_comfyui(env: Stack) -> None:
    probe = await env.probe("alice")
    gen_id = await start(env, "alice", "comfy")
    events = await follow(probe, gen_id)
    progress = check_order(events, "completed")
    assert progress[0]["message"] == "Queued on ComfyUI" and progress[0]["fraction"] == 0
    assert all(p["fraction"] < 1 for p in progress)
    previews = [p["preview"] for p in progress if "preview" in p]
    assert previews and previews[0]["mediaType"] == "image/png"  # PreviewImage's temp file
    [output] = events[-1]["outputs"]
    assert (output["kind"], output["mediaType"], output["filename"]) == ("image", "image/png",
                                                                         "gateway_capture_00001_.png")
    assert (await fetch(env, output)).startswith(b"\x89PNG")
    assert data_url(previews[0]).startswith(b"\x89PNG")
    await matches_http(env, "alice", gen_id, events[-1])


async def test_comfyui_binary_previews_and_websocket_images(env: Stack) -> None:
    """SaveImageWebsocket's images come as binary frames (event 4 after our feature flag):
    they reach the client as ``generationProgress.preview`` and are the outputs."""
    probe = await env.probe("alice")
    gen_id = await start(env, "alice", "comfy-ws")
    events = await follow(probe, gen_id)
    progress = check_order(events, "completed")
    outputs = events[-1]["outputs"]
    assert [(o["kind"], o["mediaType"], o["width"], o["height"]) for o in outputs] == [("image", "image/png", 64, 64)] * 2
    images = [await fetch(env, o) for o in outputs]
    previews = [data_url(p["preview"]) for p in progress if "preview" in p]
    assert previews and set(previews) <= set(images)  # each preview is one of the pushed images


async def test_comfyui_execution_error_names_the_node(env: Stack) -> None:
    probe = await env.probe("alice")
    gen_id = await start(env, "alice", "comfy-error")
    events = await follow(probe, gen_id)
    check_order(events, "failed")
    error = events[-1]["error"]
    assert error["code"] == "execution_error" and error["nodeId"] == "3"
    assert "SaveImage (node 3)" in error["message"] and "outputs" not in events[-1]
    await matches_http(env, "alice", gen_id, events[-1])


async def test_cancelling_comfyui_over_http_interrupts_the_prompt(env: Stack) -> None:
    probe = await env.probe("alice")
    gen_id = await start(env, "alice", "comfy-slow")
    await env.comfy.wait_for(lambda: env.comfy.running_prompt_id is not None)
    prompt_id = env.comfy.running_prompt_id or ""
    await env.comfy.wait_for_node(prompt_id, "2")
    async with env.gw.http("alice") as client:
        answer = await client.post(f"/v1/generations/{gen_id}/cancel")
    assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
    events = await follow(probe, gen_id)
    check_order(events, "cancelled")
    entry = env.comfy.history_entry(prompt_id)  # confirmed by ComfyUI before we answered
    assert entry is not None and entry["status"]["messages"][-1][0] == "execution_interrupted"


async def test_cancelling_an_openai_stream_closes_it(env: Stack) -> None:
    env.openai.hang_after_events = 4
    probe = await env.probe("alice")
    gen_id = await start(env, "alice", "chat", prompt="Say hello")
    async with asyncio.timeout(5):
        while True:
            message = await probe.recv()
            if message.get("partialText"):
                break
    async with env.gw.http("alice") as client:
        assert (await client.post(f"/v1/generations/{gen_id}/cancel")).json()["status"] == "cancelled"
    await env.openai.wait_for(lambda: env.openai.stream_disconnects == 1)
    assert (await follow(probe, gen_id))[-1]["status"] == "cancelled"


async def test_a_pending_comfyui_prompt_is_deleted_from_the_queue_on_cancel(env: Stack) -> None:
    """Two runs of the slow workflow: the second waits in ComfyUI's queue; cancelling it
    removes it there (``POST /queue {"delete"}``), and it never runs."""
    env.comfy.pause()  # the first prompt holds ComfyUI's only worker
    first = await start(env, "alice", "comfy-slow")
    await env.comfy.wait_for(lambda: len(env.comfy.submitted) == 1)
    second = await start(env, "alice", "comfy-slow")
    await env.comfy.wait_for(lambda: len(env.comfy.submitted) == 2)
    running, pending = (body["prompt_id"] for body in env.comfy.submitted)
    async with env.gw.http("alice") as client:
        assert (await client.post(f"/v1/generations/{second}/cancel")).json()["status"] == "cancelled"
        async with httpx.AsyncClient(base_url=env.comfy.base_url) as comfy:
            queue = (await comfy.get("/queue")).json()
        assert [item[1] for item in queue["queue_running"]] == [running] and queue["queue_pending"] == []
        env.comfy.resume()
        await client.post(f"/v1/generations/{first}/cancel")
    assert env.comfy.history_entry(pending) is None
