"""Streamed text as exact deltas end to end (asyncapi.yaml, "Streamed text"): a slow reader
that stops reading and then reads gets conflated, *merged* deltas and rebuilds the exact
text; a connection that did not ask for deltas still gets ``partialText``; over the memory
and the Redis bus. Every frame is validated against asyncapi.yaml (the Probe)."""

from __future__ import annotations

import asyncio
import secrets
import socket
from pathlib import Path
from typing import Any

import pytest
import websockets

from livegate.client import LivegateClient
from livegate.protocol import http
from livegate.protocol.messages import GenerationProgress, GenerationUpdate
from livegate.testing.gateway import running_gateway
from livegate.testing.spec_validation import assert_valid_message

from ._generations import stack
from .conftest import Probe

#: ASCII, accents, CJK and characters outside the BMP (2 UTF-16 code units each).
TEXT = "".join(f"Token {i}: the lighthouse 🌅 sweeps the fog, é中😀. " for i in range(150))


def js_apply(text: str, offset: int, delta: str) -> str:
    """What a JavaScript client does: ``text.slice(0, offset) + delta`` (UTF-16 indices),
    written independently of livegate.protocol.textdelta."""
    units = text.encode("utf-16-le")
    assert offset * 2 <= len(units), "a delta must never start beyond the text received"
    return (units[: offset * 2] + delta.encode("utf-16-le")).decode("utf-16-le")


def pieces(text: str, size: int = 7) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


@pytest.fixture(params=["memory", "redis"])
def bus_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    if request.param == "memory":
        return {}
    return {"redis_url": request.getfixturevalue("redis_server").url}


