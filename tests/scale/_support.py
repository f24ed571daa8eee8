"""Helpers for the multi-process tests: gateways started in parallel, a TCP load balancer
(round robin, no stickiness) and a TCP proxy that can blackhole Redis pub/sub, both on an
event loop thread of their own (so they outlive one test's loop and keep forwarding while
a test blocks), WebSocket tabs that validate every frame, and the stream checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import websockets

from livegate.client import ClientStopped, LivegateClient
from livegate.protocol import codec, messages
from livegate.testing.process import GatewayProcess
from livegate.testing.spec_validation import assert_valid_message, message_errors
from tests.bus._proxy import TcpProxy
from tests.bus._support import eventually

T = TypeVar("T")
EVENT_TYPES = frozenset({"generationUpdate", "generationProgress", "notification"})

__all__ = [
    "STARTUP_TIMEOUT",
    "Balancer",
    "BlackholeProxy",
    "LoopThread",
    "ResumingClient",
    "Tab",
    "assert_exact_stream",
    "eventually",
    "notification",
    "publish",
    "publish_recorded",
    "readiness",
    "start_gateways",
    "user_name",
]


def user_name(tag: str = "u") -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


# -- processes ---------------------------------------------------------------------------------


# Start-up is ~1.3 s on an idle 2-core machine; the bound is generous because the machine
# is shared (Python's imports alone took >20 s at a load average of 13).
STARTUP_TIMEOUT = 90.0


def start_gateways(base: Path, count: int, env: dict[str, str]) -> list[GatewayProcess]:
    """``count`` gateway processes started in parallel."""
    gateways = [GatewayProcess(base / f"gw{i}", env=env, startup_timeout=STARTUP_TIMEOUT) for i in range(count)]
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(gw.start) for gw in gateways]
        errors = [f.exception() for f in futures]
    if any(errors):
        for gw in gateways:
            gw.kill()
        raise next(e for e in errors if e is not None)
    return gateways


async def readiness(gw: GatewayProcess) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=3.0) as client:
        response = await client.get(f"{gw.http_url}/readyz")
        return response.status_code, response.json()


def notification(user: str, text: str) -> dict[str, Any]:
    return {"userId": user, "event": {"type": "notification", "level": "info", "message": text}}


async def publish(gw: GatewayProcess, items: Sequence[dict[str, Any]], *, timeout: float = 5.0) -> httpx.Response:
    """``POST /v1/events`` with the service token (openapi.yaml ``publishEvents``)."""
    async with httpx.AsyncClient(timeout=timeout) as client:
        return await client.post(f"{gw.http_url}/v1/events", json={"events": list(items)},
                                 headers={"Authorization": f"Bearer {gw.service_token}"})


async def publish_ok(gw: GatewayProcess, items: Sequence[dict[str, Any]], *,
                     timeout: float = 15.0) -> list[tuple[str, int]]:
    """Publish; a 503 that published nothing (the bus down, or settling after a Redis restart:
    docs/scaling.md "Rewinds") is retried after its ``Retry-After``, as a publisher should."""
    async with asyncio.timeout(timeout):
        while True:
            response = await publish(gw, items)
            if response.status_code != 503 or response.json().get("results"):
                break
            await asyncio.sleep(min(float(response.headers.get("retry-after", "1")), 0.5))
    assert response.status_code == 200, response.text
    return [(r["epoch"], r["offset"]) for r in response.json()["results"]]


async def publish_recorded(gw: GatewayProcess, user: str, tag: str, count: int, expected: dict[int, str]) -> str:
    """Publish ``count`` notifications ``"<tag> #i"``; record offset -> message in
    ``expected``; return the epoch."""
    items = [notification(user, f"{tag} #{i}") for i in range(count)]
    positions = await publish_ok(gw, items)
    for item, (_epoch, offset) in zip(items, positions, strict=True):
        expected[offset] = item["event"]["message"]
    return positions[0][0]


# -- an event loop thread for the network helpers ---------------------------------------------


class LoopThread:
    """An asyncio loop running in a daemon thread; ``run`` calls a coroutine on it."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="scale-net", daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 5.0) -> T:
        async def wrapper() -> T:
            return fn()

        return self.run(wrapper(), timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


@dataclass
class _Link:
    backend: int
    writers: list[asyncio.StreamWriter]
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    open: bool = True


class Balancer:
    """A TCP load balancer in front of the gateways, as an operator would run one: each new
    connection goes to the next backend in round-robin order that accepts it; no session
    affinity. A backend that refuses (dead, or stopped accepting) is skipped."""

    def __init__(self, thread: LoopThread, ports: Sequence[int]) -> None:
        self._thread = thread
        self.ports = list(ports)
        self._next = itertools.count()
        self.links: list[_Link] = []
        self._server: asyncio.base_events.Server | None = None
        self.port = 0
        self._thread.run(self._start())

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def open_links(self, backend: int) -> int:
        return self._thread.call(lambda: sum(1 for link in self.links if link.open and link.backend == backend))

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def close(self) -> None:
        self._thread.run(self._stop())

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self.links:
            for writer in link.writers:
                writer.close()
            for task in link.tasks:
                task.cancel()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(len(self.ports)):
            port = self.ports[next(self._next) % len(self.ports)]
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2.0)
            except (OSError, TimeoutError):
                continue
            link = _Link(port, [writer, up_writer])
            self.links.append(link)
            link.tasks = [asyncio.create_task(self._pipe(link, reader, up_writer)),
                          asyncio.create_task(self._pipe(link, up_reader, writer))]
            return
        writer.close()

    @staticmethod
    async def _pipe(link: _Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            link.open = False
            for w in link.writers:  # either side hanging up ends the link, like an L4 balancer
                with contextlib.suppress(Exception):
                    w.close()


class BlackholeProxy:
    """:class:`tests.bus._proxy.TcpProxy` in front of Redis on the loop thread, with a
    partition that only pub/sub connections suffer: while on, every subscriber link (old
    and new) passes nothing either way and nobody is told."""

    def __init__(self, thread: LoopThread, redis_port: int) -> None:
        self._thread = thread
        self.proxy = TcpProxy("127.0.0.1", redis_port)
        thread.run(self.proxy.start())

    @property
    def url(self) -> str:
        return self.proxy.url

    def blackhole_subscribers(self) -> int:
        return self._thread.call(lambda: self.proxy.blackhole_subscribers(True))

    def heal(self) -> None:
        self._thread.call(lambda: self.proxy.blackhole_subscribers(False))

    def close(self) -> None:
        self._thread.run(self.proxy.stop())


# -- WebSocket clients -------------------------------------------------------------------------


class Tab:
    """One browser tab on the raw protocol (``websockets``): sends ``auth``, records every
    server frame after validating it against asyncapi.yaml."""

    def __init__(self, url: str, token: str) -> None:
        self.url, self.token = url, token
        self.frames: list[dict[str, Any]] = []
        self.invalid: list[str] = []  # frames that violate asyncapi.yaml (checked by wait_events)
        self._ws: Any = None
        self._task: asyncio.Task[None] | None = None

    async def open(self, resume: tuple[str, int] | None = None) -> dict[str, Any]:
        self._ws = await websockets.connect(self.url, max_queue=None, compression=None, open_timeout=10)
        auth = messages.Auth(id="a1", token=self.token, resume=messages.StreamPosition(
            epoch=resume[0], offset=resume[1]) if resume else messages.UNSET)
        await self._ws.send(codec.encode_text(auth))
        welcome = assert_valid_message(await asyncio.wait_for(self._ws.recv(), 10))
        assert welcome["type"] == "welcome", welcome
        self.frames.append(welcome)
        self._task = asyncio.create_task(self._read())
        return welcome

    async def _read(self) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            async for frame in self._ws:
                errors = message_errors(frame)
                if errors:
                    self.invalid.append(f"{errors}: {str(frame)[:300]}")
                self.frames.append(json.loads(frame))

    async def send(self, message: dict[str, Any]) -> None:
        """A client message (checked against asyncapi.yaml first), e.g. ``cancel``."""
        assert_valid_message(message, "client")
        await self._ws.send(json.dumps(message))

    def answer(self, request_id: str) -> dict[str, Any] | None:
        """The reply (or ``error``) carrying ``id == request_id``, once it arrived."""
        return next((f for f in self.frames if f.get("id") == request_id and f["type"] != "welcome"), None)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] in EVENT_TYPES]

    async def wait_events(self, count: int, timeout: float = 10.0) -> None:
        await eventually(lambda: len(self.events) >= count or (self._task is not None and self._task.done()),
                         timeout=timeout, what=f"{count} events on {self.url}")
        assert not self.invalid, self.invalid[:3]
        assert len(self.events) >= count, f"connection ended after {len(self.events)} events"

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._task, 5)


