"""A real gateway on 127.0.0.1 per test, and a WebSocket probe that checks every frame the
server sends against asyncapi.yaml with an independent validator (jsonschema)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from livegate.testing.gateway import RunningGateway, running_gateway
from livegate.testing.spec_validation import assert_valid_message
from livegate.testing.sse import SseClient, assert_framing


class Probe:
    """A raw protocol client for tests: sends what it is told, validates what it gets."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.received: list[dict[str, Any]] = []

    async def send(self, payload: dict[str, Any] | str | bytes) -> None:
        if isinstance(payload, dict):
            assert_valid_message(payload, "client") if payload.get("type") in {"auth", "refresh", "ping"} else None
            payload = json.dumps(payload)
        await self.ws.send(payload)

    async def send_raw(self, text: str) -> None:
        await self.ws.send(text)

    async def abort(self) -> None:
        """Vanish without a closing handshake."""
        self.ws.transport.abort()

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

    #: What :meth:`recv` raises when the server closed (and how to read its code).
    closed_by: tuple[type[Exception], ...] = (ConnectionClosed,)

    def close_code(self, closed: Exception) -> int | None:
        assert isinstance(closed, ConnectionClosed)
        return closed.rcvd.code if closed.rcvd is not None else None

    async def after_close(self, timeout: float) -> None:
        """What must hold once the close was read (nothing more for a WebSocket)."""

    async def expect_close(self, code: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Read until the server closes; return the frames before the close."""
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            try:
                while True:
                    frames.append(await self.recv(timeout))
            except self.closed_by as closed:
                assert self.close_code(closed) == code, (closed, frames[-3:])
            await self.after_close(timeout)
        return frames

    async def events(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        out = []
        async with asyncio.timeout(timeout):
            while len(out) < count:
                message = await self.recv(timeout)
                if "offset" in message and message["type"] != "welcome":
                    out.append(message)
        return out


class SseClosed(Exception):
    def __init__(self, close: dict[str, Any]) -> None:
        super().__init__(close)
        self.close = close


class SseProbe(Probe):
    """The same probe over the SSE wire (asyncapi.yaml ``sseStream``): ``auth`` opens the
    stream (a ticket for its token, ``resume`` as ``Last-Event-ID``), every other message
    is POSTed to the connection; every event is checked against the ``x-sse`` framing and
    its data against asyncapi.yaml; ``event: close`` ends it like a close frame."""

    def __init__(self, gw: RunningGateway, origin: str | None = None) -> None:
        super().__init__(None)
        self.client = SseClient(gw.http_url)
        self.headers = {"Origin": origin} if origin else {}
        self.token: str | None = None

    async def send(self, payload: dict[str, Any] | str | bytes) -> None:
        message = payload
        if isinstance(payload, str):
            with contextlib.suppress(ValueError):
                message = json.loads(payload)
        if isinstance(message, dict) and message.get("type") == "auth" and self.client.response is None:
            assert_valid_message(message, "client")
            self.token = message["token"]
            resume = message.get("resume")
            await self.client.open(self.token, last_event_id=f"{resume['epoch']}:{resume['offset']}" if resume else None,
                                   headers=self.headers)
            return
        assert self.token is not None, "auth first"
        response = await self.client.post(payload, self.token)
        assert response.status_code == 202, response.text

    async def send_raw(self, text: str) -> None:
        await self.send(text)

    async def abort(self) -> None:
        await self.client.close_stream()

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        message = assert_framing(await self.client.next_event(timeout))
        assert_valid_message(message, "sse")
        if message["type"] == "close":
            raise SseClosed(message)
        self.received.append(message)
        return message

    closed_by = (SseClosed,)

    def close_code(self, closed: Exception) -> int | None:
        assert isinstance(closed, SseClosed)
        return int(closed.close["code"])

    async def after_close(self, timeout: float) -> None:
        """``event: close`` is the last thing on the stream: the response ends there."""
        with pytest.raises(EOFError):
            await self.client.next_event(timeout)


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
