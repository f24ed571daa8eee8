"""Run control through the public interfaces (issue 13): ``cancelAfterSeconds`` on create
(the demo run and a ComfyUI prompt stopped at the deadline, on SQLite and PostgreSQL),
queue positions on the stream and over ``GET`` (a busy demo tool; ComfyUI's own queue),
and the in-band ``cancel`` message. Every server frame is validated against asyncapi.yaml
by the :class:`~tests.app.conftest.Probe`, and so is every ``cancel`` the tests send."""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from livegate.testing.gateway import RunningGateway, running_gateway
from livegate.testing.spec_validation import schema_errors

from ._generations import COMFY, FINAL, WORKFLOWS, Stack, fakes, follow, tools_toml
from .conftest import Probe

# A demo tool that runs one generation at a time (so others queue behind it), and the slow
# ComfyUI workflow with three slots (so prompts queue in ComfyUI's own queue instead).
EXTRA_TOOLS = """
[[tools]]
id = "demo-one"
kind = "demo"
title = "Demo, one at a time"
max_concurrency = 1

[[tools]]
id = "comfy-queue"
kind = "comfyui"
title = "ComfyUI, three prompts at once"
timeout_seconds = 60
max_concurrency = 3
[tools.settings]
base_url = "{comfy_url}"
workflow = "{workflow}"
{settings}"""


@contextlib.asynccontextmanager
async def run_control_stack(tmp_path: Path, request: pytest.FixtureRequest, *, comfy_speed: float = 0.05,
                            **overrides: Any) -> AsyncIterator[Stack]:
    database_url = None
    if getattr(request, "param", "sqlite") == "postgres":
        server = request.getfixturevalue("postgres_server")
        database_url = server.create_database("runctl_" + secrets.token_hex(4))
    async with fakes(tmp_path, comfy_speed) as (openai, comfy, tools_file):
        tools_file.write_text(tools_toml(openai.base_url, comfy.base_url) + EXTRA_TOOLS.format(
            comfy_url=comfy.base_url, workflow=WORKFLOWS / "slow_blur_chain.json", settings=COMFY))
        async with running_gateway(tmp_path / "data", tools_file=str(tools_file), database_url=database_url,
                                   **overrides) as gw:
            yield Stack(gw, openai, comfy, tools_file)


