"""A TCP proxy in front of a gateway that misbehaves on demand: it cuts client connections and
reads slowly from the server (a slow reader, as the server sees one), for chaos tests::

    proxy = await ChaosProxy([gw0.port, gw1.port, gw2.port]).start()   # prefers gw0
    url = f"ws://127.0.0.1:{proxy.port}/v1/ws"
    proxy.cut(2, random.Random(7))       # abort two links at random (both sides, no close frame)
    proxy.slow(link, seconds=3, rate=2000)  # that link forwards the server's bytes at 2 kB/s
    link.head                            # the first bytes its client sent (an HTTP request head)
    await proxy.stop()

Each new client connection goes to the first backend that accepts it, in the given order (the
first is this proxy's own gateway; the others are the fallback while it is down), as an L4
balancer with health checks would. The upstream socket's receive buffer is small
(``upstream_rcvbuf``) so a slowed link pushes back on the server after a few kB instead of
after the kernel's autotuned megabytes. Everything runs on the caller's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["ChaosProxy", "ProxyLink"]


@dataclass(eq=False)
class ProxyLink:
    """One client connection and its upstream connection."""

    backend: int
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    open: bool = True
    slow_until: float = 0.0  # time.monotonic() bound of the slow episode
    slow_rate: float = 0.0  # bytes per second from the server while slow
    head: bytes = b""  # the client's first read (at most 64 kB): what it asked for, for tests

    def abort(self) -> None:
        self.open = False
        for writer in (self.client, self.upstream):
            with contextlib.suppress(Exception):
                writer.transport.abort()


class ChaosProxy:
    def __init__(self, backends: Sequence[int], *, host: str = "127.0.0.1", upstream_rcvbuf: int = 32768,
                 connect_timeout: float = 2.0) -> None:
        if not backends:
            raise ValueError("at least one backend port")
        self.backends = list(backends)
        self.host = host
        self.upstream_rcvbuf = upstream_rcvbuf
        self.connect_timeout = connect_timeout
        self.links: list[ProxyLink] = []
        self.port = 0
        self.accepted = 0
        self.refused = 0  # client connections closed because no backend accepted
        self.cuts = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> ChaosProxy:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        links, self.links = self.links, []
        for link in links:
            link.abort()
        tasks = [task for link in links for task in link.tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def open_links(self) -> list[ProxyLink]:
        return [link for link in self.links if link.open]

    def cut(self, count: int, rng: random.Random) -> int:
        """Abort ``count`` open links chosen with ``rng`` (fewer when fewer are open)."""
        links = self.open_links()
        chosen = rng.sample(links, min(count, len(links)))
        for link in chosen:
            link.abort()
        self.cuts += len(chosen)
        return len(chosen)

    def slow(self, link: ProxyLink, *, seconds: float, rate: float) -> None:
        """Forward the server's bytes on ``link`` at ``rate`` bytes/s for ``seconds`` (from its
        next read on: one read already waiting may still take up to 64 kB at once)."""
        link.slow_until, link.slow_rate = time.monotonic() + seconds, max(1.0, rate)

    def heal(self) -> None:
        """End every slow episode now."""
        for link in self.links:
            link.slow_until = 0.0

    async def _connect(self, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.upstream_rcvbuf)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (self.host, port))
        except BaseException:
            sock.close()
            raise
        # A small reader limit: the stream pauses reading at 2 x limit, so a slowed link holds
        # a few kB here rather than asyncio's default 128 kB.
        return await asyncio.open_connection(sock=sock, limit=self.upstream_rcvbuf // 2)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.links = [link for link in self.links if link.open]  # bounded by the open ones
        for port in self.backends:
            try:
                up_reader, up_writer = await asyncio.wait_for(self._connect(port), self.connect_timeout)
            except (OSError, TimeoutError):
                continue
            link = ProxyLink(port, writer, up_writer)
            self.links.append(link)
            self.accepted += 1
            link.tasks = [asyncio.create_task(self._pipe(link, reader, up_writer, slowable=False)),
                          asyncio.create_task(self._pipe(link, up_reader, writer, slowable=True))]
            return
        self.refused += 1
        writer.transport.abort()

    @staticmethod
    async def _pipe(link: ProxyLink, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    *, slowable: bool) -> None:
        try:
            while link.open:
                now = time.monotonic()
                if slowable and now < link.slow_until:
                    chunk = max(1, int(link.slow_rate / 10))  # ten reads a second
                    data = await reader.read(chunk)
                    await asyncio.sleep(min(0.1, link.slow_until - now))
                else:
                    data = await reader.read(65536)
                if not data:
                    break
                if not slowable and not link.head:
                    link.head = data
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # Either side hanging up ends the link, like an L4 balancer.
            link.open = False
            for w in (link.client, link.upstream):
                with contextlib.suppress(Exception):
                    w.close()