class ResumingClient:
    """:class:`livegate.client.LivegateClient` (it reconnects and resumes by itself) that
    also records every raw frame, validated against asyncapi.yaml, per connection."""

    def __init__(self, url: str, token: str, *,
                 resume: tuple[str, int] | messages.StreamPosition | None = None) -> None:
        self.frames: list[dict[str, Any]] = []
        self.invalid: list[str] = []
        if isinstance(resume, tuple):
            resume = messages.StreamPosition(epoch=resume[0], offset=resume[1])
        self.client = LivegateClient(
            url, token, backoff_initial=0.05, backoff_max=0.5, on_frame=self._on_frame, resume=resume)
        self._drain: asyncio.Task[None] | None = None
        self.stopped: BaseException | None = None

    def _on_frame(self, frame: str) -> None:
        errors = message_errors(frame)
        if errors:
            self.invalid.append(f"{errors}: {frame[:300]}")
        self.frames.append(json.loads(frame))

    async def start(self, timeout: float = 10.0) -> ResumingClient:
        await self.client.__aenter__()
        self._drain = asyncio.create_task(self._consume())
        await eventually(lambda: bool(self.welcomes), timeout=timeout, what="welcome")
        return self

    async def _consume(self) -> None:
        try:
            async for _ in self.client.messages():
                pass
        except ClientStopped as exc:  # recorded, checked by the tests
            self.stopped = exc

    @property
    def welcomes(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] == "welcome"]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [f for f in self.frames if f["type"] in EVENT_TYPES]

    @property
    def close_codes(self) -> list[int]:
        return list(self.client.close_codes)

    async def wait_events(self, count: int, timeout: float = 15.0) -> None:
        await eventually(lambda: len(self.events) >= count or self.stopped is not None, timeout=timeout,
                         what=f"{count} events (have {len(self.events)})")
        assert self.stopped is None, f"client stopped: {self.stopped!r}"
        assert not self.invalid, self.invalid[:3]

    async def wait_welcomes(self, count: int, timeout: float = 15.0) -> None:
        await eventually(lambda: len(self.welcomes) >= count or self.stopped is not None, timeout=timeout,
                         what=f"{count} welcomes (have {len(self.welcomes)})")
        assert self.stopped is None, f"client stopped: {self.stopped!r}"

    async def close(self) -> None:
        await self.client.close()
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(BaseException):
                await self._drain


