"""A TCP proxy in front of Redis that can break connections *silently*.

Redis closing a socket is easy to notice; the failures a probe exists for are the quiet
ones: a connection that stays open while nothing comes through (a stalled NAT entry, a
half-dead peer), or one the server forgot while the client still holds its end.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class _Link:
    client_writer: asyncio.StreamWriter
    upstream_writer: asyncio.StreamWriter
    sent: bytearray = field(default_factory=bytearray)  # the first bytes the client sent
    stalled: bool = False  # forward nothing either way, keep both sockets open
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def is_subscriber(self) -> bool:
        return b"SUBSCRIBE" in self.sent


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.links: list[_Link] = []
        self._server: asyncio.base_events.Server | None = None
        self.port = 0
        self.blackhole = False  # stall every subscriber link, also the ones made from now on

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self.links:
            for task in link.tasks:
                task.cancel()
            for writer in (link.client_writer, link.upstream_writer):
                writer.close()
        for link in self.links:
            for task in link.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._server is not None:
            await self._server.wait_closed()

    def retarget(self, host: str, port: int) -> None:
        """Send new connections to another server and drop the open ones: a floating
        address (VIP, DNS, an L4 balancer) moved to a promoted replica."""
        self.target = (host, port)
        for link in self.links:
            for writer in (link.client_writer, link.upstream_writer):
                with contextlib.suppress(Exception):
                    writer.transport.abort()
        self.links = []

    def stall_subscribers(self) -> int:
        """From now on the pub/sub connections pass nothing, and nobody is told."""
        links = [link for link in self.links if link.is_subscriber and not link.stalled]
        for link in links:
            link.stalled = True
        return len(links)

    def forget_subscribers(self) -> int:
        """Close the Redis side of pub/sub connections, keep the client side open and mute:
        Redis drops the subscriptions, the client hears nothing."""
        links = [link for link in self.links if link.is_subscriber and not link.stalled]
        for link in links:
            link.stalled = True
            link.upstream_writer.close()
        return len(links)

    def blackhole_subscribers(self, on: bool = True) -> int:
        """A partition only pub/sub suffers: while on, every subscriber link (open ones now,
        new ones as soon as they send SUBSCRIBE) passes nothing. Turning it off lets new
        links through; the stalled ones stay mute until their client drops them."""
        self.blackhole = on
        return self.stall_subscribers() if on else 0

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        link = _Link(client_writer, upstream_writer)
        self.links.append(link)
        link.tasks = [
            asyncio.create_task(self._pipe(link, client_reader, upstream_writer, from_client=True)),
            asyncio.create_task(self._pipe(link, upstream_reader, client_writer, from_client=False)),
        ]

    async def _pipe(self, link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    *, from_client: bool) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if from_client and len(link.sent) < 4096:
                    link.sent += data[:4096]
                    if self.blackhole and link.is_subscriber:
                        link.stalled = True
                if link.stalled:
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not (link.stalled and not from_client):
                # A client hanging up ends the link; a muted one stays open until it does.
                with contextlib.suppress(Exception):
                    link.upstream_writer.close()
                    link.client_writer.close()
