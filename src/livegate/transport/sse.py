"""The SSE wire: the endpoint's :class:`~livegate.transport.wire.Wire` over one ASGI HTTP
response of ``text/event-stream`` (asyncapi.yaml ``sseStream``; framing in
:mod:`livegate.protocol.sse`).

Only ASGI's public messages are used (``http.response.start`` / ``http.response.body`` with
``more_body``, ``http.disconnect``), so any ASGI server carries it. What belongs here:

* **Framing and flushing**: :meth:`SseWire.write` frames the JSON text as an SSE event and
  one sender task hands what is pending to ``send`` (one body message per turn, which the
  server writes and flushes at once: HTTP/1.1 chunked). Nothing is compressed.
* **Flow control**: ASGI's ``send`` waits while the server's transport is paused, so the
  bytes not yet handed over pile up here; the wire is not ``writable`` from
  :data:`HIGH_WATER` bytes and drained again at :data:`LOW_WATER`, as the native wire's
  transport buffer is, and the endpoint's slow-consumer rules apply unchanged.
* **Keepalive**: a comment line every ``keepalive_interval`` (one loop timer).
* **Closing**: :meth:`SseWire.close` queues the ``close`` event after everything written
  before it and ends the response; if the peer does not take it within
  :data:`CLOSE_TIMEOUT` the response is abandoned (the server drops the connection).
* **The peer leaving**: ``http.disconnect`` (or the response ending) calls
  :meth:`Endpoint.connection_lost`, once.

There is nothing to receive on this wire: client messages arrive by ``POST`` and are handed
to the endpoint by the app (:mod:`livegate.app.sse`), as ``text_received``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from livegate.protocol import sse
from livegate.transport.wire import HIGH_WATER, LOW_WATER, Endpoint, PendingWrites

#: Seconds the peer has to take the ``close`` event (and what was queued before it).
CLOSE_TIMEOUT = 10.0

Send = Callable[[Any], Awaitable[None]]  # ASGI's send and receive
Receive = Callable[[], Awaitable[Any]]


class SseWire(PendingWrites[bytes]):
    """Implements :class:`~livegate.transport.wire.Wire` over one ASGI streaming response."""

    __slots__ = ("_close", "_close_timer", "_keepalive", "_keepalive_interval", "_receive", "_retry_ms", "_send",
                 "_sender", "_wake")

    def __init__(self, send: Send, receive: Receive, *, retry_ms: int, keepalive_interval: float) -> None:
        super().__init__()
        self._send = send
        self._receive = receive
        self._retry_ms = retry_ms
        self._keepalive_interval = keepalive_interval
        self._close: bytes | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._keepalive: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None

    # -- Wire -----------------------------------------------------------------------------

    def write(self, text: str) -> None:
        if self._close is not None or self._done:
            return
        self._queue(sse.event(text))

    def close(self, code: int, reason: str) -> None:
        if self._close is None and not self._done:
            self._close = sse.close_event(code, reason)
            self._wake.set()
            self._close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, self._abandon)

    # -- serving --------------------------------------------------------------------------

    async def run(self, headers: list[tuple[bytes, bytes]], make_endpoint: Callable[[SseWire], Endpoint]) -> None:
        """Start the response, serve the endpoint until either side ends it, tell the
        endpoint (once)."""
        # The endpoint exists before the headers go out: they name it (a client may POST to
        # it as soon as it has read them).
        endpoint = self.endpoint = make_endpoint(self)
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._send({"type": "http.response.start", "status": 200, "headers": headers})
            self._queue(sse.preamble(self._retry_ms))
            self._sender = loop.create_task(self._send_loop())
            tasks = [self._sender, loop.create_task(self._wait_disconnect())]
            self._arm_keepalive()
            endpoint.open()
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._done = True
            for timer in (self._keepalive, self._close_timer):
                if timer is not None:
                    timer.cancel()
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            self.endpoint = None
            endpoint.connection_lost()

    def _queue(self, chunk: bytes) -> None:
        self._push(chunk)
        self._wake.set()

    async def _send_loop(self) -> None:
        send, wake = self._send, self._wake
        while True:
            if self._pending:
                chunks, self._pending = self._pending, []
                body = b"".join(chunks)
                await send({"type": "http.response.body", "body": body, "more_body": True})
                self._taken(len(body))
                continue
            if self._close is not None:
                await send({"type": "http.response.body", "body": self._close, "more_body": False})
                return
            wake.clear()
            await wake.wait()

    def _abandon(self) -> None:
        """The peer did not take the close within :data:`CLOSE_TIMEOUT`: stop serving (the
        response ends unfinished; the server drops the connection)."""
        self._close_timer = None
        if self._sender is not None:
            self._sender.cancel()

    async def _wait_disconnect(self) -> None:
        receive = self._receive
        while (await receive())["type"] != "http.disconnect":
            pass  # the (empty) body of the GET

    def _arm_keepalive(self) -> None:
        if self._keepalive_interval > 0 and not self._done:
            self._keepalive = asyncio.get_running_loop().call_later(self._keepalive_interval, self._send_keepalive)

    def _send_keepalive(self) -> None:
        self._keepalive = None
        if self._close is None and not self._done:
            self._queue(sse.KEEPALIVE)
            self._arm_keepalive()


__all__ = ["CLOSE_TIMEOUT", "HIGH_WATER", "LOW_WATER", "SseWire"]
