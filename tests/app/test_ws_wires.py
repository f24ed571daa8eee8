"""The endpoint's conformance suite, run over every wire (livegate.transport): the native one
(``livegate serve``) and ASGI (the app's Litestar route on another server), as the bus suite
runs over memory and Redis. The endpoint must not be able to tell which one carries it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from livegate.protocol import http
from livegate.testing.gateway import WIRES, RunningGateway, running_gateway

from .conftest import note


@pytest.fixture(params=WIRES)
def wire(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def gw(tmp_path: Path, wire: str) -> AsyncIterator[RunningGateway]:
    async with running_gateway(tmp_path, wire=wire) as gateway:  # type: ignore[arg-type]
        yield gateway


async def test_auth_welcome_ping_and_bad_frames(gw, connect) -> None:
    probe = await connect(gw)
    welcome = await probe.auth(gw.token("alice"))
    assert welcome["userId"] == "alice" and welcome["offset"] == 0
    await probe.send({"type": "ping", "id": "p1"})
    assert (await probe.recv())["id"] == "p1"
    await probe.send("{nope")
    assert (await probe.recv())["code"] == "bad_json"
    await probe.send(b"\x89PNG")
    assert (await probe.recv())["code"] == "binary_frame"
    await probe.send({"type": "auth", "id": "again", "token": gw.token("alice")})
    assert (await probe.recv())["code"] == "already_authenticated"


async def test_refused_token_closes_with_the_contracts_code(gw, connect) -> None:
    probe = await connect(gw)
    await probe.send({"type": "auth", "token": gw.token("alice") + "x"})
    (error,) = await probe.expect_close(4401)
    assert error["code"] == "token_signature_invalid"


async def test_frames_sent_right_after_auth_are_answered_after_welcome(gw, connect) -> None:
    probe = await connect(gw)
    await probe.ws.send('{"type":"auth","id":"a","token":"' + gw.token("alice") + '"}')
    await probe.ws.send('{"type":"ping","id":"p"}')
    assert (await probe.recv())["type"] == "welcome"
    assert (await probe.recv())["id"] == "p"


async def test_live_delivery_in_order_to_every_tab(gw, connect) -> None:
    tabs = [await connect(gw) for _ in range(2)]
    for tab in tabs:
        await tab.auth(gw.token("alice"))
    await gw.publish("alice", *[note(f"n{i}") for i in range(50)])
    for tab in tabs:
        assert [e["offset"] for e in await tab.events(50)] == list(range(1, 51))


async def test_resume_replays_then_goes_live(gw, connect) -> None:
    results = await gw.publish("alice", *[note(f"a{i}") for i in range(300)])
    probe = await connect(gw)
    welcome = await probe.auth(gw.token("alice"), resume={"epoch": results[0]["epoch"], "offset": 100})
    assert welcome["recovered"] is True and welcome["offset"] == 300
    await gw.publish("alice", note("live"))
    got = await probe.events(201)
    assert [e["offset"] for e in got] == list(range(101, 302))
    stale = await connect(gw)
    reset = await stale.auth(gw.token("alice"), resume={"epoch": "other", "offset": 3})
    assert reset["recovered"] is False


async def test_slow_reader_conflates_then_4001(tmp_path: Path, wire: str, connect) -> None:
    async with running_gateway(tmp_path, wire=wire, queue_max_bytes=40_000) as gw:  # type: ignore[arg-type]
        slow = await connect(gw)
        await slow.auth(gw.token("alice"))
        events: list[Any] = [("alice", http.GenerationProgressInput(generation_id="g", fraction=i / 100))
                             for i in range(100)]
        await gw.gateway.publisher.publish(events)
        (last,) = await slow.events(1)
        assert last["offset"] == 100 and sorted(last["supersedes"]) == list(range(1, 100))
        await gw.gateway.publisher.publish([("alice", http.NotificationInput(level="info", message="x" * 500))
                                            for _ in range(200)])
        await slow.expect_close(4001)


async def test_graceful_drain_flushes_then_4000(gw, connect) -> None:
    probes = [await connect(gw) for _ in range(2)]
    for p in probes:
        await p.auth(gw.token("alice"))
    await gw.publish("alice", *[note(str(i)) for i in range(20)])
    await gw.gateway.drain(5.0)
    for p in probes:
        frames = await p.expect_close(4000)
        assert [f["offset"] for f in frames if "offset" in f] == list(range(1, 21))
    assert not gw.gateway.connections


async def test_origin_allow_list(tmp_path: Path, wire: str, connect) -> None:
    async with running_gateway(tmp_path, wire=wire, allowed_origins=("https://app.example",)) as gw:  # type: ignore[arg-type]
        ok = await connect(gw, origin="https://app.example")
        await ok.auth(gw.token("alice"))
        refused = await connect(gw, origin="https://evil.example")
        (error,) = await refused.expect_close(4403)
        assert error["code"] == "origin_not_allowed"


async def test_a_client_that_vanishes_leaves_the_hub(gw, connect) -> None:
    probe = await connect(gw)
    await probe.auth(gw.token("alice"))
    assert gw.gateway.hub.count("alice") == 1
    probe.ws.transport.abort()
    async with asyncio.timeout(5):
        while gw.gateway.connections or gw.gateway.hub.count("alice"):
            await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=gw.http_url) as client:
        assert "livegate_connections 0.0" in (await client.get("/metrics")).text
