"""livegate.testing.tcp_proxy.ChaosProxy against echo servers: it forwards, falls back to the
next backend while the first refuses, cuts links and slows the server-to-client direction."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator

import pytest

from livegate.testing.redis_server import free_port
from livegate.testing.tcp_proxy import ChaosProxy


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def _echo_server() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


async def _roundtrip(port: int, payload: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    return reader, writer, await asyncio.wait_for(reader.readexactly(len(payload)), 5)


async def test_forwards_to_the_first_backend_that_accepts() -> None:
    dead = free_port()
    async with _echo_server() as live:
        proxy = await ChaosProxy([dead, live]).start()
        try:
            _, writer, echoed = await _roundtrip(proxy.port, b"hello")
            assert echoed == b"hello"
            assert [link.backend for link in proxy.open_links()] == [live]
            writer.close()
        finally:
            await proxy.stop()


async def test_no_backend_closes_the_client() -> None:
    proxy = await ChaosProxy([free_port()]).start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        assert proxy.refused == 1
        writer.close()
    finally:
        await proxy.stop()


async def test_cut_aborts_both_sides() -> None:
    async with _echo_server() as port:
        proxy = await ChaosProxy([port]).start()
        try:
            reader, writer, _ = await _roundtrip(proxy.port, b"x")
            assert proxy.cut(5, random.Random(1)) == 1 and proxy.cuts == 1
            with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
                await asyncio.wait_for(reader.readexactly(1), 5)
            assert proxy.open_links() == []
            writer.close()
        finally:
            await proxy.stop()


async def test_a_slowed_link_forwards_the_servers_bytes_at_the_rate_then_heals() -> None:
    async with _echo_server() as port:
        proxy = await ChaosProxy([port]).start()
        try:
            reader, writer, _ = await _roundtrip(proxy.port, b"x")
            proxy.slow(proxy.open_links()[0], seconds=30, rate=2000)
            writer.write(b"w")  # ends the read that was pending at full speed (slow from the next one)
            await writer.drain()
            await asyncio.wait_for(reader.readexactly(1), 5)
            writer.write(b"y" * 1000)
            await writer.drain()
            started = time.monotonic()
            await asyncio.wait_for(reader.readexactly(1000), 10)
            assert time.monotonic() - started >= 0.3  # 1,000 bytes at 2,000 B/s: ~0.5 s
            proxy.heal()
            writer.write(b"z" * 100_000)
            await writer.drain()
            started = time.monotonic()
            await asyncio.wait_for(reader.readexactly(100_000), 10)
            assert time.monotonic() - started < 5
            writer.close()
        finally:
            await proxy.stop()
