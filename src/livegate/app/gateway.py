"""Everything one gateway process holds, wired once: config, bus, hub, verifier, metrics,
publisher and the generation service. Routes and the WebSocket pump receive it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any

from livegate.bus import Bus, create_bus, create_relay, create_tickets
from livegate.bus.hub import Hub
from livegate.config import Config
from livegate.metrics import Metrics
from livegate.protocol.auth import TokenVerifier
from livegate.protocol.session import SessionLimits
from livegate.service.publisher import Publisher
from livegate.transport.ticks import LoopTicks

if TYPE_CHECKING:
    from livegate.app.ws import Connection
    from livegate.service.generations import GenerationService

log = logging.getLogger("livegate.gateway")


class Gateway:
    def __init__(self, config: Config, *, bus: Bus | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.bus = bus or create_bus(config)
        self.metrics.watch_bus(self.bus.counters)
        self.hub = Hub(config.max_connections_per_user)
        self.bus.on_stream_reset = self._on_stream_reset
        self.verifier = TokenVerifier.from_config(config)
        self.limits = SessionLimits(
            auth_timeout=config.auth_timeout_seconds,
            token_expiring_lead=config.token_expiring_lead_seconds,
            token_grace=config.token_grace_seconds,
            max_frame_bytes=config.max_frame_bytes,
            rate_per_second=config.rate_limit_per_second,
            rate_burst=config.rate_limit_burst,
            heartbeat_interval_ms=int(config.heartbeat_interval_seconds * 1000),
            max_json_depth=config.max_json_depth,
        )
        self.publisher = Publisher(self.bus, self.metrics, config.max_event_bytes)
        # SSE (app/sse.py): this process's name in connection ids, the tickets every process
        # shares and the relay that hands client messages to the process holding the stream.
        self.node = secrets.token_hex(4)
        self.tickets = create_tickets(config)
        self.relay = create_relay(config, self.node)
        from livegate.app.sse import SseConnections

        self.sse = SseConnections(self)
        self.connections: set[Connection] = set()
        self.ticks = LoopTicks()  # the delivery core's clock: bursts are bounded per loop iteration
        self.generations: GenerationService | None = None
        self.started_at = time.time()
        self._draining = False
        self._connection_left = asyncio.Event()  # drain() waits on it

    async def start(self) -> None:
        """Start (or start again after :meth:`stop`: an app's lifespan may run more than once,
        as in test clients): accept sessions, start the bus and the generation service."""
        self.config.warn_if_insecure()
        self._draining = False
        self.hub.accepting = True
        await self.bus.start()
        await self.tickets.start()
        await self.relay.start(self.sse.on_relayed)
        from livegate.service.generations import GenerationService

        self.generations = GenerationService.from_config(self.config, self.publisher)
        await self.generations.start()

    async def stop(self) -> None:
        await self.drain(self.config.shutdown_grace_seconds)
        if self.generations is not None:
            await self.generations.stop()
        await self.relay.stop()
        await self.tickets.stop()
        await self.bus.stop()

    async def drain(self, timeout: float) -> None:
        """Graceful shutdown: refuse new sessions, flush queues, close every connection
        with 4000 (server restart, reconnect elsewhere) within ``timeout``."""
        if self._draining:
            return
        self._draining = True
        self.hub.accepting = False
        connections = list(self.connections)
        if connections:
            log.info("draining %d connections", len(connections))
        for connection in connections:
            connection.request_close("server_restart", "The server is restarting; reconnect and resume", flush=True)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self.connections:
                    self._connection_left.clear()
                    await self._connection_left.wait()

    def add_connection(self, connection: Connection) -> None:
        self.connections.add(connection)

    def remove_connection(self, connection: Connection) -> None:
        self.connections.discard(connection)
        self._connection_left.set()

    def _on_stream_reset(self, user_id: str) -> None:
        """The bus lost this stream's history (e.g. Redis restarted empty: a new epoch). Its
        connections here hold positions of the old epoch and would skip the new one's first
        offsets: close them with 4006 so they reconnect and get ``recovered: false``."""
        for member in self.hub.members_of(user_id):
            member.request_close("unavailable", "The stream's history was lost; reconnect and resync", flush=True)

    async def readiness(self) -> dict[str, Any]:
        checks: dict[str, bool] = {}
        try:
            checks.update(await asyncio.wait_for(self.bus.health(), 2.0))
        except Exception:
            checks["bus"] = False
        if self.generations is not None:
            checks.update(await self.generations.health())
        checks["accepting"] = not self._draining
        return checks
