"""The fake ComfyUI against the captured traces.

For each scenario the test makes the capture client's moves (its ``send`` and ``http``
records) against the fake and compares what comes back with the ``recv`` records: text
frames as JSON with the same key order after normalising timestamps (the client submits
the captured prompt ids and client ids, so ids match as they are), binary frames byte for
byte. ``status`` frames (queue bookkeeping, which may interleave differently with the
client's own HTTP calls) are compared as their own sequence. HTTP answers are compared
with the records and with ``http/*.json``: status, content type, body.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets

from livegate.testing.comfyui_traces import Trace, load_traces
from livegate.testing.fake_comfyui import FakeComfyUI

from .conftest import COMFY_FIXTURES, COMFY_SPEED

TRACES = load_traces(COMFY_FIXTURES)
TIMEOUT = 10.0


def http_fixture(name: str) -> dict[str, Any]:
    return json.loads((COMFY_FIXTURES / "http" / f"{name}.json").read_text())


def norm(value: Any) -> Any:
    """Timestamps and queue numbers differ run to run: replace them by markers."""
    if isinstance(value, dict):
        return {
            k: "<t>" if k in ("timestamp", "create_time") else "<n>" if k == "number" else norm(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        if len(value) == 5 and isinstance(value[0], int) and isinstance(value[1], str):
            value = ["<n>", *value[1:]]  # a queue item / history "prompt": [number, id, ...]
        return [norm(v) for v in value]
    return value


def expected_frame(record: dict[str, Any]) -> str | bytes:
    if record["kind"] == "binary":
        return base64.b64decode(record["frame_b64"])
    return json.dumps(norm(record["msg"]))


def received_frame(frame: str | bytes) -> str | bytes:
    if isinstance(frame, bytes):
        return frame
    assert json.dumps(json.loads(frame)) == frame  # json.dumps formatting, like aiohttp's send_json
    return json.dumps(norm(json.loads(frame)))


def is_status(frame: str | bytes) -> bool:
    return isinstance(frame, str) and json.loads(frame)["type"] == "status"


def check_http(record: dict[str, Any], response: httpx.Response) -> None:
    expected = record["response"]
    where = f"{record['request']['method']} {record['request']['path']}"
    assert response.status_code == expected["status"], where
    content_type = expected["headers"].get("Content-Type")
    assert response.headers.get("content-type") == content_type, where
    if "body" in expected:
        assert norm(response.json()) == norm(expected["body"]), where
    elif "body_text" in expected:
        assert response.text == expected["body_text"], where
    elif "body_b64" in expected:
        assert response.content == base64.b64decode(expected["body_b64"]), where
    elif expected.get("body_empty"):
        assert response.content == b"", where


async def send_http(client: httpx.AsyncClient, request: dict[str, Any], prompt_ids: list[str]) -> httpx.Response:
    method, path = request["method"], request["path"]
    if "raw_body" in request:
        return await client.request(method, path, content=request["raw_body"].encode())
    body = request.get("body")
    if method == "POST" and path == "/prompt" and body and "prompt" in body and prompt_ids:
        body = {**body, "prompt_id": prompt_ids.pop(0)}  # the captured id, so frames match
    if body is None:
        return await client.request(method, path)
    return await client.request(method, path, json=body)


class Socket:
    """A WebSocket client splitting what it receives into status and other frames."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.frames: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.statuses: list[str] = []
        self._ws: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def open(self) -> Socket:
        self._ws = await websockets.connect(self.url, max_size=None)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in self._ws:
                self.frames.put_nowait(frame)
        self.frames.put_nowait(None)

    async def send(self, msg: Any) -> None:
        await self._ws.send(json.dumps(msg))

    async def next(self) -> str | bytes:
        """The next non-status frame (status frames are set aside in ``statuses``)."""
        async with asyncio.timeout(TIMEOUT):
            while True:
                frame = await self.frames.get()
                assert frame is not None, "socket closed"
                if is_status(frame):
                    self.statuses.append(received_frame(frame))  # type: ignore[arg-type]
                else:
                    return frame

    async def close(self) -> list[str | bytes]:
        """Close; file late status frames, return any other frame nobody asked for."""
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader
        leftover: list[str | bytes] = []
        while (frame := self.frames.get_nowait()) is not None:
            if is_status(frame):
                self.statuses.append(received_frame(frame))  # type: ignore[arg-type]
            else:
                leftover.append(frame)
        return leftover


