"""The HTTP side of generations (openapi.yaml ``listTools``, ``createGeneration``,
``getGeneration``, ``listGenerations``, ``cancelGeneration``, ``getOutput``) on a real
gateway, every body checked against the published schemas."""

from __future__ import annotations

import asyncio
import io
import time
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator
from PIL import Image

from livegate.testing.gateway import RunningGateway, running_gateway
from livegate.testing.spec_validation import schema_errors

TOOLS_TOML = """
[[tools]]
id = "demo"
kind = "demo"
title = "Demo (no network)"
[tools.settings]
duration_seconds = 0.1
steps = 2

[[tools]]
id = "slow"
kind = "demo"
title = "Slow demo"
[tools.settings]
duration_seconds = 20
steps = 40

[[tools]]
id = "chat"
kind = "openai"
title = "Chat"
[tools.settings]
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-unused"

[[tools]]
id = "comfy"
kind = "comfyui"
title = "ComfyUI"
[tools.settings]
base_url = "http://127.0.0.1:9"
workflow = "{workflow}"
[tools.settings.inputs.color]
schema = {{ type = "integer", minimum = 0, maximum = 16777215 }}
node = "1"
input = "color"
"""


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    workflow = Path(__file__).resolve().parents[1] / "fixtures/comfyui/workflows/success.json"
    tools = tmp_path / "tools.toml"
    tools.write_text(TOOLS_TOML.format(workflow=workflow))
    async with running_gateway(tmp_path / "data", tools_file=str(tools)) as gateway:
        yield gateway


def body(response: httpx.Response, schema: str, document: str = "openapi") -> Any:
    assert response.headers["content-type"].startswith("application/json"), response.text
    data = response.json()
    errors = schema_errors(data, schema, document)
    assert not errors, (errors, data)
    return data


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    data = response.json()
    assert not schema_errors(data, "Problem"), schema_errors(data, "Problem")
    assert data["status"] == status and data["code"] == code, data
    return data  # type: ignore[no-any-return]


async def start(client: httpx.AsyncClient, tool: str = "demo", **inputs: Any) -> dict[str, Any]:
    response = await client.post("/v1/generations", json={"toolId": tool, "inputs": inputs})
    assert response.status_code == 202, response.text
    return body(response, "Generation", "asyncapi")  # type: ignore[no-any-return]


