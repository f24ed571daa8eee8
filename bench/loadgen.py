"""The load generator: many cheap WebSocket receivers and a keep-alive HTTP publisher.

The receivers are a hand-rolled client (an ``asyncio.Protocol`` that parses unmasked server
frames and sends zero-masked client frames) so that the load generator, which shares the
machine, costs a few microseconds per received frame instead of the ~20 us of a full client
library (:class:`SseClient` does the same for SSE streams). It speaks three dialects: livegate (asyncapi.yaml ``auth``/``welcome``), the floor
(same frames) and Engine.IO 4 / Socket.IO 5 over a WebSocket (``0{..}``, ``40{auth}``,
``42[..]``, ping ``2`` -> pong ``3``).

Every event carries ``@t=<publish wall time>`` in its ``message``: publish-to-receive latency
is ``receive time - that``, on the same clock (one process publishes and receives).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import time
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

MARKER = b"@t="


@dataclass
class Stats:
    delivered: int = 0
    record_latency: bool = False
    latencies: array = field(default_factory=lambda: array("d"))
    max_samples: int = 2_000_000
    closes: dict[int, int] = field(default_factory=dict)
    bytes_received: int = 0
    compressed: int = 0

    def reset(self) -> None:
        self.delivered = 0
        self.latencies = array("d")
        self.bytes_received = 0
        self.compressed = 0


class _Receiver(asyncio.Protocol):
    """What both receivers share: ``ready`` (authenticated) and ``closed`` (with the code)."""

    ready: asyncio.Future[None]
    closed: asyncio.Future[int]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(1006)
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc!r}"))


class WsClient(_Receiver):
    """One WebSocket connection. ``ready`` resolves once the server accepted ``auth``."""

    def __init__(self, stats: Stats, host: str, port: int, path: str, dialect: str, token: str,
                 loop: asyncio.AbstractEventLoop, deflate: bool = False) -> None:
        self.stats = stats
        self.deflate = deflate
        self._inflate = zlib.decompressobj(-15) if deflate else None
        self.host, self.port, self.path = host, port, path
        self.dialect = dialect
        self.token = token
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._upgraded = False

    # -- transport ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
        if self.deflate:
            request += "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        request += "\r\n"
        transport.write(request.encode())  # type: ignore[attr-defined]


    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        self.stats.bytes_received += len(data)
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(buf[:end]).split(b"\r\n", 1)[0]
            if b" 101 " not in status:
                self.transport.close()  # type: ignore[union-attr]
                return
            del buf[: end + 4]
            self._upgraded = True
            if self.dialect != "socketio":
                self.send_text(json.dumps({"type": "auth", "id": "a1", "token": self.token}))
        pos = 0
        size = len(buf)
        now = 0.0
        while size - pos >= 2:
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            head = 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 4], "big")
                head = 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2:pos + 10], "big")
                head = 10
            if size - pos < head + length:
                break
            b0 = buf[pos]
            opcode = b0 & 0x0F
            payload = bytes(buf[pos + head:pos + head + length])
            pos += head + length
            if b0 & 0x40 and self._inflate is not None:  # RSV1: a permessage-deflate message
                payload = self._inflate.decompress(payload + b"\x00\x00\xff\xff")
                self.stats.compressed += 1
            if opcode == 1 or opcode == 2:
                mark = payload.find(MARKER)
                if mark >= 0:
                    stats = self.stats
                    stats.delivered += 1
                    if stats.record_latency and len(stats.latencies) < stats.max_samples:
                        if not now:
                            now = time.time()
                        stats.latencies.append(now - float(payload[mark + 3:mark + 20]))
                else:
                    self._control(payload)
            elif opcode == 9:
                self._send_frame(0xA, payload)
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.stats.closes[code] = self.stats.closes.get(code, 0) + 1
                if not self.closed.done():
                    self.closed.set_result(code)
                self._send_frame(0x8, payload[:2])
                self.transport.close()  # type: ignore[union-attr]
                break
        del buf[:pos]

    def _control(self, payload: bytes) -> None:
        if self.dialect == "socketio":
            if payload.startswith(b"0{"):
                self.send_text("40" + json.dumps({"token": self.token}))
            elif payload.startswith(b"40"):
                if not self.ready.done():
                    self.ready.set_result(None)
            elif payload == b"2":
                self.send_text("3")
            elif payload.startswith(b"44") and not self.ready.done():
                self.ready.set_exception(ConnectionError(f"socket.io refused: {payload[:200]!r}"))
        elif b'"welcome"' in payload:
            if not self.ready.done():
                self.ready.set_result(None)
        elif b'"error"' in payload and not self.ready.done():
            self.ready.set_exception(ConnectionError(f"refused: {payload[:200]!r}"))

    # -- sending (client frames must be masked; an all-zero mask is valid, RFC 6455 5.3) -----

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        n = len(payload)
        if n < 126:
            head = bytes([0x80 | opcode, 0x80 | n])
        elif n < 65536:
            head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
        self.transport.write(head + b"\x00\x00\x00\x00" + payload)

    def send_text(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def close(self) -> None:
        self._send_frame(0x8, (1000).to_bytes(2, "big"))
        if self.transport is not None:
            self.transport.close()


class SseClient(_Receiver):
    """One SSE stream (asyncapi.yaml ``sseStream``, ``GET /v1/sse`` with ``Authorization:
    Bearer``), as cheap as :class:`WsClient`: HTTP/1.1 chunks are not decoded, since every
    event ends with a blank line and the gateway never splits one over two chunks, so events
    are found by their terminator and counted by the ``@t=`` marker of their ``data``."""

    def __init__(self, stats: Stats, host: str, port: int, path: str, token: str,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.stats = stats
        self.host, self.port, self.path, self.token = host, port, path, token
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._tail = b""
        self._started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"  # type: ignore[attr-defined]
                        f"Authorization: Bearer {self.token}\r\nAccept: text/event-stream\r\n\r\n".encode())


    def data_received(self, data: bytes) -> None:
        stats = self.stats
        stats.bytes_received += len(data)
        buf = self._tail + data if self._tail else data
        if not self._started:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._tail = buf
                return
            if b" 200 " not in buf[:end].split(b"\r\n", 1)[0]:
                self.ready.set_exception(ConnectionError(f"refused: {buf[:300]!r}"))
                self.transport.close()  # type: ignore[union-attr]
                return
            buf = buf[end + 4:]
            self._started = True
        pieces = buf.split(b"\n\n")
        self._tail = pieces.pop()
        now = 0.0
        for piece in pieces:
            mark = piece.find(MARKER)
            if mark >= 0:
                stats.delivered += 1
                if stats.record_latency and len(stats.latencies) < stats.max_samples:
                    if not now:
                        now = time.time()
                    stats.latencies.append(now - float(piece[mark + 3:mark + 20]))
            elif b"event: welcome" in piece:
                if not self.ready.done():
                    self.ready.set_result(None)
            elif b"event: close" in piece:
                code = int(piece[piece.find(b'"code":') + 7:][:4])
                stats.closes[code] = stats.closes.get(code, 0) + 1
                if not self.closed.done():
                    self.closed.set_result(code)
                self.transport.close()  # type: ignore[union-attr]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def open_clients(stats: Stats, *, host: str, port: int, path: str, dialect: str,
                       tokens: list[str], concurrency: int = 64, timeout: float = 120.0,
                       deflate: bool = False) -> list[WsClient | SseClient]:
    """Open one authenticated connection per token; raise if any fails or time runs out.
    ``dialect="sse"``: an SSE stream (:class:`SseClient`) instead of a WebSocket."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(concurrency)
    clients: list[WsClient | SseClient] = []

    def make(token: str) -> WsClient | SseClient:
        if dialect == "sse":
            return SseClient(stats, host, port, path, token, loop)
        return WsClient(stats, host, port, path, dialect, token, loop, deflate)

    async def one(token: str) -> None:
        async with gate:
            _, client = await loop.create_connection(lambda: make(token), host, port)
            clients.append(client)
            await asyncio.wait_for(client.ready, 30)

    async with asyncio.timeout(timeout):
        await asyncio.gather(*(one(t) for t in tokens))
    return clients


