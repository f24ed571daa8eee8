"""The native wire: an :class:`asyncio.Protocol` over websockets' public sans-I/O API.

uvicorn serves HTTP through Litestar and hands every WebSocket upgrade to the class given
as its public ``ws=`` option (``uvicorn.Config(ws=...)`` takes an ``asyncio.Protocol`` class:
it is instantiated with keyword arguments, given the transport with ``connection_made`` and
the upgrade request's bytes with ``data_received``). :func:`websocket_protocol` makes that
class; its instances speak RFC 6455 through ``websockets.server.ServerProtocol``
(``receive_data``, ``events_received``, ``accept``/``reject``, ``send_response``,
``send_text``, ``send_ping``, ``send_close``, ``fail``, ``data_to_send``,
``close_expected``) and nothing else of either library.

What belongs to this layer:

* **The handshake**: ``/v1/ws`` is accepted; any other path is 404.
* **Frames**: text messages are reassembled from fragments and decoded (invalid UTF-8 is
  1007); without extensions the server's text frames are written directly
  (:class:`~livegate.transport.frames.TextFrames`, framed once per event for all its
  recipients), with permessage-deflate through ``ServerProtocol.send_text``.
* **Heartbeat**: a ping every ``heartbeat_interval``; a peer that does not answer within
  ``heartbeat_timeout`` is failed with the contract's 4002 ``heartbeat_timeout``
  (asyncapi.yaml ``x-close-codes``). One loop timer per connection at a time.
* **Flow control**: ``pause_writing``/``resume_writing`` of the transport are the wire's
  ``writable`` and the endpoint's ``drained``; ``buffered`` is the transport's write buffer,
  whose high-water mark is ``write_buffer_bytes``. While it is above that mark the peer is
  not read either: the protocol answers every ping with a pong and echoes a close, so a
  peer that floods pings and never reads the pongs would otherwise grow the write buffer
  without bound (before or after ``auth``). Its bytes wait in the kernel instead, and the
  auth timeout or the heartbeat (whose pong is not read either) closes it.
* **Refusal** (:meth:`WebSocketProtocol.refuse`): above the connection cap
  (:mod:`livegate.transport.guard`) the handshake is accepted and the connection closed at
  once with 1013 "try again later", without an endpoint.
* **The closing handshake**, bounded by :data:`CLOSE_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from livegate.protocol.codes import CLOSE_CODES
from livegate.transport.frames import TextFrames
from livegate.transport.timer import OneTimer
from livegate.transport.wire import Endpoint

if TYPE_CHECKING:
    from livegate.transport.wire import Wire

#: Seconds the closing handshake may take before the TCP connection is dropped.
CLOSE_TIMEOUT = 10.0
#: The write buffer's high-water mark (asyncio's default); low water is a quarter of it.
WRITE_BUFFER_BYTES = 64 * 1024

# websockets logs "connection open" at INFO per connection; livegate logs its own sessions.
_ws_log = logging.getLogger("livegate.transport.websockets")
_ws_log.setLevel(logging.WARNING)
_ws_log.propagate = False

_TEXT, _BINARY, _CONT, _PONG = Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PONG
_OPEN = State.OPEN


class NativeOptions:
    """What every native connection of one server shares."""

    __slots__ = ("close_timeout", "endpoint", "extensions", "frames", "heartbeat_interval", "heartbeat_timeout",
                 "max_size", "path", "write_buffer_bytes")

    def __init__(self, endpoint: Callable[[Wire, Request], Endpoint], *, path: str = "/v1/ws",
                 heartbeat_interval: float | None = 25.0, heartbeat_timeout: float = 20.0,
                 max_size: int | None = 2**20, permessage_deflate: bool = False,
                 close_timeout: float = CLOSE_TIMEOUT, write_buffer_bytes: int = WRITE_BUFFER_BYTES) -> None:
        self.endpoint = endpoint
        self.write_buffer_bytes = write_buffer_bytes
        self.path = path
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.max_size = max_size
        self.close_timeout = close_timeout
        self.extensions: list[ServerExtensionFactory] = [
            # uvicorn's settings, kept so the negotiated parameters do not change.
            ServerPerMessageDeflateFactory(server_max_window_bits=12, client_max_window_bits=12,
                                           compress_settings={"memLevel": 5}),
        ] if permessage_deflate else []
        self.frames = TextFrames()


class WebSocketProtocol(OneTimer, asyncio.Protocol):
    """One WebSocket connection; implements :class:`~livegate.transport.wire.Wire` for its
    endpoint. Subclassed per server by :func:`websocket_protocol` (for its options)."""

    options: NativeOptions  # set on the subclass

    __slots__ = ("_endpoint", "_fragments", "_open", "_ping", "_plain", "_refusal", "_timer", "_transport", "conn",
                 "writable")

    def __init__(self, **_server_args: Any) -> None:
        # uvicorn passes its config and server state by keyword; nothing of it is needed.
        options = self.options
        self.conn = ServerProtocol(extensions=options.extensions, max_size=options.max_size, logger=_ws_log)
        self._transport: asyncio.Transport | None = None
        self._endpoint: Endpoint | None = None
        self._open = False  # handshake done, no close sent or received
        self._plain = False  # open and without extensions: frames are written directly
        self._fragments: list[Any] | None = None  # a fragmented message's parts; [0] is the opcode
        self._ping: bytes | None = None  # the unanswered ping's payload
        self._timer: asyncio.TimerHandle | None = None  # heartbeat, or the closing handshake's bound
        self._refusal: tuple[int, str] | None = None
        self.writable = True

    def refuse(self, code: int, reason: str) -> None:
        """Before the handshake: accept it, then close with ``code`` at once (no endpoint)."""
        self._refusal = (code, reason)

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast("asyncio.Transport", transport)
        high = self.options.write_buffer_bytes
        transport.set_write_buffer_limits(high=high, low=high // 4)

    def data_received(self, data: bytes) -> None:
        conn = self.conn
        conn.receive_data(data)
        for event in conn.events_received():
            if isinstance(event, Frame):
                self._frame_received(event)
            elif isinstance(event, Request):
                self._handshake(event)
        self._open = self._open and conn.state is _OPEN
        self._plain = self._plain and self._open
        self._send_pending()

    def eof_received(self) -> bool | None:
        self.conn.receive_eof()
        self._send_pending()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = self._plain = False
        self._cancel_timer()
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            endpoint.connection_lost()

    def pause_writing(self) -> None:
        self.writable = False
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()  # see "Flow control" above

    def resume_writing(self) -> None:
        self.writable = True
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.resume_reading()
        if self._endpoint is not None:
            self._endpoint.drained()

    # -- Wire -----------------------------------------------------------------------------

    def write(self, text: str) -> None:
        if self._plain:
            self._transport.write(self.options.frames.frame(text))  # type: ignore[union-attr]
        elif self._open:
            self.conn.send_text(text.encode())
            self._send_pending()

    def buffered(self) -> int:
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None and not transport.is_closing() else 0

    def close(self, code: int, reason: str) -> None:
        if not self._open:
            return
        self._open = self._plain = False
        self.conn.send_close(code, reason)
        self._send_pending()
        self._arm(self.options.close_timeout, self._close_timed_out)

    # -- internals ------------------------------------------------------------------------

    def _handshake(self, request: Request) -> None:
        conn = self.conn
        options = self.options
        if request.path.partition("?")[0] != options.path:
            conn.send_response(conn.reject(404, "Not Found\n"))
            return
        response = conn.accept(request)
        if response.status_code != 101:
            conn.send_response(response)
            return
        conn.send_response(response)
        self._open = True
        self._plain = not conn.extensions
        self._send_pending()  # the 101 goes out before anything the endpoint writes
        if self._refusal is not None:
            self.close(*self._refusal)
            return
        self._endpoint = options.endpoint(self, request)
        self._endpoint.open()
        if options.heartbeat_interval:
            self._arm(options.heartbeat_interval, self._send_ping)

    def _frame_received(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is _TEXT or opcode is _BINARY or opcode is _CONT:
            if opcode is _CONT:
                parts = self._fragments
                if parts is None:
                    return  # the protocol refuses a stray continuation itself
                parts.append(frame.data)
                if not frame.fin:
                    return
                self._fragments = None
                opcode = _TEXT if parts[0] == b"t" else _BINARY
                data = b"".join(parts[1:])
            elif not frame.fin:
                self._fragments = [b"t" if opcode is _TEXT else b"b", frame.data]
                return
            else:
                data = bytes(frame.data)
            endpoint = self._endpoint
            if endpoint is None or not self._open:
                return
            if opcode is _TEXT:
                try:
                    text = data.decode()
                except UnicodeDecodeError:
                    self.conn.fail(1007, "invalid UTF-8")
                    self._open = self._plain = False
                    return
                endpoint.text_received(text)
            else:
                endpoint.binary_received(len(data))
        elif opcode is _PONG and self._ping is not None and frame.data == self._ping:
            self._ping = None
            if self._open and self.options.heartbeat_interval:
                self._arm(self.options.heartbeat_interval, self._send_ping)
        # PING is answered and CLOSE echoed by the protocol itself (data_to_send).

    def _send_pending(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for data in self.conn.data_to_send():
            if data:
                transport.write(data)
            else:  # end of stream: a server closes the TCP connection (after what is buffered)
                self._cancel_timer()
                transport.close()
                if transport.get_write_buffer_size():  # a peer that does not read cannot hold it
                    self._arm(self.options.close_timeout, self._close_timed_out)
        if self.conn.close_expected() and self._timer is None and not transport.is_closing():
            self._arm(self.options.close_timeout, self._close_timed_out)

    def _send_ping(self) -> None:
        self._timer = None
        if not self._open:
            return
        self._ping = os.urandom(4)
        self.conn.send_ping(self._ping)
        self._send_pending()
        self._arm(self.options.heartbeat_timeout, self._heartbeat_timed_out)

    def _heartbeat_timed_out(self) -> None:
        self._timer = None
        if not self._open or self._ping is None:
            return
        self._open = self._plain = False
        self.conn.fail(CLOSE_CODES["heartbeat_timeout"], "heartbeat timeout")
        self._send_pending()

    def _close_timed_out(self) -> None:
        self._timer = None
        if self._transport is not None:
            self._transport.abort()


def websocket_protocol(options: NativeOptions) -> type[WebSocketProtocol]:
    """The protocol class for uvicorn's ``ws=`` option (or ``loop.create_server``), bound
    to ``options``."""
    return type("LivegateWebSocket", (WebSocketProtocol,), {"__slots__": (), "options": options})


__all__ = ["CLOSE_TIMEOUT", "WRITE_BUFFER_BYTES", "NativeOptions", "WebSocketProtocol", "websocket_protocol"]