async def settled(client: httpx.AsyncClient, gen_id: str, timeout: float = 10.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            generation = body(await client.get(f"/v1/generations/{gen_id}"), "Generation", "asyncapi")
            if generation["status"] in ("completed", "failed", "cancelled"):
                return generation  # type: ignore[no-any-return]
            await asyncio.sleep(0.02)


# -- tools ------------------------------------------------------------------------------------


async def test_tools_list_ids_kinds_and_input_schemas(gw: RunningGateway) -> None:
    async with gw.http() as anonymous:
        problem(await anonymous.get("/v1/tools"), 401, "unauthorized")
    async with gw.http("alice") as client:
        tools = body(await client.get("/v1/tools"), "ToolList")["tools"]
    assert [(t["id"], t["kind"], t["title"]) for t in tools] == [
        ("demo", "demo", "Demo (no network)"),
        ("slow", "demo", "Slow demo"),
        ("chat", "openai", "Chat"),
        ("comfy", "comfyui", "ComfyUI"),
    ]
    for tool in tools:
        Draft202012Validator.check_schema(tool["inputSchema"])
        assert tool["inputSchema"]["type"] == "object"
    by_id = {t["id"]: t["inputSchema"] for t in tools}
    assert by_id["demo"]["properties"]["durationSeconds"]["default"] == 0.1  # settings shape the form
    assert by_id["chat"]["required"] == ["prompt"]
    assert by_id["comfy"]["properties"]["color"]["default"] == 3368652  # the workflow's own value


# -- create, get, list ---------------------------------------------------------------------------


async def test_create_validates_the_body_and_the_inputs(gw: RunningGateway) -> None:
    async with gw.http() as anonymous:
        problem(await anonymous.post("/v1/generations", json={"toolId": "demo", "inputs": {}}), 401, "unauthorized")
    async with gw.http("alice") as client:
        problem(await client.post("/v1/generations", content=b"{not json"), 400, "bad_request")
        missing = problem(await client.post("/v1/generations", json={"inputs": {}}), 422, "validation_failed")
        assert "toolId" in missing["errors"][0]["message"]
        bad_id = problem(await client.post("/v1/generations", json={"toolId": "No!", "inputs": {}}),
                         422, "validation_failed")
        assert bad_id["errors"][0]["path"] == "$.toolId"
        problem(await client.post("/v1/generations", json={"toolId": "nope", "inputs": {}}), 404, "unknown_tool")
        invalid = problem(
            await client.post("/v1/generations", json={
                "toolId": "demo", "inputs": {"steps": 0, "outputs": ["image", "video"], "colour": "red"}}),
            422, "validation_failed",
        )
        assert [e["path"] for e in invalid["errors"]] == ["$.inputs", "$.inputs.outputs[1]", "$.inputs.steps"]
        assert all(e["message"] for e in invalid["errors"])
        chat = problem(await client.post("/v1/generations", json={"toolId": "chat", "inputs": {}}),
                       422, "validation_failed")
        assert chat["errors"] == [{"message": "'prompt' is a required property", "path": "$.inputs"}]
        page = body(await client.get("/v1/generations"), "GenerationPage")
        assert page["items"] == []  # nothing refused was stored


async def test_create_answers_202_and_the_owner_alone_sees_it(gw: RunningGateway) -> None:
    async with gw.http("alice") as alice, gw.http("bob") as bob:
        created = await start(alice, prompt="a red kite", steps=2.0)  # 2.0 is a JSON Schema integer
        assert created["status"] == "queued" and created["toolId"] == "demo"
        assert created["inputs"] == {"prompt": "a red kite", "steps": 2.0} and created["outputs"] == []
        problem(await bob.get(f"/v1/generations/{created['id']}"), 404, "not_found")
        problem(await bob.post(f"/v1/generations/{created['id']}/cancel"), 404, "not_found")
        problem(await alice.get("/v1/generations/gen_0000000000000000"), 404, "not_found")
        done = await settled(alice, created["id"])
        assert done["status"] == "completed", done
        assert [o["kind"] for o in done["outputs"]] == ["image", "text", "audio"]
        assert done["createdAt"] <= done["startedAt"] <= done["finishedAt"]
        assert body(await bob.get("/v1/generations"), "GenerationPage")["items"] == []


async def test_list_is_newest_first_with_cursor_pages_and_a_status_filter(gw: RunningGateway) -> None:
    async with gw.http("alice") as client:
        ids = [(await start(client, prompt=f"p{i}", durationSeconds=0))["id"] for i in range(5)]
        for gen_id in ids:
            await settled(client, gen_id)
        slow = (await start(client, "slow"))["id"]

        seen: list[str] = []
        params: dict[str, Any] = {"limit": 2}
        while True:
            page = body(await client.get("/v1/generations", params=params), "GenerationPage")
            assert len(page["items"]) <= 2
            seen += [g["id"] for g in page["items"]]
            if "nextCursor" not in page:
                break
            params["cursor"] = page["nextCursor"]
        assert seen == [slow, *ids[::-1]]

        completed = body(await client.get("/v1/generations", params={"status": "completed"}), "GenerationPage")
        assert [g["id"] for g in completed["items"]] == ids[::-1]
        active = body(await client.get("/v1/generations", params={"status": "running"}), "GenerationPage")
        assert [g["id"] for g in active["items"]] in ([slow], [])  # it may still be queued for a moment

        for params in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"status": "done"}, {"cursor": "garbage"}):
            problem(await client.get("/v1/generations", params=params), 422, "validation_failed")
        await client.post(f"/v1/generations/{slow}/cancel")


async def test_cancel_stops_a_running_generation_and_refuses_a_finished_one(gw: RunningGateway) -> None:
    async with gw.http("alice") as client:
        gen = await start(client, "slow")
        async with asyncio.timeout(5):
            while (await client.get(f"/v1/generations/{gen['id']}")).json().get("progress") is None:
                await asyncio.sleep(0.02)
        running = body(await client.get(f"/v1/generations/{gen['id']}"), "Generation", "asyncapi")
        assert running["status"] == "running" and running["progress"]["totalSteps"] == 40
        cancelled = body(await client.post(f"/v1/generations/{gen['id']}/cancel"), "Generation", "asyncapi")
        assert cancelled["status"] == "cancelled" and cancelled["outputs"] == [] and "finishedAt" in cancelled
        problem(await client.post(f"/v1/generations/{gen['id']}/cancel"), 409, "illegal_transition")
        problem(await client.post("/v1/generations/gen_missing/cancel"), 404, "not_found")


