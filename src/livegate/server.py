"""Run the gateway under uvicorn in this process (``livegate serve``).

Shutdown order on SIGTERM/SIGINT: stop accepting, then close every WebSocket with 4000
(server restart) after flushing its queue, then let uvicorn finish HTTP requests and run
the lifespan shutdown. uvicorn alone would close WebSockets with 1012 before our app
could flush, hence :class:`GatewayServer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import struct
from typing import Any

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request
from websockets.protocol import Protocol, State
from websockets.server import ServerProtocol
from websockets.streams import StreamReader

from livegate.app import Gateway, create_app
from livegate.app.ws import SEND_TEXT_EXTENSION
from livegate.config import Config
from livegate.protocol.codes import CLOSE_CODES


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        await self.gateway.drain(self.gateway.config.shutdown_grace_seconds)
        await super().shutdown(sockets)


class _LeanEvent:
    """The part of :class:`asyncio.Event` uvicorn's protocol uses (``set``, ``clear``,
    ``is_set``, ``wait``) without the deque every Event holds (~600 bytes per connection):
    the waiters' list exists only while someone waits (a paused transport)."""

    __slots__ = ("_waiters", "value")

    def __init__(self) -> None:
        self.value = False  # read directly on the send path (no call per frame)
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self.value

    def set(self) -> None:
        self.value = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self.value = False

    async def wait(self) -> bool:
        if self.value:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
        return True