async def close_all(clients: Iterable[Tab | ResumingClient]) -> None:
    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)


# -- checks ------------------------------------------------------------------------------------


def assert_exact_stream(frames: Sequence[dict[str, Any]], expected: dict[int, str], epoch: str) -> None:
    """The frames of one client (every connection it made, in order) carry exactly the
    events ``expected`` (offset -> message) of ``epoch``: each once, in offset order,
    nothing else; every connection after the first resumed with ``recovered: true``."""
    welcomes = [f for f in frames if f["type"] == "welcome"]
    assert welcomes, "no welcome"
    assert all(w.get("recovered") is True for w in welcomes[1:]), \
        f"a reconnect did not recover: {[(w.get('recovered'), w['offset']) for w in welcomes]}"
    events = [f for f in frames if f["type"] in EVENT_TYPES]
    offsets = [e["offset"] for e in events]
    first = min(expected) if expected else 1
    assert offsets == sorted(expected), (
        f"offsets not exactly {first}..{max(expected, default=0)}: "
        f"missing {sorted(set(expected) - set(offsets))[:10]}, "
        f"duplicated {sorted(o for o in set(offsets) if offsets.count(o) > 1)[:10]}, order ok: {offsets == sorted(offsets)}")
    for event in events:
        assert event["epoch"] == epoch, event
        assert event["message"] == expected[event["offset"]], event


async def wait_until(check: Callable[[], bool | Awaitable[bool]], timeout: float, what: str) -> float:
    """:func:`eventually`, returning how long it took."""
    started = time.monotonic()
    await eventually(check, timeout=timeout, interval=0.05, what=what)
    return time.monotonic() - started
