"""A real gateway on 127.0.0.1 per test, and a WebSocket probe that checks every frame the
server sends against asyncapi.yaml with an independent validator (jsonschema)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from livegate.testing.gateway import RunningGateway, running_gateway
from livegate.testing.spec_validation import assert_valid_message


class Probe:
    """A raw protocol client for tests: sends what it is told, validates what it gets."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    async def send(self, payload: dict[str, Any] | str | bytes) -> None:
        if isinstance(payload, dict):
            assert_valid_message(payload, "client") if payload.get("type") in {"auth", "refresh", "ping", "cancel"} else None
            payload = json.dumps(payload)
        await self.ws.send(payload)

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(frame, str), "the server must send text frames"
        message = assert_valid_message(frame)
        self.received.append(message)
        return message

    async def recv_type(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.recv(timeout)
                if message["type"] == kind:
                    return message

    async def auth(self, token: str, resume: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        await self.send({"type": "auth", "id": "a1", "token": token, **({"resume": resume} if resume else {}), **extra})
        welcome = await self.recv()
        assert welcome["type"] == "welcome", welcome
        return welcome

    async def expect_close(self, code: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Read until the server closes; return the frames before the close."""
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            try:
                while True:
                    frames.append(await self.recv(timeout))
            except ConnectionClosed as exc:
                assert exc.rcvd is not None and exc.rcvd.code == code, (exc.rcvd, frames[-3:])
        return frames

    async def events(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        out = []
        async with asyncio.timeout(timeout):
            while len(out) < count:
                message = await self.recv(timeout)
                if "offset" in message and message["type"] != "welcome":
                    out.append(message)
        return out


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[RunningGateway]:
    async with running_gateway(tmp_path) as gw:
        yield gw


@pytest.fixture
def connect(gateway: RunningGateway):  # type: ignore[no-untyped-def]
    opened: list[Any] = []

    async def _connect(gw: RunningGateway | None = None, **kwargs: Any) -> Probe:
        # max_queue=None: a probe that closes with frames unread must not stall the close handshake
        # (websockets stops reading the socket, close frame included, once its queue is full)
        ws = await websockets.connect((gw or gateway).ws_url, compression=None, **{"max_queue": None, **kwargs})
        opened.append(ws)
        return Probe(ws)

    yield _connect
    for ws in opened:
        asyncio.get_event_loop().create_task(ws.close())


def note(text: str) -> dict[str, Any]:
    return {"type": "notification", "level": "info", "message": text}


def progress(gen: str, fraction: float) -> dict[str, Any]:
    return {"type": "generationProgress", "generationId": gen, "fraction": fraction}