async def replay(fake: FakeComfyUI, trace: Trace, *, skip_paths: tuple[str, ...] = ("/api/jobs",)) -> list[Socket]:
    """Make the capture client's moves and check every answer against the trace."""
    prompt_ids = trace.submitted_prompt_ids()
    sockets: list[Socket] = []
    expected_statuses: list[list[str]] = []
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        for record in trace.records:
            kind = record["dir"]
            if kind == "note" and record["event"] == "ws_connected":
                if sockets:  # a reconnect: the capture came back while node 3 was running
                    await fake.wait_for_node(trace.submitted_prompt_ids()[0], "3")
                sockets.append(await Socket(fake.ws_url + record["url"].removeprefix("/ws")).open())
                expected_statuses.append([])
            elif kind == "note" and record["event"].startswith("ws_closed_by_client"):
                assert await sockets[-1].close() == []
            elif kind == "send":
                await sockets[-1].send(record["msg"])
            elif kind == "http":
                if record["request"]["path"].startswith(skip_paths):
                    continue
                check_http(record, await send_http(client, record["request"], prompt_ids))
            elif kind == "recv" and record["kind"] == "text" and record["msg"]["type"] == "status":
                expected_statuses[-1].append(expected_frame(record))  # type: ignore[arg-type]
            elif kind == "recv":
                frame = await sockets[-1].next()
                assert received_frame(frame) == expected_frame(record), f"seq {record['seq']}"
    for socket, statuses in zip(sockets, expected_statuses, strict=True):
        assert socket.statuses == statuses
    return sockets


@pytest.fixture
async def fake() -> AsyncIterator[FakeComfyUI]:
    async with FakeComfyUI(COMFY_FIXTURES, speed=COMFY_SPEED) as server:
        yield server
    assert not server.errors, server.errors


async def get_history(fake: FakeComfyUI, prompt_id: str) -> Any:
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        return (await client.get(f"/history/{prompt_id}")).json()


def history_fixture(name: str) -> Any:
    return norm(http_fixture(name)["response"]["body"])


# -- scenario replays ---------------------------------------------------------------------


async def test_success_then_cached(fake: FakeComfyUI) -> None:
    await replay(fake, TRACES["success"])
    [pid] = TRACES["success"].submitted_prompt_ids()
    await fake.wait_for_history(pid)
    assert norm(await get_history(fake, pid)) == history_fixture("get_history_prompt_id_success")
    await replay(fake, TRACES["cached"])
    [cached] = TRACES["cached"].submitted_prompt_ids()
    await fake.wait_for_history(cached)
    assert norm(await get_history(fake, cached)) == history_fixture("get_history_prompt_id_cached")


@pytest.mark.parametrize(
    ("scenario", "history"),
    [
        ("execution_error", "get_history_prompt_id_error"),
        ("interrupted", "get_history_prompt_id_interrupted"),
        ("reconnect", "get_history_prompt_id_after_reconnect"),
        ("websocket_image", None),
        ("websocket_image_feature_flags", None),
    ],
)
async def test_scenario_replays_like_the_capture(fake: FakeComfyUI, scenario: str, history: str | None) -> None:
    await replay(fake, TRACES[scenario])
    [pid] = TRACES[scenario].submitted_prompt_ids()
    entry = await fake.wait_for_history(pid)
    if history:
        assert norm({pid: entry}) == history_fixture(history)
    else:
        assert entry["status"]["status_str"] == "success" and entry["outputs"] == {}


async def test_queue_of_three_prompts(fake: FakeComfyUI) -> None:
    fake.speed = 0.1  # A must still run while the client queues B and C and looks at /queue
    trace = TRACES["queue_three_prompts"]
    await replay(fake, trace)
    a, b, c = trace.submitted_prompt_ids()
    await fake.wait_for_history(b)
    assert set(fake._history) == {a, b}
    assert await get_history(fake, c) == http_fixture("get_history_prompt_id_unknown")["response"]["body"]