# -- outputs ------------------------------------------------------------------------------------


@pytest.fixture
async def outputs(gw: RunningGateway) -> dict[str, dict[str, Any]]:
    async with gw.http("alice") as client:
        done = await settled(client, (await start(client, width=96, height=64))["id"])
    assert done["status"] == "completed", done
    return {o["kind"]: o for o in done["outputs"]}


async def test_signed_urls_serve_the_owner_with_the_right_media_type(
    gw: RunningGateway, outputs: dict[str, dict[str, Any]]
) -> None:
    async with gw.http() as anonymous:  # an <img> element sends no Authorization header
        image = await anonymous.get(outputs["image"]["url"])
        assert image.status_code == 200 and image.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(image.content)).size == (96, 64)
        assert image.headers["accept-ranges"] == "bytes"
        assert image.headers["content-disposition"] == 'inline; filename="demo.png"'
        assert image.headers["x-content-type-options"] == "nosniff"
        audio = await anonymous.get(outputs["audio"]["url"])
        assert audio.headers["content-type"] == "audio/wav"
        with wave.open(io.BytesIO(audio.content)) as clip:
            assert clip.getnframes() / clip.getframerate() == pytest.approx(outputs["audio"]["durationSeconds"])
        text = await anonymous.get(outputs["text"]["url"])
        assert text.headers["content-type"] == "text/plain; charset=utf-8"
        assert text.text == outputs["text"]["text"]
        for output in outputs.values():
            assert int((await anonymous.get(output["url"])).headers["content-length"]) == output["sizeBytes"]


async def test_the_bare_path_needs_the_owners_token(gw: RunningGateway, outputs: dict[str, dict[str, Any]]) -> None:
    image = outputs["image"]
    bare = f"/v1/outputs/{image['id']}"
    async with gw.http() as anonymous, gw.http("alice") as alice, gw.http("bob") as bob:
        assert (await alice.get(bare)).content == (await anonymous.get(image["url"])).content
        unauthorized = problem(await anonymous.get(bare), 401, "unauthorized")
        assert unauthorized["instance"] == bare
        problem(await bob.get(bare), 404, "not_found")  # another user's output does not exist for bob
        problem(await anonymous.get(bare, headers={"Authorization": "Bearer not-a-jwt"}), 401, "unauthorized")
        expired = gw.token("alice", ttl_seconds=60, now=time.time() - 120)
        problem(await anonymous.get(bare, headers={"Authorization": f"Bearer {expired}"}), 401, "unauthorized")
        problem(await alice.get("/v1/outputs/out_0000000000000000"), 404, "not_found")


async def test_signatures_are_bound_to_output_user_and_expiry(
    gw: RunningGateway, outputs: dict[str, dict[str, Any]]
) -> None:
    image, text = outputs["image"], outputs["text"]
    query = httpx.URL(image["url"]).params
    store = gw.gateway.generations.outputs  # type: ignore[union-attr]
    past = int(time.time()) - 1
    past_sig = store.signature(image["id"], "alice", past)
    forged_for_bob = store.signature(image["id"], "bob", int(query["exp"]))
    async with gw.http() as anonymous, gw.http("bob") as bob:
        for url in (
            f"/v1/outputs/{image['id']}?exp={query['exp']}&sig={query['sig'][:-2]}AA",  # tampered
            f"/v1/outputs/{image['id']}?exp={int(query['exp']) + 60}&sig={query['sig']}",  # extended
            f"/v1/outputs/{text['id']}?exp={query['exp']}&sig={query['sig']}",  # another output's
            f"/v1/outputs/{image['id']}?exp={past}&sig={past_sig}",  # expired
            f"/v1/outputs/{image['id']}?exp={query['exp']}&sig={forged_for_bob}",  # minted for bob
            f"/v1/outputs/{image['id']}?sig={query['sig']}",  # no expiry
        ):
            problem(await anonymous.get(url), 401, "unauthorized")
            problem(await bob.get(url), 401, "unauthorized")  # a token does not rescue a bad signature
        problem(await anonymous.get(f"/v1/outputs/{image['id']}?exp=soon&sig=x"), 422, "validation_failed")


