"""The ASGI wire: the same :class:`~livegate.transport.wire.Wire` over Litestar's
``WebSocket``, for any ASGI server and for test clients (Litestar's ``TestClient``).

ASGI's ``send`` is a coroutine, so :meth:`AsgiWire.write` appends to a list that one sender
task drains (made on first need, gone when idle); the wire is not ``writable`` while that
list holds :data:`HIGH_WATER` bytes or more and drained again at :data:`LOW_WATER`, as a
transport's write buffer would be. One reader loop turns ``websocket.receive`` events into
the endpoint's calls. Frame bytes, pings and the heartbeat are the ASGI server's here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from litestar import WebSocket
from litestar.exceptions import WebSocketDisconnect

from livegate.transport.wire import HIGH_WATER, LOW_WATER, Endpoint, PendingWrites


class AsgiWire(PendingWrites[str]):
    """Implements :class:`~livegate.transport.wire.Wire` over one accepted ASGI WebSocket."""

    __slots__ = ("_close", "_sender", "_socket", "_wake")

    def __init__(self, socket: WebSocket[Any, Any, Any]) -> None:
        super().__init__()
        self._socket = socket
        self._close: tuple[int, str] | None = None
        self._sender: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None

    # -- Wire -----------------------------------------------------------------------------

    def write(self, text: str) -> None:
        if self._close is not None or self._done:
            return
        self._push(text)
        self._kick()

    def close(self, code: int, reason: str) -> None:
        if self._close is None and not self._done:
            self._close = (code, reason)
            self._kick()

    # -- the two loops --------------------------------------------------------------------

    async def run(self, make_endpoint: Callable[[AsgiWire], Endpoint]) -> None:
        """Accept, serve until either side closes, then tell the endpoint (once)."""
        socket = self._socket
        await socket.accept()
        endpoint = self.endpoint = make_endpoint(self)
        endpoint.open()
        try:
            while not self._done:
                event = await socket.receive()
                if event["type"] != "websocket.receive":
                    break
                text = event.get("text")
                if text is not None:
                    endpoint.text_received(text)
                else:
                    endpoint.binary_received(len(event.get("bytes") or b""))
        except WebSocketDisconnect:
            pass
        finally:
            self._done = True
            sender = self._sender
            if sender is not None:
                if self._close is not None:
                    # The close was decided: let the sender finish (bounded by the endpoint's
                    # own flush bound; this one is a backstop).
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(asyncio.shield(sender), 10.0)
                sender.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sender
            self.endpoint = None
            endpoint.connection_lost()

    def _kick(self) -> None:
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._send_loop())
            return
        waiting = self._wake
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    async def _send_loop(self) -> None:
        socket = self._socket
        try:
            while True:
                if self._pending:
                    pending, self._pending = self._pending, []
                    for text in pending:
                        await socket.send({"type": "websocket.send", "text": text, "bytes": None})
                        self._taken(len(text))
                    continue
                if self._close is not None:
                    code, reason = self._close
                    with contextlib.suppress(Exception):
                        await socket.close(code=code, reason=reason)
                    self._done = True
                    return
                self._wake = asyncio.get_running_loop().create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
        except Exception:
            self._done = True  # the peer is gone; the reader ends and tells the endpoint


async def serve_asgi(socket: WebSocket[Any, Any, Any], make_endpoint: Callable[[AsgiWire], Endpoint]) -> None:
    """Serve one ASGI WebSocket with the endpoint ``make_endpoint`` builds for it."""
    await AsgiWire(socket).run(make_endpoint)


__all__ = ["HIGH_WATER", "LOW_WATER", "AsgiWire", "serve_asgi"]
