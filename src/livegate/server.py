"""Run the gateway under uvicorn in this process (``livegate serve``).

uvicorn serves HTTP through Litestar; ``/v1/ws`` is served by livegate's own transport
(:mod:`livegate.transport.native`), which uvicorn's public ``ws=`` option hands every
WebSocket upgrade to. Under any other ASGI server (or ``ws=`` set to one of uvicorn's own
implementations) the app's Litestar route serves ``/v1/ws`` through the ASGI wire instead.

Shutdown order on SIGTERM/SIGINT: stop accepting, then close every WebSocket with 4000
(server restart) after flushing its queue, then let uvicorn finish HTTP requests and run
the lifespan shutdown (:class:`GatewayServer`).
"""

from __future__ import annotations

import gc
import socket

import uvicorn
from litestar import Litestar
from websockets.http11 import Request

from livegate.app import Gateway, create_app
from livegate.app.ws import Connection
from livegate.config import Config
from livegate.transport.native import NativeOptions, websocket_protocol
from livegate.transport.wire import Endpoint, Wire


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        await self.gateway.drain(self.gateway.config.shutdown_grace_seconds)
        await super().shutdown(sockets)


def native_options(gateway: Gateway) -> NativeOptions:
    """The native transport's settings from the gateway's config (``LIVEGATE_HEARTBEAT_*``,
    ``LIVEGATE_MAX_FRAME_BYTES``, ``LIVEGATE_PERMESSAGE_DEFLATE``)."""
    config = gateway.config

    def endpoint(wire: Wire, request: Request) -> Endpoint:
        return Connection(wire, gateway, origin=request.headers.get("Origin"))

    return NativeOptions(
        endpoint,
        path="/v1/ws",
        heartbeat_interval=config.heartbeat_interval_seconds,
        heartbeat_timeout=config.heartbeat_timeout_seconds,
        # Our limit answers with `frame_too_large` + 4400; the transport's (4x) is a backstop (1009).
        max_size=config.max_frame_bytes * 4,
        permessage_deflate=config.permessage_deflate,
    )


def uvicorn_config(config: Config, app: Litestar) -> uvicorn.Config:
    gateway: Gateway = app.state.gateway
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        ws=websocket_protocol(native_options(gateway)),
        # Read only by uvicorn's own WebSocket implementations (bench/servers/livegate_alt.py).
        ws_ping_interval=config.heartbeat_interval_seconds,
        ws_ping_timeout=config.heartbeat_timeout_seconds,
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
