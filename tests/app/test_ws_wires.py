"""The endpoint's conformance suite, run over every wire (livegate.transport): the native one
(``livegate serve``), ASGI (the app's Litestar route on another server) and SSE (asyncapi.yaml
``sseStream``: the stream as ``text/event-stream``, client messages by POST), as the bus suite
runs over memory and Redis. The endpoint must not be able to tell which one carries it; where
the wire itself differs (SSE has no binary frame, and refuses a credential with a 401 before
the stream), the test says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from livegate.protocol import http
from livegate.testing.gateway import WIRES, RunningGateway, running_gateway
from livegate.testing.spec_validation import schema_errors
from livegate.testing.sse import SseRefused

from .conftest import Probe, SseProbe, note


@pytest.fixture(params=[*WIRES, "sse"])
def wire(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def served(wire: str) -> Any:
    """The ``running_gateway`` wire: SSE is served next to the native WebSocket."""
    return "native" if wire == "sse" else wire


@pytest.fixture
async def gw(tmp_path: Path, wire: str) -> AsyncIterator[RunningGateway]:
    async with running_gateway(tmp_path, wire=served(wire)) as gateway:
        yield gateway


@pytest.fixture
def connect(connect, wire: str):  # type: ignore[no-untyped-def]
    """conftest's WebSocket probe, or the SSE probe (same interface) for ``wire="sse"``."""
    opened: list[SseProbe] = []

    async def _connect(gw: RunningGateway, origin: str | None = None) -> Probe:
        if wire != "sse":
            return await connect(gw, **({"origin": origin} if origin else {}))  # type: ignore[no-any-return]
        probe = SseProbe(gw, origin)
        opened.append(probe)
        return probe

    yield _connect
    for probe in opened:
        asyncio.get_event_loop().create_task(probe.client.aclose())


async def test_auth_welcome_ping_and_bad_frames(gw, connect) -> None:
    probe = await connect(gw)
    welcome = await probe.auth(gw.token("alice"))
    assert welcome["userId"] == "alice" and welcome["offset"] == 0
    await probe.send({"type": "ping", "id": "p1"})
    assert (await probe.recv())["id"] == "p1"
    await probe.send("{nope")
    assert (await probe.recv())["code"] == "bad_json"
    await probe.send(b"\x89PNG")
    # SSE has no binary frames: the bytes POSTed are read as (not JSON) text
    assert (await probe.recv())["code"] == ("bad_json" if isinstance(probe, SseProbe) else "binary_frame")
    await probe.send({"type": "auth", "id": "again", "token": gw.token("alice")})
    assert (await probe.recv())["code"] == "already_authenticated"


async def test_refused_token_closes_with_the_contracts_code(gw, connect) -> None:
    probe = await connect(gw)
    if isinstance(probe, SseProbe):
        # The credential comes with the request: a refusal is a 401 problem, before any event.
        with pytest.raises(SseRefused) as refused:
            await probe.send({"type": "auth", "token": gw.token("alice") + "x"})
        assert refused.value.status == 401 and "token_signature_invalid" in refused.value.problem["detail"]
        assert_valid_problem(refused.value.problem)
        return
    await probe.send({"type": "auth", "token": gw.token("alice") + "x"})
    (error,) = await probe.expect_close(4401)
    assert error["code"] == "token_signature_invalid"


async def test_frames_sent_right_after_auth_are_answered_after_welcome(gw, connect) -> None:
    probe = await connect(gw)
    await probe.send_raw('{"type":"auth","id":"a","token":"' + gw.token("alice") + '"}')
    await probe.send_raw('{"type":"ping","id":"p"}')
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
    async with running_gateway(tmp_path, wire=served(wire), queue_max_bytes=40_000) as gw:
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
    async with running_gateway(tmp_path, wire=served(wire), allowed_origins=("https://app.example",)) as gw:
        ok = await connect(gw, origin="https://app.example")
        await ok.auth(gw.token("alice"))
        refused = await connect(gw, origin="https://evil.example")
        if isinstance(refused, SseProbe):  # the stream opens with its credential
            await refused.send({"type": "auth", "token": gw.token("alice")})
        (error,) = await refused.expect_close(4403)
        assert error["code"] == "origin_not_allowed"


def assert_valid_problem(problem: dict[str, Any]) -> None:
    assert schema_errors(problem, "Problem") == [], problem


async def test_a_client_that_vanishes_leaves_the_hub(gw, connect) -> None:
    probe = await connect(gw)
    await probe.auth(gw.token("alice"))
    assert gw.gateway.hub.count("alice") == 1
    await probe.abort()
    async with asyncio.timeout(5):
        while gw.gateway.connections or gw.gateway.hub.count("alice"):
            await asyncio.sleep(0.01)
    async with httpx.AsyncClient(base_url=gw.http_url) as client:
        assert "livegate_connections 0.0" in (await client.get("/metrics")).text
