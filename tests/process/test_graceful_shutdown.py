"""SIGTERM of a real ``livegate serve``: queues flushed, 4000 to every client, bounded time,
and no new session accepted while it drains."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from livegate.testing.process import GatewayProcess
from livegate.testing.spec_validation import assert_valid_message

GRACE = 3.0


async def _open(gw: GatewayProcess, user: str) -> Any:
    ws = await websockets.connect(gw.ws_url, compression=None, max_queue=None)
    await ws.send(json.dumps({"type": "auth", "token": gw.token(user)}))
    welcome = assert_valid_message(await asyncio.wait_for(ws.recv(), 5))
    assert welcome["type"] == "welcome", welcome
    return ws


async def _read_until_close(ws: Any, timeout: float) -> tuple[list[dict[str, Any]], int | None]:
    frames: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        try:
            while True:
                frames.append(assert_valid_message(await ws.recv()))
        except ConnectionClosed as exc:
            return frames, exc.rcvd.code if exc.rcvd else None


def _publish(gw: GatewayProcess, user: str, count: int, size: int = 200) -> None:
    with httpx.Client(base_url=gw.http_url, timeout=30,
                      headers={"Authorization": f"Bearer {gw.service_token}"}) as client:
        for start in range(0, count, 1000):
            events = [{"userId": user, "event": {"type": "notification", "level": "info",
                                                 "message": f"{i}:" + "x" * size}}
                      for i in range(start, min(count, start + 1000))]
            client.post("/v1/events", json={"events": events}).raise_for_status()


async def _attempt_session(gw: GatewayProcess) -> str:
    """Try to open a session now: 'refused' (TCP or handshake), 'closed 4000', or 'welcome'."""
    try:
        ws = await asyncio.wait_for(websockets.connect(gw.ws_url, compression=None, open_timeout=3), 5)
    except (OSError, InvalidHandshake, InvalidStatus, TimeoutError):
        return "refused"
    try:
        await ws.send(json.dumps({"type": "auth", "token": gw.token("newcomer")}))
        frames, code = await _read_until_close(ws, 5)
        if any(f["type"] == "welcome" for f in frames):
            return "welcome"
        return f"closed {code}"
    except (ConnectionClosed, OSError):
        return "refused"
    finally:
        await ws.close()


async def test_sigterm_flushes_queues_then_closes_4000_and_refuses_newcomers(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path, env={"LIVEGATE_SHUTDOWN_GRACE": str(GRACE),
                                       "LIVEGATE_QUEUE_MAX_BYTES": str(256 * 2**20)})
    await asyncio.to_thread(gw.start)
    try:
        readers = {user: [await _open(gw, user) for _ in range(2)] for user in ("alice", "bob", "carol")}
        # A client that stops reading keeps the drain open (its queue cannot be flushed): the
        # window in which newcomers must be refused, and the bound on the whole shutdown.
        deaf = await _open(gw, "deaf")
        deaf.transport.pause_reading()
        await asyncio.to_thread(_publish, gw, "deaf", 16_000, 500)
        for user in readers:
            await asyncio.to_thread(_publish, gw, user, 300)
        reading = {user: [asyncio.create_task(_read_until_close(ws, 30)) for ws in conns]
                   for user, conns in readers.items()}

        started = time.monotonic()
        stopping = asyncio.create_task(asyncio.to_thread(gw.terminate))
        # The drain has begun once a reader got its 4000 (the signal takes a moment to land).
        all_readers = [task for tasks in reading.values() for task in tasks]
        await asyncio.wait(all_readers, timeout=GRACE + 5, return_when=asyncio.FIRST_COMPLETED)
        attempts: list[str] = []
        while not stopping.done() and len(attempts) < 50:
            alive_before = gw.running()
            outcome = await _attempt_session(gw)
            if alive_before and gw.running():  # the attempt fell inside the drain
                attempts.append(outcome)
            await asyncio.sleep(0.05)
        status = await stopping
        elapsed = time.monotonic() - started

        assert attempts, "no connection attempt happened while the gateway drained"
        assert "welcome" not in attempts and set(attempts) <= {"refused", "closed 4000"}, attempts
        # Bounded: the drain grace, then uvicorn's graceful timeout (grace + 1 s) for the deaf
        # one; it exits by itself (uvicorn re-raises the SIGTERM it handled: status -15), not
        # by GatewayProcess's SIGKILL at stop_timeout.
        assert status in (0, -signal.SIGTERM), (status, gw.log_tail())
        assert elapsed < gw.stop_timeout, elapsed
        for user, tasks in reading.items():
            for task in tasks:
                frames, code = await task
                offsets = [f["offset"] for f in frames if "offset" in f]
                assert offsets == list(range(1, 301)), f"{user}: queued events were not all flushed"
                assert code == 4000, (user, code)
                assert frames[-1]["type"] == "error" and frames[-1]["code"] == "server_restart"
        deaf.transport.resume_reading()
        await deaf.close()
    finally:
        gw.kill()
