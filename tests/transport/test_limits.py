"""Connection limits of ``livegate serve`` (issue 14): slow, idle, oversized and flooding peers
are closed by the server and cannot grow it (livegate.transport.guard and .native).

Each test speaks raw TCP to a real gateway process with short limits; "released" is shown by
the server ending the connection (EOF or reset, or the kernel's TCP state when the test must
not read), and for the ping flood by the process's resident memory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from livegate.testing.process import GatewayProcess
from tests.transport._raw import (
    Raw,
    assert_no_error_logs,
    assert_problem_bytes,
    frame,
    rss_bytes,
    upgrade_head,
)

LIMITS = {
    "LIVEGATE_IDLE_TIMEOUT": "0.5",
    "LIVEGATE_HEADER_TIMEOUT": "0.8",
    "LIVEGATE_BODY_TIMEOUT": "0.8",
    "LIVEGATE_MAX_HEADER_BYTES": "8192",
    "LIVEGATE_MAX_HEADERS": "40",
    "LIVEGATE_AUTH_TIMEOUT": "4",
    "LIVEGATE_CLOSE_TIMEOUT": "1",
    "LIVEGATE_HEARTBEAT_INTERVAL": "3",
    "LIVEGATE_HEARTBEAT_TIMEOUT": "1",
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    with GatewayProcess(tmp_path_factory.mktemp("limits"), env=LIMITS) as gw:
        yield gw


async def _trickle(raw: Raw, data: bytes, every: float = 0.1) -> None:
    """The attacker's pace: one byte per ``every`` seconds until the server hangs up."""
    try:
        for byte in data:
            await raw.send(bytes([byte]))
            await asyncio.sleep(every)
    except (ConnectionError, OSError):
        pass


async def test_connections_that_never_send_a_byte_are_closed(gateway: GatewayProcess) -> None:
    idle = [await Raw.connect(gateway.port) for _ in range(50)]
    closed = await asyncio.gather(*(raw.closed_by_server(10) for raw in idle))
    assert all(closed)
    assert [await raw.reader.read() for raw in idle[:3]] == [b""] * 3  # no answer, just closed