async def slow_socket_connect(url: str) -> Any:
    """A client that stops reading: a tiny receive buffer, and websockets stops reading the
    socket once one frame waits in its queue."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return await websockets.connect(url, sock=sock, max_queue=1, compression=None, max_size=2**24)


async def read_until_final(probe: Probe) -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(60):
        while not frames or frames[-1]["type"] != "generationUpdate":
            frames.extend(await probe.events(1, timeout=60))
    return frames


async def test_a_slow_reader_gets_merged_deltas_and_rebuilds_the_exact_text(
        tmp_path: Path, connect: Any, bus_overrides: dict[str, Any]) -> None:
    user = "alice-" + secrets.token_hex(4)
    async with running_gateway(tmp_path, queue_max_bytes=1_000_000, **bus_overrides) as gw:
        slow = Probe(await slow_socket_connect(gw.ws_url))
        await slow.auth(gw.token(user), textDeltas=True)
        legacy = await connect(gw)
        await legacy.auth(gw.token(user))  # an old client: no textDeltas
        publisher, offset = gw.gateway.publisher, 0
        parts = pieces(TEXT)
        for start in range(0, len(parts), 40):  # bursts, with the loop free to flush in between
            batch = []
            for piece in parts[start:start + 40]:
                batch.append((user, http.GenerationProgressInput(
                    generation_id="g1", fraction=0.5, text_delta=piece, text_offset=offset)))
                offset += len(piece.encode("utf-16-le")) // 2
            await publisher.publish(batch)
            await asyncio.sleep(0)
        await publisher.publish([(user, http.GenerationUpdateInput(generation_id="g1", status="completed"))])
        total = len(parts) + 1

        # The old client got the whole text so far on every progress, as before deltas.
        legacy_frames = await read_until_final(legacy)
        assert legacy_frames[-2]["partialText"] == TEXT
        assert all("textDelta" not in f for f in legacy_frames)

        # The slow reader now reads: fewer frames than events, each offset accounted for.
        text, frames = "", await read_until_final(slow)
        for frame in frames[:-1]:
            text = js_apply(text, frame["textOffset"], frame["textDelta"])
            assert "partialText" not in frame
        accounted = {o for f in frames for o in [f["offset"], *f.get("supersedes", [])]}
        assert accounted == set(range(1, total + 1))
        assert len(frames) < total, "the reader that stopped reading must have been conflated"
        assert text == TEXT


async def test_a_late_joiner_gets_the_prefix_from_the_snapshot(tmp_path: Path, connect: Any) -> None:
    """A client that connects mid-stream sees a first ``textOffset`` beyond its text and
    takes the prefix from ``GET /v1/generations/{id}`` (``progress.partialText``); tested
    with a real run of the demo tool."""
    async with running_gateway(tmp_path) as gw, gw.http("alice") as client:
        created = (await client.post("/v1/generations", json={
            "toolId": "demo", "inputs": {"prompt": "a lighthouse 🌅 at dusk", "outputs": ["text"],
                                         "steps": 40, "durationSeconds": 3}})).json()
        early = await connect(gw)
        await early.auth(gw.token("alice"), textDeltas=True)
        first = await early.recv_type("generationProgress", timeout=15)
        while "textDelta" not in first or first["textOffset"] == 0:
            first = await early.recv_type("generationProgress", timeout=15)
        late = await connect(gw)
        await late.auth(gw.token("alice"), textDeltas=True)
        frame = await late.recv_type("generationProgress", timeout=15)
        while "textDelta" not in frame:
            frame = await late.recv_type("generationProgress", timeout=15)
        held = [frame]
        snapshot = (await client.get(f"/v1/generations/{created['id']}")).json()
        prefix = snapshot["progress"]["partialText"]
        assert len(prefix.encode("utf-16-le")) // 2 >= held[0]["textOffset"]
        text = prefix
        while True:
            for f in held:
                if "textDelta" in f:
                    text = js_apply(text, f["textOffset"], f["textDelta"])
            message = await late.recv(timeout=15)
            if message["type"] == "generationUpdate" and message["status"] == "completed":
                break
            held = [message] if message["type"] == "generationProgress" else []
        [output] = [o for o in message["outputs"] if o["kind"] == "text"]
        assert text == output["text"]


async def follow_text(client: LivegateClient, gen_id: str) -> tuple[str | None, str]:
    """The last streamed text the client exposed (``partial_text``) and the final text."""
    last: str | None = None
    async with asyncio.timeout(60):
        while True:
            message = await client.next_message(timeout=30)
            if getattr(message, "generation_id", None) != gen_id:
                continue
            if isinstance(message, GenerationProgress) and isinstance(message.partial_text, str):
                last = message.partial_text
            if isinstance(message, GenerationUpdate) and message.status == "completed":
                [output] = [o for o in message.outputs or [] if o.kind == "text"]
                assert isinstance(output.text, str)
                return last, output.text


async def test_the_python_client_shows_the_streamed_text_of_an_openai_run_even_when_it_joins_mid_stream(
        tmp_path: Path) -> None:
    async with stack(tmp_path) as env:
        gw = env.gw
        expected = env.openai.long_answer(600, seconds=4)
        async with LivegateClient(gw.ws_url, gw.token("alice"), on_frame=assert_valid_message) as early:
            await asyncio.wait_for(early.connected.wait(), 10)
            async with gw.http("alice") as client:
                created = (await client.post("/v1/generations", json={"toolId": "chat",
                                                                       "inputs": {"prompt": "x"}})).json()
            following = asyncio.create_task(follow_text(early, created["id"]))
            async with asyncio.timeout(30):
                while not (early.texts.text(created["id"]) or "").endswith("waves"):
                    await asyncio.sleep(0.02)  # the early client has some text: join now
            async with LivegateClient(gw.ws_url, gw.token("alice"), on_frame=assert_valid_message) as late:
                late_text, late_final = await follow_text(late, created["id"])
            early_text, early_final = await following
    assert early_final == late_final == expected
    assert early_text == expected, "the streamed text must equal the final text"
    assert late_text == expected, "a client that joined mid-stream must rebuild the exact text too"


async def test_the_python_client_text_stays_exact_across_a_4001_and_a_resume(tmp_path: Path) -> None:
    """The server drops the client's connection mid-stream (slow consumer, queue dropped):
    the client resumes (``recovered: true``), the replay brings the deltas it missed, and
    the text it exposes ends equal to the final text."""
    async with running_gateway(tmp_path) as gw:
        client = LivegateClient(gw.ws_url, gw.token("alice"), backoff_initial=0.01, backoff_max=0.05,
                                on_frame=assert_valid_message)
        async with client, gw.http("alice") as http_client:
            await asyncio.wait_for(client.connected.wait(), 10)
            created = (await http_client.post("/v1/generations", json={
                "toolId": "demo", "inputs": {"prompt": "a lighthouse 🌅 at dusk, é中😀 " * 4, "outputs": ["text"],
                                             "steps": 40, "durationSeconds": 3}})).json()
            following = asyncio.create_task(follow_text(client, created["id"]))
            async with asyncio.timeout(15):
                while not client.texts.text(created["id"]):
                    await asyncio.sleep(0.02)
            for connection in list(gw.gateway.connections):
                connection.request_close("slow_consumer", "test: dropped mid-stream", flush=False)
            streamed, final = await following
        assert any(w.recovered is True for w in client.welcomes), client.welcomes
        assert 4001 in client.close_codes
        assert streamed == final
