"""A rewind no process witnessed (issue 14, docs/scaling.md "Rewinds"): the one machine
crashes, Redis (``appendfsync everysec``) comes back from an older AOF, and the gateway that
saw the lost writes restarts with it, so no process knows they were ever made. New publishes
then reach and pass the offset of a client that saw the lost events, before it resumes: its
offset alone looks fine. Its resume carries the timestamp of the event it holds there
(asyncapi.yaml ``StreamPosition.timestamp``), which the stream no longer holds: ``recovered:
false`` with a new epoch, never a replay that would skip the new events. A client that was
behind the lost writes resumes exactly, and is told the loss once it is proven (4006 with the
next event, then ``recovered: false``)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from livegate.testing.process import GatewayProcess
from livegate.testing.redis_server import RedisServer
from livegate.testing.spec_validation import assert_valid_message
from tests.bus._replica import copy_aof, restart_from
from tests.scale._support import (
    STARTUP_TIMEOUT,
    ResumingClient,
    notification,
    publish_ok,
    user_name,
)

pytestmark = pytest.mark.redis


async def _connect(gw: GatewayProcess, user: str, resume: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    ws = await websockets.connect(gw.ws_url, compression=None, open_timeout=5)
    auth: dict[str, Any] = {"type": "auth", "token": gw.token(user)}
    if resume is not None:
        auth["resume"] = resume
    await ws.send(json.dumps(auth))
    welcome = assert_valid_message(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome", welcome
    return ws, welcome


async def _events(ws: Any, count: int) -> list[dict[str, Any]]:
    frames = []
    async with asyncio.timeout(10):
        while len(frames) < count:
            frame = assert_valid_message(await ws.recv())
            if frame["type"] == "notification":
                frames.append(frame)
    return frames


async def _close_code(ws: Any, timeout: float) -> int | None:
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None


def _position(event: dict[str, Any]) -> dict[str, Any]:
    """What a client that received ``event`` resumes with."""
    return {"epoch": event["epoch"], "offset": event["offset"], "timestamp": event["timestamp"]}


async def _sse_welcome(gw: GatewayProcess, user: str, event: dict[str, Any]) -> dict[str, Any]:
    """``GET /v1/sse`` resuming after ``event`` (``Last-Event-ID`` + ``lastEventTimestamp``):
    its ``welcome``."""
    headers = {"Authorization": f"Bearer {gw.token(user)}", "Last-Event-ID": f"{event['epoch']}:{event['offset']}"}
    async with httpx.AsyncClient(timeout=10) as client, client.stream(
            "GET", f"{gw.http_url}/v1/sse", params={"lastEventTimestamp": event["timestamp"]}, headers=headers) as reply:
        assert reply.status_code == 200
        async for line in reply.aiter_lines():
            if line.startswith("data: ") and '"welcome"' in line:
                return assert_valid_message(line[6:])
    raise AssertionError("no welcome on the SSE stream")


@pytest.mark.parametrize("transport", ["ws", "sse", "python-client"])
async def test_a_client_that_saw_lost_events_written_over_gets_a_new_epoch(tmp_path: Path, transport: str) -> None:
    with RedisServer(appendonly=True) as redis:
        gw = GatewayProcess(tmp_path / "gw", env={"LIVEGATE_REDIS_URL": redis.url, "LIVEGATE_REDIS_SETTLE_SECONDS": "1"},
                            startup_timeout=STARTUP_TIMEOUT)
        await asyncio.to_thread(gw.start)
        user = user_name("unwitnessed")
        try:
            ws, _welcome = await _connect(gw, user)
            official = await ResumingClient(gw.ws_url, gw.token(user)).start()  # livegate.client
            await publish_ok(gw, [notification(user, f"kept #{i}") for i in range(2)])
            kept = await _events(ws, 2)
            copy = await copy_aof(redis)
            try:
                await publish_ok(gw, [notification(user, f"lost #{i}") for i in range(3)])
                lost = await _events(ws, 3)
                await ws.close()
                await official.wait_events(5)
                tracked = official.client.position  # what its cursor kept, timestamp included
                await official.close()
                assert tracked is not None and (tracked.offset, tracked.timestamp) == (5, lost[-1]["timestamp"])
                assert [e["offset"] for e in kept + lost] == [1, 2, 3, 4, 5]
                await asyncio.to_thread(gw.kill)  # the machine goes down: gateway and Redis
                await restart_from(redis, copy)
            finally:
                shutil.rmtree(copy, ignore_errors=True)
            await asyncio.to_thread(gw.start)
            epoch = kept[0]["epoch"]
            written = await publish_ok(gw, [notification(user, f"new #{i}") for i in range(4)])
            assert written == [(epoch, n) for n in (3, 4, 5, 6)]  # nobody alive could know

            # Behind the lost writes: its position is intact, it resumes exactly (the lost
            # events were never delivered to it and nobody can tell it yet).
            behind, welcome = await _connect(gw, user, resume=_position(kept[-1]))
            assert welcome["recovered"] is True and welcome["epoch"] == epoch
            replayed = await _events(behind, 4)
            assert [(e["offset"], e["message"]) for e in replayed] == [(3 + i, f"new #{i}") for i in range(4)]

            # Saw the lost event at offset 5: the stream holds another event there.
            if transport == "ws":
                saw, welcome = await _connect(gw, user, resume=_position(lost[-1]))
                await saw.close()
            elif transport == "sse":
                welcome = await _sse_welcome(gw, user, lost[-1])
            else:  # the official client, resuming from the position it tracked
                resumed = await ResumingClient(gw.ws_url, gw.token(user), resume=tracked).start()
                welcome = resumed.welcomes[0]
                await resumed.close()
            assert welcome["recovered"] is False and welcome["epoch"] != epoch and welcome["offset"] == 0
            # The proof voids the stream for every connection of the user: a live one learns
            # it with the next event (its process's subscriber sees the new epoch), 4006.
            await publish_ok(gw, [notification(user, "after")])
            assert await _close_code(behind, 10) == 4006
            _again, welcome = await _connect(gw, user, resume=_position(replayed[-1]))
            assert welcome["recovered"] is False
            await _again.close()
        finally:
            await asyncio.to_thread(gw.kill)