class _LeanQueue:
    """The part of an unbounded :class:`asyncio.Queue` uvicorn's protocol uses (``put_nowait``,
    ``get``, ``empty``) without the three deques and the Event each Queue holds (~3 KB per
    connection). A WebSocket's receive queue is short and read by one task."""

    __slots__ = ("_getters", "_items")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._getters: list[asyncio.Future[None]] = []

    def empty(self) -> bool:
        return not self._items

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        self._wake_next()

    async def get(self) -> Any:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                with contextlib.suppress(ValueError):
                    self._getters.remove(getter)
                if self._items:
                    self._wake_next()  # a cancelled getter passes its wake-up on, as asyncio.Queue does
                raise
        return self._items.pop(0)

    def _wake_next(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return


def unmasked_text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame without extensions (RFC 6455 section 5.2): what a server
    sends, byte for byte what ``websockets.frames.Frame(Opcode.TEXT, payload).serialize(
    mask=False, extensions=[])`` makes (tests/app/test_server_protocol.py checks it) in a fifth
    of the time, once per event on the fan-out path."""
    length = len(payload)
    if length < 126:
        return bytes((0x81, length)) + payload
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length) + payload
    return struct.pack("!BBQ", 0x81, 127, length) + payload


class _LastFrame:
    """The last text :meth:`HeartbeatClosingProtocol.send_text_now` framed, and its frame.

    An instance's attributes, not the protocol class's: assigning a class attribute (once per
    event) bumps the class's type version and un-specialises every attribute read on its
    instances, uvicorn's included (measured: that slow path was ~4% of the server's CPU)."""

    __slots__ = ("frame", "text")

    def __init__(self) -> None:
        self.text: str | None = None
        self.frame = b""


_LAST_FRAME = _LastFrame()


class HeartbeatClosingProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, closing a peer that misses the heartbeat with the
    contract's 4002 ``heartbeat_timeout`` (asyncapi.yaml ``x-close-codes``) instead of 1011,
    and offering the app a synchronous text send (the ``livegate.send_text`` ASGI extension).

    The transport owns WebSocket pings (browsers answer them without the page's help), so the
    timeout is noticed here, not in the session; everything else is uvicorn's.

    Memory per idle connection (bench/README.md): uvicorn's receive queue and ``writable``
    event are swapped for lean equivalents, its attributes live in slots, and the handshake's
    request and response (with their header objects) are dropped once the response is written.
    """

    # uvicorn 0.54's per-connection attributes: as slots, not in an instance dict of ~40 keys
    # (~1.5 KB per connection: too many keys for CPython's shared-key dicts). An attribute a
    # later uvicorn adds still works (in the instance dict, as before).
    __slots__ = (
        "app", "app_state", "asgi_version", "client", "close_sent", "close_timeout", "close_timer", "config",
        "conn", "connections", "curr_msg_data_type", "default_headers", "disconnected", "frames",
        "handshake_complete", "handshake_initiated", "initial_response", "last_ping_rtt", "logger", "loop",
        "pending_ping_payload", "ping_interval", "ping_sent_at", "ping_timeout", "ping_timer", "pong_timer",
        "queue", "read_paused", "request", "response", "root_path", "scheme", "scope", "server", "tasks",
        "transport", "writable",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _LeanQueue()  # type: ignore[assignment]
        self.writable = _LeanEvent()  # type: ignore[assignment]
        self.writable.set()

    def start_keepalive(self) -> None:
        # Called once, right after uvicorn wrote the handshake's response (websocket.accept):
        # neither the request nor the response is read again (the scope has its own headers).
        self.request = self.response = None  # type: ignore[assignment]
        self._drop_handshake_parser()
        super().start_keepalive()

    def _drop_handshake_parser(self) -> None:
        """websockets' ``ServerProtocol.parse()`` reads the handshake request, then ends in
        ``yield from Protocol.parse(self)`` (frames) for the connection's lifetime: its suspended
        frame keeps the request and its headers alive (~1.7 KB per connection, bench/README.md).

        Between two frames (the frame parser waits in ``reader.at_eof()`` on an empty buffer)
        a fresh ``Protocol.parse`` generator is the same parser: its loop keeps no state across
        frames but the protocol's attributes. Dropping the old chain closes it (GeneratorExit
        is caught nowhere in it). Mid-frame, or on any other shape, nothing is changed."""
        conn = self.conn
        outer = conn.parser
        inner = getattr(outer, "gi_yieldfrom", None)
        waiting = getattr(inner, "gi_yieldfrom", None)
        if (getattr(outer, "gi_code", None) is ServerProtocol.parse.__code__
                and getattr(inner, "gi_code", None) is Protocol.parse.__code__
                and getattr(waiting, "gi_code", None) is StreamReader.at_eof.__code__
                and not conn.reader.buffer and not conn.reader.eof):
            conn.parser = Protocol.parse(conn)
            next(conn.parser)  # start it: it stops in reader.at_eof(), as the old one was

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # uvicorn built the scope and created the app's task, which has not run yet.
        if self.response.status_code == 101:
            self.scope["extensions"][SEND_TEXT_EXTENSION] = {"send": self.send_text_now}

    def send_text_now(self, text: str) -> bool:
        """Frame ``text`` and write it to the transport now, if the connection can take it as
        uvicorn's ``websocket.send`` would without waiting; else return ``False`` (the caller
        then sends through ASGI). This skips, per frame, the awaits of Litestar's and uvicorn's
        ``send`` and the writer task's wake-up: the fan-out's largest cost (bench/README.md).

        "Without waiting" is uvicorn's own flow control: the handshake is done, no close was
        sent or received, the peer is connected and the transport is under its high-water mark.
        Never raises: it runs inside the bus's fan-out to every listener."""
        conn = self.conn
        if (self.close_sent or self.disconnected or not self.handshake_complete or self.initial_response
                is not None or conn.state is not State.OPEN
                or not self.writable.value  # type: ignore[attr-defined]  # our _LeanEvent: no call per frame
                or self.transport.is_closing()):
            return False
        if conn.extensions or conn.writes or conn.expect_continuation_frame or conn.debug:
            # permessage-deflate (per-connection compressor state), or anything unusual: as uvicorn.
            conn.send_text(text.encode())
            self.transport.write(b"".join(conn.data_to_send()))
            return True
        # Plain frames are the same bytes for every connection, and every recipient of an event
        # is handed the same str (the bus encodes it once): frame it once per event.
        last = _LAST_FRAME
        if last.text is not text:
            last.frame = unmasked_text_frame(text.encode())
            last.text = text
        self.transport.write(last.frame)
        return True

    def keepalive_timeout(self) -> None:
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        self.conn.fail(CLOSE_CODES["heartbeat_timeout"], "heartbeat timeout")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()


def uvicorn_config(config: Config, app: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=config.host,
        port=config.port,
        ws=HeartbeatClosingProtocol,
        ws_ping_interval=config.heartbeat_interval_seconds,
        ws_ping_timeout=config.heartbeat_timeout_seconds,
        # Our limit answers with `frame_too_large` + 4400; the transport's (4x) is a backstop (1009).
        ws_max_size=config.max_frame_bytes * 4,
        ws_per_message_deflate=config.permessage_deflate,
        timeout_graceful_shutdown=int(config.shutdown_grace_seconds) + 1,
        lifespan="on",
        log_level=config.log_level.lower(),
        access_log=False,
        server_header=False,
    )


def tune_gc() -> None:
    """Garbage-collector policy for a serving process (measured in bench/README.md).

    Everything built so far (modules, the app, the specs) lives as long as the process:
    freeze it so full collections walk only live traffic. Under load, events in flight
    outlive young collections and made a full collection (~100 ms) run every second or so;
    collect the young generations less often and the old one rarely (cycles among young
    objects are still found by the young collections)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


def serve(config: Config) -> None:
    gateway = Gateway(config)
    app = create_app(gateway=gateway)
    tune_gc()
    GatewayServer(uvicorn_config(config, app), gateway).run()