@pytest.fixture(params=["sqlite", "postgres"])
async def env(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    async with run_control_stack(tmp_path, request) as s:
        yield s


@pytest.fixture
async def sqlite_env(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    async with run_control_stack(tmp_path, request) as s:
        yield s


async def create(gw: RunningGateway, user: str, tool: str, *, cancel_after: float | None = None,
                 **inputs: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"toolId": tool, "inputs": inputs}
    if cancel_after is not None:
        body["cancelAfterSeconds"] = cancel_after
    async with gw.http(user) as client:
        response = await client.post("/v1/generations", json=body)
    assert response.status_code == 202, response.text
    return checked(response.json())


async def record(gw: RunningGateway, user: str, gen_id: str) -> dict[str, Any]:
    async with gw.http(user) as client:
        response = await client.get(f"/v1/generations/{gen_id}")
    assert response.status_code == 200, response.text
    return checked(response.json())


def checked(generation: dict[str, Any]) -> dict[str, Any]:
    assert not schema_errors(generation, "Generation", "asyncapi"), schema_errors(generation, "Generation", "asyncapi")
    return generation


def updates(events: list[dict[str, Any]]) -> list[tuple[str, int | None]]:
    return [(e["status"], e.get("queuePosition")) for e in events if e["type"] == "generationUpdate"]


async def life(probe: Probe, gen_id: str, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Every event of ``gen_id`` the probe received, up to its final ``generationUpdate``
    (read on until it arrives)."""
    def mine() -> list[dict[str, Any]]:
        return [m for m in probe.received if m.get("generationId") == gen_id and "offset" in m]

    if not any(m["type"] == "generationUpdate" and m["status"] in FINAL for m in mine()):
        await follow(probe, gen_id, timeout)
    return mine()


async def until_update(probe: Probe, gen_id: str, status: str, position: int | None,
                       timeout: float = 15.0) -> dict[str, Any]:
    """The first ``generationUpdate`` of ``gen_id`` with this status and position."""
    while True:
        message = await probe.recv(timeout)
        if (message["type"], message.get("generationId"), message.get("status"),
                message.get("queuePosition")) == ("generationUpdate", gen_id, status, position):
            return message


# -- deadlines --------------------------------------------------------------------------------------


async def test_deadlines_end_a_running_and_a_queued_demo_run_cancelled(env: Stack) -> None:
    probe = await env.probe("alice")
    running = await create(env.gw, "alice", "demo-one", cancel_after=2.0, durationSeconds=20, steps=20)
    queued = await create(env.gw, "alice", "demo-one", cancel_after=0.5, durationSeconds=0)
    assert running["deadlineAt"] > queued["deadlineAt"]
    assert queued["status"] == "queued" and queued["queuePosition"] == 1

    queued_events = await life(probe, queued["id"])
    assert updates(queued_events) == [("queued", 1), ("cancelled", None)]  # it never ran
    assert queued_events[-1]["error"]["code"] == "deadline_exceeded"
    assert queued_events[-1]["deadlineAt"] == queued["deadlineAt"]

    running_events = await life(probe, running["id"])
    statuses = [s for s, _ in updates(running_events)]
    assert statuses == ["queued", "running", "cancelled"], statuses
    final = running_events[-1]
    assert final["error"]["code"] == "deadline_exceeded" and "running" in final["error"]["message"]
    assert any(e["type"] == "generationProgress" for e in running_events)  # it did run until then
    for gen_id, event in ((running["id"], final), (queued["id"], queued_events[-1])):
        stored = await record(env.gw, "alice", gen_id)
        assert stored["status"] == "cancelled" and stored["error"] == event["error"]
        assert "deadlineAt" in stored and "queuePosition" not in stored


async def test_a_deadline_interrupts_the_comfyui_prompt(env: Stack) -> None:
    env.comfy.pause()  # hold the prompt mid-run so the deadline finds it running
    probe = await env.probe("alice")
    created = await create(env.gw, "alice", "comfy-slow", cancel_after=1.0)
    await env.comfy.wait_for(lambda: env.comfy.running_prompt_id is not None)
    prompt_id = env.comfy.running_prompt_id or ""
    await until_update(probe, created["id"], "running", None)
    await env.comfy.wait_for(lambda: prompt_id in env.comfy.interrupts, timeout=10)  # the deadline's
    env.comfy.resume()  # the interrupt lands at the next node, as on a real ComfyUI
    events = await follow(probe, created["id"], timeout=20)
    assert events[-1]["status"] == "cancelled" and events[-1]["error"]["code"] == "deadline_exceeded"
    entry = env.comfy.history_entry(prompt_id)  # the fake saw the interrupt before the record said so
    assert entry is not None and entry["status"]["messages"][-1][0] == "execution_interrupted"


async def test_a_deadline_deletes_a_prompt_waiting_in_comfyuis_queue(sqlite_env: Stack) -> None:
    env = sqlite_env
    env.comfy.pause()  # the first prompt holds ComfyUI's only worker
    probe = await env.probe("alice")
    first = await create(env.gw, "alice", "comfy-queue")
    await env.comfy.wait_for(lambda: len(env.comfy.submitted) == 1)
    waiting = await create(env.gw, "alice", "comfy-queue", cancel_after=1.0)
    await env.comfy.wait_for(lambda: len(env.comfy.submitted) == 2)
    pending_id = env.comfy.submitted[1]["prompt_id"]
    events = await life(probe, waiting["id"])
    assert updates(events) == [("queued", 1), ("running", None), ("running", 1), ("cancelled", None)]
    assert events[-1]["error"]["code"] == "deadline_exceeded"
    async with httpx.AsyncClient(base_url=env.comfy.base_url) as comfy:
        assert (await comfy.get("/queue")).json()["queue_pending"] == []  # deleted there, never run
    env.comfy.resume()
    async with env.gw.http("alice") as client:
        await client.post(f"/v1/generations/{first['id']}/cancel")
    assert env.comfy.history_entry(pending_id) is None


async def test_a_deadline_closes_the_openai_stream(sqlite_env: Stack) -> None:
    env = sqlite_env
    env.openai.hang_after_events = 4  # the upstream stream stalls mid-answer
    probe = await env.probe("alice")
    created = await create(env.gw, "alice", "chat", cancel_after=1.5, prompt="Say hello")
    await env.openai.wait_for(lambda: env.openai.stream_disconnects == 1, timeout=10)  # we hung up
    events = await life(probe, created["id"])
    assert events[-1]["status"] == "cancelled" and events[-1]["error"]["code"] == "deadline_exceeded"


async def test_cancel_after_seconds_is_bounded_by_the_setting(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    async with run_control_stack(tmp_path, request, max_cancel_after_seconds=60) as s, s.gw.http("alice") as client:
        for bad in (0, -5, 61, "soon"):
            answer = await client.post("/v1/generations", json={"toolId": "demo", "inputs": {},
                                                                "cancelAfterSeconds": bad})
            assert answer.status_code == 422, (bad, answer.text)
            problem = answer.json()
            assert problem["code"] == "validation_failed"
            assert [e["path"] for e in problem["errors"]] == ["$.cancelAfterSeconds"], problem
        ok = await client.post("/v1/generations", json={"toolId": "demo", "inputs": {"durationSeconds": 0},
                                                        "cancelAfterSeconds": 60})
        assert ok.status_code == 202 and "deadlineAt" in ok.json()


# -- queue positions --------------------------------------------------------------------------------


async def test_queued_runs_see_their_position_move_on_the_stream_and_over_get(sqlite_env: Stack) -> None:
    env = sqlite_env
    probe = await env.probe("alice")
    warmup = await create(env.gw, "alice", "demo-one", durationSeconds=0, steps=1)
    await follow(probe, warmup["id"])  # one completed run: the wait can be estimated from now on
    first = await create(env.gw, "alice", "demo-one", durationSeconds=30, steps=30)
    await until_update(probe, first["id"], "running", None)
    second = await create(env.gw, "alice", "demo-one", durationSeconds=30, steps=30)
    third = await create(env.gw, "alice", "demo-one", durationSeconds=0, steps=1)
    assert (second["queuePosition"], third["queuePosition"]) == (1, 2)
    assert third["estimatedWaitSeconds"] >= 0
    assert (await record(env.gw, "alice", third["id"]))["queuePosition"] == 2

    async with env.gw.http("alice") as client:  # the run ahead ends: everyone behind moves up
        assert (await client.post(f"/v1/generations/{first['id']}/cancel")).status_code == 200
    moved = await until_update(probe, third["id"], "queued", 1)
    assert moved["estimatedWaitSeconds"] >= 0
    assert (await record(env.gw, "alice", third["id"]))["queuePosition"] == 1
    async with env.gw.http("alice") as client:
        await client.post(f"/v1/generations/{second['id']}/cancel")
    events = await life(probe, third["id"])
    assert updates(events)[-2] == ("running", None) and events[-1]["status"] == "completed"

    # A reader that was away the whole time (resuming from the start) gets every change,
    # the latest last: generationUpdate is never conflated (only generationProgress is).
    late = Probe(await websockets.connect(env.gw.ws_url, compression=None, max_queue=None))
    welcome = await late.auth(env.gw.token("alice"), resume={"epoch": probe.received[0]["epoch"], "offset": 0})
    assert welcome["recovered"] is True
    replayed = await follow(late, third["id"])
    assert updates(replayed) == [("queued", 2), ("queued", 1), ("running", None), ("completed", None)]


async def test_a_comfyui_run_reports_its_place_in_comfyuis_own_queue(sqlite_env: Stack) -> None:
    env = sqlite_env
    env.comfy.pause()  # the first prompt holds ComfyUI's only worker
    probe = await env.probe("alice")
    runs = []
    for count in (1, 2, 3):
        runs.append(await create(env.gw, "alice", "comfy-queue"))
        await env.comfy.wait_for(lambda n=count: len(env.comfy.submitted) == n)
    a, b, c = (r["id"] for r in runs)
    await until_update(probe, b, "running", 1)
    await until_update(probe, c, "running", 2)
    stored = await record(env.gw, "alice", c)
    assert stored["status"] == "running" and stored["queuePosition"] == 2 and "estimatedWaitSeconds" not in stored

    async with env.gw.http("alice") as client:  # C leaves ComfyUI's queue: nobody behind it moves
        await client.post(f"/v1/generations/{c}/cancel")
    async with httpx.AsyncClient(base_url=env.comfy.base_url) as comfy:
        pending = (await comfy.get("/queue")).json()["queue_pending"]
    assert [item[1] for item in pending] == [env.comfy.submitted[1]["prompt_id"]]
    env.comfy.resume()
    async with env.gw.http("alice") as client:  # A is interrupted: B starts, its position goes
        await client.post(f"/v1/generations/{a}/cancel")
    await until_update(probe, b, "running", None)
    assert "queuePosition" not in await record(env.gw, "alice", b)
    async with env.gw.http("alice") as client:
        await client.post(f"/v1/generations/{b}/cancel")


# -- in-band cancel ---------------------------------------------------------------------------------


async def test_cancel_over_the_stream_from_another_tab(env: Stack) -> None:
    tab1, tab2 = await env.probe("alice"), await env.probe("alice")
    stranger = await env.probe("mallory")
    created = await create(env.gw, "alice", "demo", durationSeconds=20, steps=20)
    await until_update(tab1, created["id"], "running", None)

    await stranger.send({"type": "cancel", "id": "x1", "generationId": created["id"]})
    refused = await stranger.recv_type("error")
    assert (refused["id"], refused["code"], refused["fatal"]) == ("x1", "not_found", False)  # no leak
    assert (await record(env.gw, "alice", created["id"]))["status"] == "running"

    await tab2.send({"type": "cancel", "id": "c1", "generationId": created["id"]})
    answer = await tab2.recv_type("cancelResult", timeout=15)
    assert answer == {"type": "cancelResult", "id": "c1", "generationId": created["id"], "status": "cancelled"}
    for tab in (tab1, tab2):  # every tab sees the run end
        events = await life(tab, created["id"])
        assert events[-1]["status"] == "cancelled" and "error" not in events[-1]

    await tab1.send({"type": "cancel", "id": "c2", "generationId": created["id"]})
    again = await tab1.recv_type("error")
    assert (again["id"], again["code"], again["fatal"]) == ("c2", "illegal_transition", False)
    await tab1.send({"type": "cancel", "id": "c3", "generationId": "gen_unknown"})
    unknown = await tab1.recv_type("error")
    assert (unknown["id"], unknown["code"]) == ("c3", "not_found")
    await tab1.send(json.dumps({"type": "cancel", "id": "c4"}))  # invalid (sent raw): refused with the path
    bad = await tab1.recv_type("error")
    assert (bad["id"], bad["code"], bad["path"]) == ("c4", "invalid_message", "$")
    await tab1.send({"type": "ping", "id": "p1"})  # the connection stays open throughout
    assert (await tab1.recv_type("pong"))["id"] == "p1"


async def test_cancel_over_the_stream_of_a_queued_run(sqlite_env: Stack) -> None:
    env = sqlite_env
    tab = await env.probe("alice")
    busy = await create(env.gw, "alice", "demo-one", durationSeconds=20, steps=20)
    waiting = await create(env.gw, "alice", "demo-one", durationSeconds=0)
    await tab.send({"type": "cancel", "id": "q1", "generationId": waiting["id"]})
    answer = await tab.recv_type("cancelResult")
    assert (answer["id"], answer["status"]) == ("q1", "cancelled")
    await tab.send({"type": "cancel", "id": "q2", "generationId": busy["id"]})
    assert (await tab.recv_type("cancelResult", timeout=15))["status"] == "cancelled"