async def close_clients(clients: list[WsClient | SseClient], timeout: float = 10.0) -> None:
    for client in clients:
        client.close()
    waiters = [c.closed for c in clients if not c.closed.done()]
    if waiters:
        await asyncio.wait(waiters, timeout=timeout)


class Publisher:
    """A keep-alive HTTP/1.1 connection posting ``POST /v1/events`` batches."""

    def __init__(self, host: str, port: int, service_token: str) -> None:
        self.host, self.port = host, port
        self.head = (f"POST /v1/events HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                     f"Authorization: Bearer {service_token}\r\nContent-Length: ").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Self:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()

    async def post(self, body: bytes) -> None:
        assert self.reader is not None and self.writer is not None
        self.writer.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head.split(b" ", 2)[1]
        length = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            body_out = b""
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                chunk = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                body_out += chunk[:-2]
        else:
            body_out = await self.reader.readexactly(length)
        if status != b"200":
            raise RuntimeError(f"publish answered {status!r}: {body_out[:300]!r}")


class RoundRobinPublisher:
    """Keep-alive publishers to one or more ports; each ``post`` goes to the next port.

    With one port it is a :class:`Publisher`. ``first`` picks the port of the first post (so two
    concurrent loops over two ports start on different ones).
    """

    def __init__(self, host: str, ports: tuple[int, ...], service_token: str, first: int = 0) -> None:
        self.publishers = [Publisher(host, port, service_token) for port in ports]
        self.next = first

    async def __aenter__(self) -> Self:
        try:
            for pub in self.publishers:
                await pub.__aenter__()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        for pub in self.publishers:
            await pub.__aexit__()

    async def post(self, body: bytes) -> None:
        pub = self.publishers[self.next % len(self.publishers)]
        self.next += 1
        await pub.post(body)


class Workload:
    """Events of ~300 bytes (as delivered) to random users, in batches."""

    def __init__(self, users: int, batch: int, seed: int = 3) -> None:
        self.users = users
        self.batch = batch
        self.rng = random.Random(seed)
        self.prefix = [f'{{"userId":"u{u}","event":{{"type":"notification","level":"info","message":"@t='.encode()
                       for u in range(users)]
        # Padding so the delivered frame (epoch, offset, timestamp, type, level, message) is ~300 bytes.
        self.suffix = ("|" + "x" * 150 + '"}}').encode()

    def body(self) -> tuple[bytes, list[int]]:
        """One batch: the body (stamped now) and the users it goes to."""
        targets = [self.rng.randrange(self.users) for _ in range(self.batch)]
        stamp = f"{time.time():.6f}".encode()
        prefix, suffix = self.prefix, self.suffix
        items = b",".join(prefix[u] + stamp + suffix for u in targets)
        return b'{"events":[' + items + b"]}", targets


async def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.002) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True