async def test_range_requests_let_media_seek(gw: RunningGateway, outputs: dict[str, dict[str, Any]]) -> None:
    audio = outputs["audio"]
    async with gw.http("alice") as client:
        whole = (await client.get(audio["url"])).content
        size = len(whole)

        async def ranged(value: str) -> httpx.Response:
            return await client.get(audio["url"], headers={"Range": value})

        for header, start, end in (
            ("bytes=0-3", 0, 3),
            ("bytes=44-", 44, size - 1),
            ("bytes=-10", size - 10, size - 1),
            (f"bytes=100-{size + 500}", 100, size - 1),
            ("bytes=0-0, 5-9", 0, 0),  # several ranges: the first one
        ):
            response = await ranged(header)
            assert response.status_code == 206, (header, response.text)
            assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"
            assert response.headers["content-type"] == "audio/wav"
            assert response.content == whole[start : end + 1]
        assert (await ranged("bytes=0-3")).content == b"RIFF"

        unsatisfiable = await ranged(f"bytes={size}-")
        problem(unsatisfiable, 416, "range_not_satisfiable")
        assert unsatisfiable.headers["content-range"] == f"bytes */{size}"
        for ignored in ("items=0-3", "bytes=5-1", "bytes=abc", "bytes=-"):  # RFC 9110: ignore, send it all
            response = await ranged(ignored)
            assert response.status_code == 200 and response.content == whole, ignored
        problem(await ranged("bytes=0-" + "9" * 300), 422, "validation_failed")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/outputs/..%2Flivegate.sqlite3",
        "/v1/outputs/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/v1/outputs/../livegate.sqlite3",
        "/v1/outputs/out_..%2F..%2Flivegate.sqlite3",
        "/v1/outputs/livegate.sqlite3",
        "/v1/outputs/secret.txt",
        "/v1/outputs/%00",
    ],
)
async def test_no_path_traversal(gw: RunningGateway, outputs: dict[str, dict[str, Any]], path: str) -> None:
    data_dir = gw.gateway.config.data_dir
    # outputs live in the database now; a file in the data dir must still never be served
    (data_dir / "outputs").mkdir(exist_ok=True)
    (data_dir / "outputs" / "secret.txt").write_text("TOP-SECRET-BYTES")
    async with gw.http("alice") as client:
        response = await client.get(path)
    assert response.status_code in (401, 404, 422), (path, response.status_code)
    assert b"TOP-SECRET-BYTES" not in response.content and b"SQLite" not in response.content


async def test_a_user_at_the_queued_cap_gets_429_too_many_queued(tmp_path: Path) -> None:
    """openapi.yaml ``createGeneration`` 429: fair use, per user (another user still gets in)."""
    async with (running_gateway(tmp_path, max_queued_per_user=2, max_concurrency_per_user=1) as gw,
                gw.http("alice") as alice, gw.http("bob") as bob):
        body = {"toolId": "demo", "inputs": {"durationSeconds": 30}}
        created = [await alice.post("/v1/generations", json=body)]
        async with asyncio.timeout(10):  # the first one runs (alice's one slot) ...
            while (await alice.get(f"/v1/generations/{created[0].json()['id']}")).json()["status"] != "running":
                await asyncio.sleep(0.02)
        created += [await alice.post("/v1/generations", json=body) for _ in range(2)]  # ... two wait
        assert [r.status_code for r in created] == [202, 202, 202]
        refused = problem(await alice.post("/v1/generations", json={"toolId": "demo", "inputs": {}}),
                          429, "too_many_queued")
        assert "queued" in refused["detail"]
        other = await bob.post("/v1/generations", json={"toolId": "demo", "inputs": {"durationSeconds": 0}})
        assert other.status_code == 202
        for response in created:
            await alice.post(f"/v1/generations/{response.json()['id']}/cancel")
