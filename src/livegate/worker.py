"""``livegate worker``: run generations without serving sockets.

A worker process holds the tools (and their credentials, GPUs, heavy clients) and the
generation service's job worker, and nothing of delivery: it publishes the lifecycle
events of the runs it executes on the shared bus (Redis), where the gateways deliver
them. It needs the shared store and job engine (``LIVEGATE_DATABASE_URL``) and the shared
bus (``LIVEGATE_REDIS_URL``): without them its runs would be invisible to every gateway.

SIGTERM / SIGINT stop it like a gateway's generation service: runs in flight are handed
to another process at once (their upstream work is left running).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from livegate.bus import create_bus
from livegate.config import Config
from livegate.logs import configure_logging
from livegate.metrics import Metrics
from livegate.service.generations import GenerationService
from livegate.service.publisher import Publisher

__all__ = ["problems", "run_worker"]

log = logging.getLogger("livegate.worker")


def problems(config: Config) -> list[str]:
    """What keeps ``config`` from running a worker that any gateway can see."""
    found = []
    if not config.database_url:
        found.append("a worker shares runs through PostgreSQL: set LIVEGATE_DATABASE_URL=postgresql://...")
    if not config.redis_url:
        found.append("a worker publishes through the shared bus: set LIVEGATE_REDIS_URL=redis://...")
    return found


async def run_worker(config: Config, stop: asyncio.Event | None = None) -> None:
    """Run until ``stop`` is set (or SIGTERM/SIGINT when ``stop`` is not given)."""
    from dataclasses import replace

    configure_logging(config.log_level)
    config = replace(config, run_worker=True)
    bus = create_bus(config)
    service = GenerationService.from_config(config, Publisher(bus, Metrics()))
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    await bus.start()
    try:
        await service.start()
        log.info("worker started", extra={"tools": sorted(service.tools)})
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await service.stop()
        await bus.stop()
        log.info("worker stopped")
