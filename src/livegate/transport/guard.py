"""Connection limits in front of uvicorn's HTTP protocol: timeouts, header bounds, a cap.

uvicorn's public ``http=`` option takes an :class:`asyncio.Protocol` class. :func:`guarded_http`
makes one that wraps uvicorn's own public protocol class (``HttpToolsProtocol``) and forwards
every :class:`asyncio.Protocol` call to it; nothing of uvicorn is subclassed or reached into.
A wrapper is needed because uvicorn (0.55) has no bound for what it does before a request
reaches the app: no header timeout (its keep-alive timer stops at the first byte), no
header-size or header-count limit with httptools (which buffers a header line of any size),
and ``limit_concurrency`` answers only after a whole request head was read and does not count
WebSockets once upgraded. What the wrapper bounds, per TCP connection (``LIVEGATE_*`` in
README.md, defaults in docs/scaling.md "Connection limits"):

* **idle before the first byte** (``idle_timeout``): a connection that has not begun a request
  is closed without an answer, as nginx and HAProxy (``http-ignore-probes``) do; so is one
  that, after a request, sends bytes that begin none (CRLFs stop uvicorn's keep-alive timer);
* **the request head** (``header_timeout``, a deadline from its first byte): an unfinished head
  is answered ``408 request_timeout`` (first request of the connection) and closed;
* **its size and header count** (``max_header_bytes``, ``max_headers``): ``431 headers_too_large``;
* **the body** (``body_timeout``, between two reads, as nginx's ``client_body_timeout``): a
  stalled body closes the connection (the app sees ``http.disconnect``);
* **connections per process** (``max_connections``, WebSockets included): a connection above
  the cap is refused once its head is read: ``503 server_busy`` for HTTP, and a WebSocket is
  accepted then closed with 1013 "try again later" (asyncapi.yaml ``x-transport-close-codes``),
  so a browser sees a code rather than a failed handshake. Refused connections are themselves
  bounded (as many again); beyond that they are dropped at once.

To follow the request boundaries it parses the request heads a second time with httptools
(the parser uvicorn uses): 3-10 us per request (``bench/guard_probe.py``, bench/README.md). After
an upgrade the connection's protocol is the WebSocket one (:mod:`livegate.transport.native`);
the wrapper puts itself back in front of it (``transport.set_protocol``) only to forward and to
count the connection until it is lost. A timer that fires while the transport is not reading
(uvicorn paused it: pipelining, a body the app has not consumed) is re-armed: the peer is not
the one stalling.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import httptools

from livegate.transport.timer import OneTimer

__all__ = ["Capacity", "GuardedHttp", "TransportLimits", "guarded_http", "problem_response"]

#: Seconds a refused or answered connection is still read (and the bytes dropped) after the
#: answer, so the peer reads the answer instead of a reset (nginx's lingering close).
LINGER_SECONDS = 2.0

# _PASS: upgraded or unparseable (uvicorn has it); _DROP: answered here, the bytes are dropped
_IDLE, _HEAD, _BODY, _BETWEEN, _PASS, _DROP = range(6)


@dataclass(frozen=True)
class TransportLimits:
    idle_timeout: float = 10.0
    header_timeout: float = 10.0
    body_timeout: float = 10.0
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    max_connections: int = 50_000


class Capacity:
    """The connections of one server: ``open`` ones served, ``refusing`` ones being answered."""

    __slots__ = ("limit", "open", "refusing")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self.refusing = 0


_STATUS_TITLES = {408: "Request Timeout", 431: "Request Header Fields Too Large", 503: "Service Unavailable"}


def problem_response(status: int, code: str, detail: str, *, retry_after: int | None = None) -> bytes:
    """A complete HTTP/1.1 response with an RFC 9457 problem (openapi.yaml ``Problem``) that
    closes the connection."""
    title = _STATUS_TITLES[status]
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "code": code,
                       "detail": detail}).encode()
    head = [f"HTTP/1.1 {status} {title}", "content-type: application/problem+json",
            f"content-length: {len(body)}", "connection: close"]
    if retry_after is not None:
        head.append(f"retry-after: {retry_after}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class GuardedHttp(OneTimer, asyncio.Protocol):
    """One TCP connection: the limits above, in front of uvicorn's protocol (``inner``).
    Subclassed per server by :func:`guarded_http`."""

    limits: TransportLimits
    capacity: Capacity
    inner_class: Callable[..., asyncio.Protocol]
    ws_class: Callable[[], asyncio.Protocol]

    __slots__ = (
        "_args",
        "_count",
        "_due",
        "_head",
        "_head_bytes",
        "_head_size",
        "_inner",
        "_parser",
        "_phase",
        "_requests",
        "_slot",
        "_timer",
        "_too_large",
        "_transport",
        "_upgrade",
        "_ws",
    )

    def __init__(self, **server_args: Any) -> None:
        self._args = server_args  # uvicorn's config and server state, for the inner protocol
        self._inner: asyncio.Protocol | None = None
        self._ws: asyncio.Protocol | None = None  # the protocol this connection was upgraded to
        self._transport: asyncio.Transport | None = None
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self._phase = _IDLE
        self._slot = ""  # "open" or "refusing": which count of the capacity holds this connection
        self._timer: asyncio.TimerHandle | None = None
        self._head: bytearray | None = None  # a refused connection's head (for the WebSocket refusal)
        self._head_bytes = self._head_size = self._count = self._requests = 0
        self._too_large = self._upgrade = False
        self._due = 0.0  # when the bound of the current phase falls due (loop time)

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast("asyncio.Transport", transport)
        capacity = self.capacity
        if capacity.open < capacity.limit:
            capacity.open += 1
            self._slot = "open"
            self._inner = self.inner_class(**self._args)
            self._inner.connection_made(transport)
        elif capacity.refusing < capacity.limit:
            capacity.refusing += 1
            self._slot = "refusing"
            self._head = bytearray()
        else:  # far above the cap: no answer (an fd-exhaustion attempt)
            transport.abort()
            return
        self._due_in(self.limits.idle_timeout)

    def data_received(self, data: bytes) -> None:
        ws = self._ws
        if ws is not None:
            ws.data_received(data)
            return
        phase = self._phase
        if phase == _DROP or (phase != _PASS and not self._track(data)):
            return
        inner = self._inner
        if inner is None:
            return  # refused, or answered: the bytes are dropped
        inner.data_received(data)
        transport = self._transport
        if transport is not None and transport.get_protocol() is not self:  # uvicorn upgraded it
            self._ws = cast("asyncio.Protocol", transport.get_protocol())
            transport.set_protocol(self)
            self._cancel_timer()
            # uvicorn's protocol and the parser are done with: not kept for the socket's life.
            self._inner = self._parser = None
        elif self._upgrade and phase != _PASS and self._phase == _PASS and transport is not None:
            # An upgrade uvicorn does not take (not `websocket`): it answers the request, and
            # parses nothing after it, so nothing useful can follow; bound what is left.
            self._phase = _DROP
            self._arm(self.limits.idle_timeout, transport.close)

    def eof_received(self) -> bool | None:
        target = self._ws or self._inner
        return target.eof_received() if target is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        if self._slot:
            capacity = self.capacity
            if self._slot == "open":
                capacity.open -= 1
            else:
                capacity.refusing -= 1
            self._slot = ""
        target = self._ws or self._inner
        if target is not None:
            target.connection_lost(exc)

    def pause_writing(self) -> None:
        target = self._ws or self._inner
        if target is not None:
            target.pause_writing()

    def resume_writing(self) -> None:
        target = self._ws or self._inner
        if target is not None:
            target.resume_writing()

    # -- httptools callbacks (the second parse) -------------------------------------------

    def on_message_begin(self) -> None:
        self._phase = _HEAD
        self._head_size = self._count = 0
        self._due_in(self.limits.header_timeout)

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count += 1
        self._head_size += len(name) + len(value) + 4
        if self._count > self.limits.max_headers or self._head_size > self.limits.max_header_bytes:
            self._too_large = True

    def on_headers_complete(self) -> None:
        self._phase = _BODY
        self._upgrade = self._parser is not None and self._parser.should_upgrade()
        self._due_in(self.limits.body_timeout)

    def on_message_complete(self) -> None:
        # uvicorn's keep-alive timeout bounds the wait for the next one; the pending check
        # (if any) finds nothing to do.
        self._phase = _BETWEEN
        self._head_bytes = 0
        self._requests += 1

    # -- internals ------------------------------------------------------------------------

    def _track(self, data: bytes) -> bool:
        """Feed the second parser; ``False`` when the bytes must not reach uvicorn."""
        first = self._requests == 0  # no earlier request was passed on: an answer cannot interleave
        between = self._phase == _BETWEEN
        if self._phase == _BODY:  # the body's bound is between two reads
            self._due = asyncio.get_running_loop().time() + self.limits.body_timeout
        else:  # a head (or the idle before one): its bytes count against max_header_bytes
            self._head_bytes += len(data)
        if self._head is not None:
            self._head += data
        parser = self._parser
        if parser is None:
            return True
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade = True
            self._phase = _PASS
        except httptools.HttpParserError:
            self._phase = _PASS  # uvicorn answers 400 itself
            if self._head is not None:  # refused: nobody answers it
                self._finish()
                return False
        limits = self.limits
        if between and self._phase == _BETWEEN:
            # Bytes that begin no request (llhttp skips CRLFs between requests) would stop
            # uvicorn's keep-alive timer for ever: they get the idle bound instead.
            self._phase = _IDLE
            self._due_in(limits.idle_timeout)
        if self._too_large or (self._phase == _HEAD and self._head_bytes > limits.max_header_bytes):
            self._answer(431, "headers_too_large", f"The request head exceeds {limits.max_header_bytes} bytes "
                         f"or {limits.max_headers} header fields", first=first)
            return False
        if self._head is not None and self._phase in (_BODY, _BETWEEN, _PASS):
            self._refuse(first)
            return False
        return True

    def _refuse(self, first: bool) -> None:
        """Above the cap: 503 for HTTP; a WebSocket is accepted and closed with 1013."""
        if self._upgrade and self._transport is not None:
            self._phase = _PASS
            self._cancel_timer()
            ws = self._ws = self.ws_class()
            ws.connection_made(self._transport)
            refuse = getattr(ws, "refuse", None)
            if refuse is not None:
                refuse(1013, "try again later")
            ws.data_received(bytes(self._head or b""))
            self._head = self._parser = None
            return
        self._answer(503, "server_busy", "The server is at its connection limit; retry later", first=first,
                     retry_after=1)

    def _answer(self, status: int, code: str, detail: str, *, first: bool, retry_after: int | None = None) -> None:
        """Write a problem (only if no request of this connection was passed on before, which
        uvicorn may still be answering) and close, lingering."""
        transport = self._transport
        if transport is None or transport.is_closing():
            self._phase = _DROP
            return
        if first:
            transport.write(problem_response(status, code, detail, retry_after=retry_after))
        self._finish()

    def _finish(self) -> None:
        """Drop what the peer still sends (uvicorn must not start on it), end our side, and
        close after :data:`LINGER_SECONDS` or the peer's own close."""
        transport = self._transport
        self._phase = _DROP
        self._head = None
        if transport is None or transport.is_closing():
            return
        if transport.can_write_eof():
            transport.write_eof()
        self._arm(LINGER_SECONDS, self._linger_done)

    def _linger_done(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is not None:  # a peer that does not read its answer does not hold the socket
            transport.abort() if transport.get_write_buffer_size() else transport.close()

    def _due_in(self, seconds: float) -> None:
        """The current phase's bound is ``seconds`` from now. One timer per connection, moved
        only when it would fire too late: a fast request costs no timer operation (the
        pending check finds its bound moved and waits again)."""
        loop = asyncio.get_running_loop()
        due = self._due = loop.time() + seconds
        timer = self._timer
        if timer is None or timer.when() > due:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(due, self._check)

    def _check(self) -> None:
        self._timer = None
        transport, phase = self._transport, self._phase
        if transport is None or transport.is_closing() or phase in (_BETWEEN, _PASS, _DROP):
            return
        loop = asyncio.get_running_loop()
        if loop.time() < self._due:
            self._timer = loop.call_at(self._due, self._check)
            return
        if phase == _IDLE:  # no request begun: closed without an answer
            transport.close()
            return
        if not self._reading():  # uvicorn paused reading: the peer is not the one stalling
            self._due_in(self.limits.header_timeout if phase == _HEAD else self.limits.body_timeout)
            return
        if phase == _HEAD:
            self._answer(408, "request_timeout",
                         f"The request head did not arrive within {self.limits.header_timeout} s",
                         first=self._requests == 0)
        else:  # a stalled body: the app owns this request's answer, it sees http.disconnect
            self._phase = _PASS
            transport.close()

    def _reading(self) -> bool:
        transport = self._transport
        return transport is not None and not transport.is_closing() and transport.is_reading()


def guarded_http(inner_class: Callable[..., asyncio.Protocol], ws_class: Callable[[], asyncio.Protocol],
                 limits: TransportLimits) -> type[GuardedHttp]:
    """The protocol class for uvicorn's ``http=`` option: ``inner_class`` (uvicorn's public
    ``HttpToolsProtocol``) behind ``limits``; ``ws_class`` answers refused WebSockets."""
    return type("LivegateHttp", (GuardedHttp,), {
        "__slots__": (), "limits": limits, "capacity": Capacity(limits.max_connections),
        "inner_class": inner_class, "ws_class": ws_class})