async def test_validation_errors_produce_no_frames(fake: FakeComfyUI) -> None:
    observer = await Socket(fake.ws_url + "?clientId=observer").open()
    await replay(fake, TRACES["validation_error"])
    assert fake.submitted == []
    # after all those refusals, the next frame anyone gets is the status of a valid prompt
    workflow = json.loads((COMFY_FIXTURES / "workflows/queue_item_A.json").read_text())
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        await client.post("/prompt", json={"prompt": workflow, "client_id": "someone"})
    async with asyncio.timeout(TIMEOUT):
        first, second = await observer.frames.get(), await observer.frames.get()
    assert json.loads(first or "")["data"]["sid"] == "observer"
    assert json.loads(second or "")["data"] == {"status": {"exec_info": {"queue_remaining": 1}}}
    await observer.close()


async def test_ws_without_client_id_gets_an_invented_sid(fake: FakeComfyUI) -> None:
    async with websockets.connect(fake.ws_url) as ws:
        first = json.loads(await ws.recv())
    expected = TRACES["ws_no_client_id"].of("recv")[0]["msg"]
    assert re.fullmatch(r"[0-9a-f]{32}", first["data"]["sid"])
    assert {**first, "data": {**first["data"], "sid": "x"}} == {**expected, "data": {**expected["data"], "sid": "x"}}


