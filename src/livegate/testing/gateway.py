"""Run a whole gateway inside the current event loop on a free 127.0.0.1 port.

For tests (ours and those of applications built on livegate)::

    async with running_gateway(tmp_path) as gw:
        token = gw.token("alice")
        await gw.publish("alice", {"type": "notification", "level": "info", "message": "hi"})
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import httpx
import uvicorn

from livegate.app import Gateway, create_app
from livegate.bus import Bus
from livegate.config import Config
from livegate.protocol.auth import mint_token
from livegate.server import GatewayServer, uvicorn_config

Wire = Literal["native", "asgi"]
#: Every wire ``/v1/ws`` can be served through (the endpoint conformance suite runs over each).
WIRES: tuple[Wire, ...] = ("native", "asgi")

TEST_SECRET = "livegate-test-secret-0123456789abcdef0123456789"
TEST_SERVICE_TOKEN = "livegate-test-service-token-0123456789abcdef"  # >= 32: serve refuses less


def test_config(data_dir: Path, **overrides: Any) -> Config:
    base = Config(
        host="127.0.0.1", port=0, dev=True, jwt_secret=TEST_SECRET, service_token=TEST_SERVICE_TOKEN,
        data_dir=data_dir, log_level="WARNING", shutdown_grace_seconds=3.0,
    )
    return dataclasses.replace(base, **overrides)


class _QuietServer(GatewayServer):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # leave the test process's signals alone
        yield


@dataclasses.dataclass
class RunningGateway:
    gateway: Gateway
    server: uvicorn.Server
    port: int

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def token(self, user_id: str, ttl_seconds: float = 600, now: float | None = None) -> str:
        return mint_token(self.gateway.config.jwt_secret, user_id, ttl_seconds=ttl_seconds, now=now)

    def http(self, user_id: str | None = None) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.token(user_id)}"} if user_id else {}
        return httpx.AsyncClient(base_url=self.http_url, headers=headers, timeout=10)

    async def publish(self, user_id: str, *events: dict[str, Any]) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.http_url, timeout=10) as client:
            response = await client.post(
                "/v1/events", json={"events": [{"userId": user_id, "event": e} for e in events]},
                headers={"Authorization": f"Bearer {self.gateway.config.service_token}"},
            )
        response.raise_for_status()
        return response.json()["results"]  # type: ignore[no-any-return]


@contextlib.asynccontextmanager
async def running_gateway(data_dir: Path, *, bus: Bus | None = None, wire: Wire = "native",
                          **overrides: Any) -> AsyncIterator[RunningGateway]:
    """``wire="native"`` serves ``/v1/ws`` as ``livegate serve`` does (livegate.transport.native);
    ``wire="asgi"`` through the app's ASGI route (livegate.transport.asgi) on uvicorn's own
    sans-I/O WebSocket implementation, as any other ASGI server would."""
    config = test_config(data_dir, **overrides)
    gateway = Gateway(config, bus=bus)
    app = create_app(gateway=gateway)
    uv = uvicorn_config(config, app)
    if wire == "asgi":
        uv.ws = "websockets-sansio"
    server = _QuietServer(uv, gateway)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(15):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("gateway exited during start-up")
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield RunningGateway(gateway, server, port)
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15)
