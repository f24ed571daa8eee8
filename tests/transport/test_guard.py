"""livegate.transport.guard without sockets: a recording inner protocol and a fake transport.

The end-to-end behaviour against ``livegate serve`` is in test_limits.py; these pin the rules
that a real socket makes hard to reach (the capacity counts, pipelining, paused reads)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from livegate.testing.spec_validation import schema_errors
from livegate.transport.guard import (
    Capacity,
    GuardedHttp,
    TransportLimits,
    guarded_http,
    problem_response,
)
from tests.transport._fakes import FakeTransport

GET = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


class Inner(asyncio.Protocol):
    """Stands for uvicorn's protocol: records what it is given (the last one made is
    :attr:`last`)."""

    last: Inner | None = None

    def __init__(self, **_args: Any) -> None:
        self.data = bytearray()
        self.lost = False
        self.transport: Any = None
        type(self).last = self

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True


def _guard(inner: type[Inner] = Inner, **limits: Any) -> type[GuardedHttp]:
    return guarded_http(inner, Inner, TransportLimits(**limits))


def _open(cls: type[GuardedHttp]) -> tuple[GuardedHttp, FakeTransport]:
    protocol, transport = cls(), FakeTransport()
    transport.protocol = protocol
    protocol.connection_made(transport)
    return protocol, transport


def _status(transport: FakeTransport) -> tuple[int, dict[str, Any]]:
    head, _, body = bytes(transport.written).partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_every_problem_response_is_a_documented_problem() -> None:
    for status, code in ((408, "request_timeout"), (431, "headers_too_large"), (503, "server_busy")):
        head, _, body = problem_response(status, code, "why").partition(b"\r\n\r\n")
        assert head.startswith(f"HTTP/1.1 {status} ".encode()) and b"connection: close" in head
        assert not schema_errors(json.loads(body), "Problem")


async def test_the_capacity_counts_open_and_refused_connections_and_gives_them_back() -> None:
    cls = _guard(max_connections=2)
    capacity: Capacity = cls.capacity
    served = [_open(cls) for _ in range(2)]
    refused, refused_transport = _open(cls)
    assert (capacity.open, capacity.refusing) == (2, 1)
    _open(cls)  # the second refused one: still answered
    dropped, dropped_transport = _open(cls)  # beyond twice the cap: dropped unanswered
    assert dropped_transport.aborted and (capacity.open, capacity.refusing) == (2, 2)
    refused.data_received(GET)
    status, problem = _status(refused_transport)
    assert status == 503 and problem["code"] == "server_busy" and refused_transport.eof
    refused.connection_lost(None)
    served[0][0].connection_lost(None)
    assert (capacity.open, capacity.refusing) == (1, 1)
    dropped.connection_lost(None)  # never counted: nothing to give back
    assert (capacity.open, capacity.refusing) == (1, 1)


async def test_a_limit_hit_after_a_request_was_passed_on_closes_without_an_answer() -> None:
    protocol, transport = _open(_guard(max_headers=5))
    protocol.data_received(GET)
    inner = Inner.last
    assert inner is not None and bytes(inner.data) == GET
    protocol.data_received(b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * 6 + b"\r\n")
    assert transport.written == b"" and transport.eof  # uvicorn may still be answering the first
    assert bytes(inner.data) == GET  # the refused head never reached it
    protocol.data_received(b"more")  # dropped while lingering
    assert bytes(inner.data) == GET


async def test_a_head_over_the_byte_limit_is_431_before_it_completes() -> None:
    protocol, transport = _open(_guard(max_header_bytes=1024))
    protocol.data_received(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 2000)
    status, problem = _status(transport)
    assert status == 431 and problem["code"] == "headers_too_large"


async def test_a_header_timeout_while_uvicorn_paused_reading_waits_for_the_peer() -> None:
    protocol, transport = _open(_guard(header_timeout=0.05, idle_timeout=5))
    protocol.data_received(b"GET / HTTP/1.1\r\nHost")
    transport.reading = False  # uvicorn paused the transport (e.g. a pipelined request)
    await asyncio.sleep(0.12)
    assert not transport.written and not transport.is_closing()
    transport.reading = True
    for _ in range(100):
        if transport.written:
            break
        await asyncio.sleep(0.02)
    assert _status(transport)[0] == 408


async def test_after_the_upgrade_the_guard_forwards_to_the_websocket_protocol() -> None:
    ws = Inner()

    class Upgrading(Inner):
        def data_received(self, data: bytes) -> None:
            self.transport.set_protocol(ws)  # what uvicorn does on an upgrade

    protocol, transport = _open(_guard(Upgrading))
    protocol.data_received(b"GET /v1/ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    assert transport.get_protocol() is protocol
    protocol.data_received(b"\x81\x80frame")
    assert bytes(ws.data) == b"\x81\x80frame"
    protocol.connection_lost(None)
    assert ws.lost and protocol.capacity.open == 0


async def test_crlfs_after_a_request_do_not_hold_the_connection_open() -> None:
    protocol, transport = _open(_guard(idle_timeout=0.05))
    protocol.data_received(GET)
    await asyncio.sleep(0.1)
    assert not transport.is_closing()  # after a request, waiting is uvicorn's keep-alive's business
    protocol.data_received(b"\r\n")
    for _ in range(100):
        if transport.is_closing():
            break
        await asyncio.sleep(0.02)
    assert transport.closed


async def test_an_upgrade_nobody_takes_is_answered_then_bounded() -> None:
    protocol, transport = _open(_guard(idle_timeout=0.05))
    head = b"GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
    protocol.data_received(head)
    inner = Inner.last
    assert inner is not None and bytes(inner.data) == head  # uvicorn answers it as a plain request
    protocol.data_received(b"x")  # nothing after it reaches uvicorn, which would not parse it
    assert bytes(inner.data) == head
    for _ in range(100):
        if transport.is_closing():
            break
        await asyncio.sleep(0.02)
    assert transport.closed
