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
import logging
import resource
import socket

import uvicorn
from litestar import Litestar
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from websockets.http11 import Request

from livegate.app import Gateway, create_app
from livegate.app.ws import Connection
from livegate.config import Config
from livegate.transport.guard import TransportLimits, guarded_http
from livegate.transport.native import NativeOptions, websocket_protocol
from livegate.transport.wire import Endpoint, Wire

log = logging.getLogger("livegate.server")
#: File descriptors kept for everything but client connections (listeners, Redis, the
#: database, outputs, logs) when the connection cap is lowered to the process's fd limit.
RESERVED_FDS = 128


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
        close_timeout=config.close_timeout_seconds,
        write_buffer_bytes=config.write_buffer_bytes,
    )


def transport_limits(config: Config) -> TransportLimits:
    """``LIVEGATE_IDLE_TIMEOUT``, ``_HEADER_TIMEOUT``, ``_BODY_TIMEOUT``, ``_MAX_HEADER_BYTES``,
    ``_MAX_HEADERS`` and ``_MAX_CONNECTIONS``, the cap lowered (with a warning) to what the
    process's file-descriptor limit allows: above it, ``accept`` would fail for everyone
    instead of the surplus being refused cleanly."""
    cap = config.max_connections
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and cap > soft - RESERVED_FDS:
        lowered = max(1, soft - RESERVED_FDS)
        log.warning("LIVEGATE_MAX_CONNECTIONS lowered to the file-descriptor limit",
                    extra={"configured": cap, "lowered_to": lowered, "nofile": soft})
        cap = lowered
    return TransportLimits(idle_timeout=config.idle_timeout_seconds, header_timeout=config.header_timeout_seconds,
                           body_timeout=config.body_timeout_seconds, max_header_bytes=config.max_header_bytes,
                           max_headers=config.max_headers, max_connections=cap)


def uvicorn_config(config: Config, app: Litestar) -> uvicorn.Config:
    gateway: Gateway = app.state.gateway
    ws = websocket_protocol(native_options(gateway))
    return uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        # httptools behind livegate's limits (livegate.transport.guard says why a wrapper).
        http=guarded_http(HttpToolsProtocol, ws, transport_limits(config)),
        ws=ws,
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
