"""A real webhook endpoint on loopback, for tests: records every request and answers as told.

::

    receiver = WebhookReceiver()
    url = await receiver.start()          # http://127.0.0.1:<port>/hook
    receiver.fail_next(2)                 # the next 2 requests get a 500
    requests = await receiver.wait_for(3) # once 3 requests arrived (bounded by a timeout)

``mode`` changes every answer: ``"ok"`` (204), ``"fail"`` (500), ``"redirect"`` (302 to
``redirect_to``), ``"huge"`` (200 with ``huge_bytes`` of body), ``"slow"`` (200 whose body
trickles a byte every ``slow_interval`` seconds, for ``slow_bytes`` bytes). The receiver
verifies nothing itself: tests verify signatures with the ``standardwebhooks`` library.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from livegate.testing._server import BackgroundServer

__all__ = ["ReceivedRequest", "WebhookReceiver"]


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        async def app(scope: Any, receive: Any, send: Any) -> None:  # (uvicorn takes a bound method for ASGI 2)
            await self._app(scope, receive, send)

        self._server = BackgroundServer(app, host=host, port=port)
        self.requests: list[ReceivedRequest] = []
        self.mode = "ok"
        self.failures_left = 0
        self.redirect_to = "http://127.0.0.1:9/elsewhere"
        self.huge_bytes = 1024 * 1024
        self.slow_interval = 0.2
        self.slow_bytes = 100
        self._changed = asyncio.Event()

    @property
    def port(self) -> int:
        assert self._server.port is not None
        return self._server.port

    @property
    def url(self) -> str:
        return f"{self._server.base_url}/hook"

    async def start(self) -> str:
        await self._server.start()
        return self.url

    async def stop(self) -> None:
        await self._server.stop()

    def fail_next(self, count: int) -> None:
        """Answer the next ``count`` requests with 500, whatever the mode."""
        self.failures_left = count

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedRequest]:
        """The requests so far, once there are at least ``count``."""
        async with asyncio.timeout(timeout):
            while len(self.requests) < count:
                changed = self._changed
                await changed.wait()
        return list(self.requests)

    async def _app(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        self.requests.append(ReceivedRequest(scope["method"], scope["path"], headers, body))
        self._changed.set()
        self._changed = asyncio.Event()
        mode = self.mode
        if self.failures_left > 0:
            self.failures_left -= 1
            mode = "fail"
        if mode == "ok":
            await _answer(send, 204, b"")
        elif mode == "fail":
            await _answer(send, 500, b"receiver told to fail")
        elif mode == "redirect":
            await _answer(send, 302, b"", [(b"location", self.redirect_to.encode())])
        elif mode == "huge":
            await _answer(send, 200, b"x" * self.huge_bytes)
        elif mode == "slow":
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", str(self.slow_bytes).encode())]})
            for _ in range(self.slow_bytes):
                await asyncio.sleep(self.slow_interval)  # the trickle itself is what is tested
                await send({"type": "http.response.body", "body": b"x", "more_body": True})
            await send({"type": "http.response.body", "body": b""})


async def _answer(send: Any, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})