@pytest.mark.parametrize("head", [b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n\r\n", upgrade_head()],
                         ids=["http", "websocket-upgrade"])
async def test_a_head_sent_at_10_bytes_per_second_is_answered_408_and_closed(gateway: GatewayProcess,
                                                                            head: bytes) -> None:
    raw = await Raw.connect(gateway.port)
    sender = asyncio.ensure_future(_trickle(raw, head))
    try:
        status, headers, body = await raw.response(10)
    finally:
        sender.cancel()
    assert_problem_bytes(status, headers, body, 408, "request_timeout")
    assert not sender.done() or sender.cancelled()  # closed before the head was complete
    assert_no_error_logs(gateway.log_path)


async def test_a_body_that_stalls_is_closed_and_a_slow_steady_one_is_served(gateway: GatewayProcess) -> None:
    head = (f"POST /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gateway.service_token}\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n").encode()
    stalled = await Raw.connect(gateway.port)
    await stalled.send(head + b'{"events":')  # 10 of 1,000 bytes, then nothing
    assert await asyncio.wait_for(stalled.read_to_end(), 10) == b""  # closed, no answer

    body = json.dumps({"events": []}).encode()
    steady = await Raw.connect(gateway.port)
    await steady.send(head.replace(b"1000", str(len(body)).encode()))
    await _trickle(steady, body, every=0.3)  # each gap under the 0.8 s body timeout
    status, _headers, _body = await steady.response(10)
    assert status in (200, 400, 422), _body  # an answer of the API, not a closed socket
    assert_no_error_logs(gateway.log_path)


async def test_a_30_mb_header_line_is_431_without_buffering_it(gateway: GatewayProcess) -> None:
    raw = await Raw.connect(gateway.port)
    before = rss_bytes(gateway.pid or 0)
    await raw.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    try:
        chunk = b"a" * 65536
        while sent < 30 * 2**20:
            await asyncio.wait_for(raw.send(chunk), 10)
            sent += len(chunk)
    except (ConnectionError, OSError):
        pass
    status, headers, body = await raw.response(10)
    assert_problem_bytes(status, headers, body, 431, "headers_too_large")
    assert rss_bytes(gateway.pid or 0) - before < 16 * 2**20


@pytest.mark.parametrize("upgrade", [False, True], ids=["http", "websocket-upgrade"])
async def test_too_many_headers_is_431(gateway: GatewayProcess, upgrade: bool) -> None:
    many = "".join(f"X-H{i}: {i}\r\n" for i in range(200))
    raw = await Raw.connect(gateway.port)
    await raw.send(upgrade_head(extra=many) if upgrade else f"GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n".encode())
    status, headers, body = await raw.response(10)
    assert_problem_bytes(status, headers, body, 431, "headers_too_large")


async def test_keep_alive_requests_within_the_limits_are_served(gateway: GatewayProcess) -> None:
    raw = await Raw.connect(gateway.port)
    for _ in range(3):
        await raw.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Fine: 1\r\n" * 30 + b"\r\n")
        head = await asyncio.wait_for(raw.reader.readuntil(b"\r\n\r\n"), 10)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await raw.reader.readexactly(length)
    raw.close()


async def test_a_websocket_that_never_sends_auth_is_closed_4005(gateway: GatewayProcess) -> None:
    raw = await Raw.connect(gateway.port)
    await raw.handshake()
    opcode, data = await raw.next_frame()
    for _ in range(10):  # the heartbeat's pings may come first (one per interval)
        if opcode != 0x9:
            break
        opcode, data = await raw.next_frame()
    error = json.loads(data)
    assert opcode == 0x1 and error["type"] == "error" and error["code"] == "auth_timeout", error
    assert await raw.expect_close() == 4005


async def _flood_pings(raw: Raw, budget: int) -> int:
    """Write pings (125-byte payloads) and never read the pongs; stop once the server stops
    taking them (nothing drains for 1 s) or after ``budget`` bytes. Returns the bytes sent."""
    burst = frame(0x9, b"p" * 125) * 512
    sent = 0
    try:
        while sent < budget:
            raw.writer.write(burst)
            await asyncio.wait_for(raw.writer.drain(), 1)
            sent += len(burst)
    except (TimeoutError, ConnectionError, OSError):
        pass
    return sent


@pytest.mark.parametrize("authenticated", [False, True], ids=["before-auth", "after-auth"])
async def test_a_ping_flood_that_never_reads_pongs_does_not_grow_the_process(gateway: GatewayProcess,
                                                                             authenticated: bool) -> None:
    raw = await Raw.connect(gateway.port, limit=4096)  # the client reads (almost) nothing either
    await raw.handshake()
    if authenticated:
        await raw.auth(gateway.token("flooder"))
    pid = gateway.pid or 0
    before = rss_bytes(pid)
    budget = 256 * 2**20
    sent = await _flood_pings(raw, budget)
    grown = rss_bytes(pid) - before
    assert sent < budget, "the server kept reading pings it could not answer"
    assert grown < 24 * 2**20, f"the gateway grew by {grown / 2**20:.0f} MB for {sent / 2**20:.0f} MB of pings"
    # The auth timeout (before auth) or the heartbeat (after) closes it, and the close
    # handshake's bound drops it although the peer still reads nothing.
    assert await raw.wait_tcp_ended(15), "the server still holds the connection"
    raw.close()
    probe = await Raw.connect(gateway.port)
    await probe.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await probe.response(10))[0] == 200


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    env = {"LIVEGATE_MAX_CONNECTIONS": "4", "LIVEGATE_IDLE_TIMEOUT": "60", "LIVEGATE_AUTH_TIMEOUT": "60"}
    with GatewayProcess(tmp_path_factory.mktemp("capped"), env=env) as gw:
        yield gw


async def _healthz(port: int) -> int:
    raw = await Raw.connect(port)
    await raw.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    return (await raw.response(10))[0]


async def test_above_the_connection_cap_http_is_503_and_websockets_close_1013(capped: GatewayProcess) -> None:
    # The cap counts open HTTP connections and upgraded WebSockets alike.
    held = [await Raw.connect(capped.port) for _ in range(2)]
    sockets = []
    for _ in range(2):
        ws = await Raw.connect(capped.port)
        await ws.handshake()
        sockets.append(ws)
    await held[0].send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # served: it is one of the four
    assert (await asyncio.wait_for(held[0].reader.readuntil(b"\r\n\r\n"), 10)).startswith(b"HTTP/1.1 200")

    refused = await Raw.connect(capped.port)
    await refused.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = await refused.response(10)
    assert_problem_bytes(status, headers, body, 503, "server_busy")
    assert headers["retry-after"] == "1"

    refused_ws = await Raw.connect(capped.port)
    await refused_ws.handshake()
    assert await refused_ws.expect_close() == 1013

    # Released: once a connection closes, a new one is served.
    sockets[0].close()
    for _ in range(100):
        if await _healthz(capped.port) == 200:
            break
    else:
        raise AssertionError("the slot of a closed connection was not given back")
    for raw in held + sockets[1:]:
        raw.close()
