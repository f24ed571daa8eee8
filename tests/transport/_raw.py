"""Raw TCP to a real ``livegate serve``: hand-made HTTP heads and RFC 6455 frames, for the
limit and framing tests (a client library would refuse to send most of them)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
import struct
from pathlib import Path
from typing import Any

from livegate.testing.spec_validation import asyncapi_document, schema_errors

WS_KEY = base64.b64encode(b"livegate-raw-key").decode()
TCP_CLOSE_WAIT, TCP_CLOSE = 8, 7
#: RFC 6455 codes the transport closes with, without an ``error`` frame (asyncapi.yaml).
TRANSPORT_CLOSE_CODES = {c["code"]: c["name"] for c in
                         asyncapi_document()["channels"]["userStream"]["x-transport-close-codes"]}


def upgrade_head(path: str = "/v1/ws", extra: str = "") -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool = True, rsv: int = 0,
          length: int | None = None) -> bytes:
    """One client frame; ``length`` declares another payload length than the payload's."""
    declared = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | (rsv << 4) | opcode])
    bit = 0x80 if mask else 0
    if declared < 126:
        head += bytes([bit | declared])
    elif declared < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", declared)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", declared)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


class Raw:
    """One TCP connection; reads server frames (unmasked) after an optional handshake."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, *, limit: int = 2**24) -> Raw:
        """``limit``: what the stream reader buffers before it stops reading the socket."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=limit)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def handshake(self, extra: str = "") -> bytes:
        await self.send(upgrade_head(extra=extra))
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 101"), head
        return head

    async def auth(self, token: str) -> dict[str, Any]:
        await self.send(frame(0x1, json.dumps({"type": "auth", "token": token}).encode()))
        opcode, data = await self.next_frame()
        assert opcode == 0x1, (opcode, data)
        welcome: dict[str, Any] = json.loads(data)
        assert welcome["type"] == "welcome", welcome
        return welcome

    async def next_frame(self, timeout: float = 10.0) -> tuple[int, bytes]:
        """The next whole server frame (opcode, payload); server frames are never masked."""
        async def read() -> tuple[int, bytes]:
            b0, b1 = await self.reader.readexactly(2)
            assert not b1 & 0x80, "a server frame is masked"
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
            return b0 & 0x0F, await self.reader.readexactly(length)
        return await asyncio.wait_for(read(), timeout)

    async def expect_close(self, timeout: float = 10.0) -> int:
        """Skip text frames up to the server's close frame; then the server ends TCP. Returns its code."""
        for _ in range(1000):
            opcode, data = await self.next_frame(timeout)
            if opcode == 0x8:
                code = struct.unpack("!H", data[:2])[0]
                with contextlib.suppress(ConnectionError, OSError):  # echo it, as a client does
                    await self.send(frame(0x8, data[:2]))
                assert await self.closed_by_server(timeout), "TCP still open after the close frame"
                return int(code)
        raise AssertionError("no close frame")

    async def response(self, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
        """An HTTP response read to the end of the connection."""
        data = await asyncio.wait_for(self.read_to_end(), timeout)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
        return int(lines[0].split()[1]), headers, body

    async def read_to_end(self) -> bytes:
        chunks = []
        with contextlib.suppress(ConnectionResetError):
            while chunk := await self.reader.read(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    async def closed_by_server(self, timeout: float = 10.0) -> bool:
        """Wait (bounded) until the server ended the connection: EOF or a reset."""
        try:
            await asyncio.wait_for(self.read_to_end(), timeout)
        except TimeoutError:
            return False
        return True

    def tcp_state(self) -> int:
        """The kernel's TCP state of our socket (Linux ``TCP_INFO``), without reading from it."""
        sock = self.writer.get_extra_info("socket")
        return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0])

    async def wait_tcp_ended(self, timeout: float) -> bool:
        """Wait (bounded, polling the kernel) until the peer sent FIN or RST, without reading."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.writer.transport.is_closing():  # asyncio saw a reset while writing
                return True
            if self.tcp_state() in (TCP_CLOSE_WAIT, TCP_CLOSE):
                return True
            await asyncio.sleep(0.05)
        return False

    def close(self) -> None:
        self.writer.transport.abort()


def assert_problem_bytes(status: int, headers: dict[str, str], body: bytes, expected: int, code: str) -> None:
    assert status == expected, (status, body[:200])
    assert headers["content-type"] == "application/problem+json"
    problem = json.loads(body)
    assert not schema_errors(problem, "Problem"), problem
    assert problem["status"] == expected and problem["code"] == code, problem


def assert_no_error_logs(log_path: Path) -> None:
    """Nothing at error level (nor a traceback) in a gateway process's log."""
    errors = [line for line in log_path.read_text(errors="replace").splitlines()
              if '"level": "error"' in line or '"level": "critical"' in line or "Traceback" in line]
    assert not errors, errors[:5]


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")