async def test_server_chosen_prompt_ids_are_substituted_everywhere(fake: FakeComfyUI) -> None:
    trace = TRACES["websocket_image_feature_flags"]
    captured = trace.submitted_prompt_ids()[0]
    socket = await Socket(fake.ws_url + "?clientId=me").open()
    await socket.send({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
    assert json.loads(await socket.next())["type"] == "feature_flags"
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        answer = (await client.post("/prompt", json={"prompt": trace.workflow, "client_id": "me"})).json()
    pid = answer["prompt_id"]
    assert pid != captured and answer["node_errors"] == {}
    frames = []
    while True:
        frame = await socket.next()
        frames.append(frame)
        if isinstance(frame, str) and json.loads(frame) == {"type": "executing", "data": {"node": None, "prompt_id": pid}}:
            break
    await socket.close()
    texts = [f for f in frames if isinstance(f, str)]
    assert all(captured not in f for f in texts) and all(pid in f for f in texts)
    previews = [f for f in frames if isinstance(f, bytes)]
    originals = [base64.b64decode(r["frame_b64"]) for r in trace.of("recv") if r["kind"] == "binary"]
    assert len(previews) == 2
    for preview, original in zip(previews, originals, strict=True):
        size = int.from_bytes(preview[4:8], "big")
        metadata = json.loads(preview[8 : 8 + size])
        assert metadata["prompt_id"] == pid and metadata["node_id"] == "3"
        assert preview[8 + size :] == original[8 + int.from_bytes(original[4:8], "big") :]


# -- HTTP endpoints against http/*.json ------------------------------------------------------

STATIC = [
    "get_view_output_png",
    "get_view_temp_png",
    "get_view_output_preview_webp",
    "get_view_404",
    "get_view_path_traversal",
    "get_object_info_EmptyImage",
    "get_object_info_SaveImage",
    "get_object_info_PreviewImage",
    "get_object_info_VAELoader",
    "get_object_info_ImageBlur",
    "get_object_info_GetImageSize",
    "get_object_info_KSampler",
    "get_object_info_SaveImageWebsocket",
    "get_object_info_unknown",
    "get_system_stats",
    "get_features",
    "get_queue_idle",
    "get_prompt_queue_info",
    "post_interrupt_global_no_body",
    "post_interrupt_not_running",
    "post_prompt_400_unknown_class",
    "post_prompt_400_missing_input",
    "post_prompt_400_value_out_of_range",
    "post_prompt_400_invalid_combo",
    "post_prompt_400_bad_link_type",
    "post_prompt_400_no_outputs",
    "post_prompt_400_no_prompt_key",
    "post_prompt_malformed_json",
    "get_history_prompt_id_unknown",
    "post_queue_delete",
]


@pytest.mark.parametrize("name", STATIC)
async def test_http_answers_match_the_capture(fake: FakeComfyUI, name: str) -> None:
    record = http_fixture(name)
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        response = await send_http(client, record["request"], [])
    check_http(record, response)
    disposition = record["response"]["headers"].get("Content-Disposition")
    assert response.headers.get("content-disposition") == disposition


async def test_client_prompt_id_history_and_deletion(fake: FakeComfyUI) -> None:
    record = http_fixture("post_prompt_client_prompt_id")
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        check_http(record, await send_http(client, record["request"], []))
        pid = record["request"]["body"]["prompt_id"]
        entry = await fake.wait_for_history(pid)  # nobody listens on "no-such-socket": frames dropped
        expected = http_fixture("get_history_prompt_id_client_prompt_id")["response"]["body"][pid]
        assert norm(entry["prompt"]) == norm(expected["prompt"])
        assert entry["status"]["status_str"] == "success" and entry["meta"] == expected["meta"]
        [image] = entry["outputs"]["3"]["images"]
        assert re.fullmatch(r"ComfyUI_temp_[a-z]{5}_00001_\.png", image["filename"]) and image["type"] == "temp"
        view = await client.get("/view", params={"filename": image["filename"], "type": "temp"})
        assert view.status_code == 200 and view.content.startswith(b"\x89PNG")

        latest = (await client.get("/history", params={"max_items": 1})).json()
        assert list(latest) == [pid]
        delete = http_fixture("post_history_delete")
        response = await client.post("/history", json={"delete": [pid]})
        check_http(delete, response)
        after = http_fixture("get_history_prompt_id_after_delete")
        check_http(after, await client.get(f"/history/{pid}"))


# -- test hooks ---------------------------------------------------------------------------------


async def test_dropped_sockets_and_refused_handshakes(fake: FakeComfyUI) -> None:
    workflow = TRACES["interrupted"].workflow
    socket = await Socket(fake.ws_url + "?clientId=c1").open()
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        pid = (await client.post("/prompt", json={"prompt": workflow, "client_id": "c1"})).json()["prompt_id"]
    await fake.wait_for_node(pid, "2")
    fake.accept_websockets = False
    await fake.drop_connections()
    async with asyncio.timeout(TIMEOUT):
        while await socket.frames.get() is not None:
            pass  # drained up to the server-side close
    with pytest.raises(websockets.InvalidStatus):
        await websockets.connect(fake.ws_url + "?clientId=c1")
    entry = await fake.wait_for_history(pid)  # the run went on without anyone listening
    assert entry["status"]["status_str"] == "success"
    fake.accept_websockets = True
    async with websockets.connect(fake.ws_url + "?clientId=c1") as ws:
        assert json.loads(await ws.recv())["data"]["sid"] == "c1"


async def test_forced_scenario_and_synthesised_runs(fake: FakeComfyUI) -> None:
    fake.force_scenario("execution_error")
    custom = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "mine"}},
    }
    async with httpx.AsyncClient(base_url=fake.base_url) as client:
        first = (await client.post("/prompt", json={"prompt": custom})).json()["prompt_id"]
        second = (await client.post("/prompt", json={"prompt": custom})).json()["prompt_id"]
    assert (await fake.wait_for_history(first))["status"]["status_str"] == "error"
    entry = await fake.wait_for_history(second)
    assert entry["status"]["status_str"] == "success"
    assert entry["outputs"] == {"2": {"images": [{"filename": "mine_00001_.png", "subfolder": "", "type": "output"}]}}
    with pytest.raises(ValueError, match="unknown scenario"):
        fake.force_scenario("nope")


def test_runs_from_the_command_line() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "livegate.testing.fake_comfyui", "--port", "0", "--fixtures", str(COMFY_FIXTURES)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once listening
        url = re.search(r"http://[\d.]+:\d+", line)
        assert url, line
        stats = httpx.get(url.group(0) + "/system_stats", timeout=5).json()
        assert stats["system"]["comfyui_version"] == "0.8.0"
    finally:
        process.terminate()
        process.wait(timeout=10)
