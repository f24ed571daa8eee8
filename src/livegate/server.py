"""Run the gateway under uvicorn in this process (``livegate serve``).

Shutdown order on SIGTERM/SIGINT: stop accepting, then close every WebSocket with 4000
(server restart) after flushing its queue, then let uvicorn finish HTTP requests and run
the lifespan shutdown. uvicorn alone would close WebSockets with 1012 before our app
could flush, hence :class:`GatewayServer`.
"""

from __future__ import annotations

import gc
import socket

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from livegate.app import Gateway, create_app
from livegate.config import Config
from livegate.protocol.codes import CLOSE_CODES


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        await self.gateway.drain(self.gateway.config.shutdown_grace_seconds)
        await super().shutdown(sockets)


class HeartbeatClosingProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, closing a peer that misses the heartbeat with the
    contract's 4002 ``heartbeat_timeout`` (asyncapi.yaml ``x-close-codes``) instead of 1011.

    The transport owns WebSocket pings (browsers answer them without the page's help), so the
    timeout is noticed here, not in the session; everything else is uvicorn's.
    """

    def keepalive_timeout(self) -> None:
        self.pong_timer = None
        self.pending_ping_payload = None
        if self.close_sent or self.transport.is_closing():
            return
        self.conn.fail(CLOSE_CODES["heartbeat_timeout"], "heartbeat timeout")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()


def uvicorn_config(config: Config, app: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=config.host,
        port=config.port,
        ws=HeartbeatClosingProtocol,
        ws_ping_interval=config.heartbeat_interval_seconds,
        ws_ping_timeout=config.heartbeat_timeout_seconds,
        # Our limit answers with `frame_too_large` + 4400; the transport's (4x) is a backstop (1009).
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
