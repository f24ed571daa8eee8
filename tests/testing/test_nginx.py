"""livegate.testing.nginx: a real nginx balancing round robin, passing WebSocket upgrades
through (or, ``upgrade=False``, not), its access log naming each request's backend, and a
clear error without nginx."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
import websockets

from livegate.testing.nginx import Nginx, NginxNotFound, find_nginx


class _Named(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = str(self.server.server_address[1]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backends() -> Iterator[list[int]]:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Named) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield [int(s.server_address[1]) for s in servers]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_requests_alternate_between_backends_and_the_log_names_each_one(backends: list[int]) -> None:
    with Nginx(backends) as lb, httpx.Client(base_url=lb.http_url, timeout=5) as client:
        answers = [client.get(f"/r{i}").text for i in range(6)]
        assert answers[0] != answers[1] and answers == [answers[0], answers[1]] * 3
        assert set(answers) == {str(p) for p in backends}
        entries = lb.access_entries()
        assert [e["uri"] for e in entries] == [f"/r{i}" for i in range(6)]
        assert [e["upstream"] for e in entries] == [lb.upstream(int(a)) for a in answers]
        assert all(e["method"] == "GET" and e["status"] == "200" for e in entries)
        pid = lb.pid
    assert pid is not None and not lb.running() and not lb.prefix.exists()


async def _echo(ws: websockets.ServerConnection) -> None:
    async for message in ws:
        await ws.send(f"echo {message}")


@contextlib.asynccontextmanager
async def echo_backend() -> AsyncIterator[int]:
    """A WebSocket echo server on a free port."""
    async with websockets.serve(_echo, "127.0.0.1", 0) as server:
        yield int(next(iter(server.sockets)).getsockname()[1])


async def test_a_websocket_upgrade_passes_through() -> None:
    async with echo_backend() as port:
        lb = await asyncio.to_thread(Nginx([port]).start)
        try:
            async with websockets.connect(lb.ws_url) as ws:
                await ws.send("hi")
                assert await asyncio.wait_for(ws.recv(), 5) == "echo hi"
        finally:
            await asyncio.to_thread(lb.close)


async def test_without_upgrade_the_backend_sees_a_plain_request_and_refuses_the_handshake() -> None:
    async with echo_backend() as port:
        lb = await asyncio.to_thread(Nginx([port], upgrade=False).start)
        try:
            # The backend got the request without Upgrade and refused it (websockets: 426).
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with websockets.connect(lb.ws_url, open_timeout=5):
                    pass
            assert refused.value.response.status_code == 426
            async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws") as ws:  # directly it upgrades
                await ws.send("hi")
                assert await asyncio.wait_for(ws.recv(), 5) == "echo hi"
        finally:
            await asyncio.to_thread(lb.close)


def test_a_missing_binary_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("livegate.testing.nginx.shutil.which", lambda name: None)
    monkeypatch.setattr("livegate.testing.nginx._FALLBACK_BINARY", "/nonexistent/nginx")
    with pytest.raises(NginxNotFound, match="apt-get install nginx"):
        find_nginx()
