"""Run the gateway under uvicorn in this process (``livegate serve``).

Shutdown order on SIGTERM/SIGINT: stop accepting, then close every WebSocket with 4000
(server restart) after flushing its queue, then let uvicorn finish HTTP requests and run
the lifespan shutdown. uvicorn alone would close WebSockets with 1012 before our app
could flush, hence :class:`GatewayServer`.
"""

from __future__ import annotations

import socket

import uvicorn

from livegate.app import Gateway, create_app
from livegate.config import Config


class GatewayServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        await self.gateway.drain(self.gateway.config.shutdown_grace_seconds)
        await super().shutdown(sockets)


def uvicorn_config(config: Config, app: object) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=config.host,
        port=config.port,
        ws="websockets-sansio",
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


def serve(config: Config) -> None:
    gateway = Gateway(config)
    app = create_app(gateway=gateway)
    GatewayServer(uvicorn_config(config, app), gateway).run()
