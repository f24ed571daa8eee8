"""livegate.client.LivegateClient resumes with the ``timestamp`` of the event at its position
(asyncapi.yaml ``StreamPosition.timestamp``), exactly as the server sent it: over the
WebSocket in ``auth.resume`` (recorded by a relay in front of a real gateway: the frames the
gateway receives), over SSE as the ``lastEventTimestamp`` query parameter next to
``Last-Event-ID`` (recorded by a TCP proxy: the request the gateway receives)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import websockets
from websockets.asyncio.server import ServerConnection

from livegate.protocol import messages
from livegate.testing.gateway import running_gateway
from livegate.testing.tcp_proxy import ChaosProxy
from tests.test_client import Recorder, note


class RecordingRelay:
    """A WebSocket relay in front of a gateway: records every text frame its clients send (what
    the gateway receives) and closes every client link on demand with a close code."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.sent: list[dict[str, Any]] = []  # every client frame, decoded, in order
        self.clients: list[ServerConnection] = []
        self.port = 0
        self._server: Any = None

    async def __aenter__(self) -> RecordingRelay:
        self._server = await websockets.serve(self._relay, "127.0.0.1", 0, compression=None, max_size=2**24)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await asyncio.wait_for(self._server.wait_closed(), 10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def auths(self) -> list[dict[str, Any]]:
        return [m for m in self.sent if m.get("type") == "auth"]

    async def close_clients(self, code: int, reason: str) -> None:
        for client in list(self.clients):
            await client.close(code, reason)

    async def _relay(self, client: ServerConnection) -> None:
        self.clients.append(client)
        try:
            async with websockets.connect(self.upstream, compression=None, max_size=2**24) as upstream:
                async def to_gateway() -> None:
                    async for frame in client:
                        self.sent.append(json.loads(frame))
                        await upstream.send(frame)

                async def to_client() -> None:
                    async for frame in upstream:
                        await client.send(frame)
                    await client.close(upstream.close_code or 1011, upstream.close_reason or "")

                tasks = [asyncio.create_task(to_gateway()), asyncio.create_task(to_client())]
                _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.clients.remove(client)


def stream_events(rec: Recorder) -> dict[int, dict[str, Any]]:
    """The raw stream events the client received, by offset (the timestamps as sent)."""
    events = (json.loads(frame) for frame in rec.frames)
    return {e["offset"]: e for e in events if e.get("type") in {"notification", "generationProgress",
                                                                "generationUpdate"}}


async def test_a_reconnect_sends_the_timestamp_of_the_last_event_received(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, RecordingRelay(gw.ws_url) as relay, \
            Recorder(relay.url, lambda: gw.token("alice")) as rec:
        await rec.until(lambda: rec.welcomes, what="welcome")
        assert "resume" not in relay.auths()[0]  # a first connection has no position
        await gw.gateway.publisher.publish([("alice", note(str(i))) for i in range(3)])
        await rec.until(lambda: len(rec.events) == 3, what="three events")
        received = stream_events(rec)[3]["timestamp"]
        assert rec.client.position == messages.StreamPosition(epoch=rec.welcomes[0].epoch, offset=3,
                                                              timestamp=received)

        await relay.close_clients(4000, "server restart")  # a reconnect code: resume
        await rec.until(lambda: len(rec.welcomes) == 2, what="a welcome after the reconnect")
        assert relay.auths()[1]["resume"] == {"epoch": rec.welcomes[0].epoch, "offset": 3, "timestamp": received}
        assert rec.welcomes[1].recovered is True and rec.client.close_codes == [4000]


async def test_a_given_position_is_sent_as_given_and_a_reset_one_without_timestamp(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, RecordingRelay(gw.ws_url) as relay:
        await gw.gateway.publisher.publish([("alice", note(str(i))) for i in range(2)])
        async with Recorder(relay.url, lambda: gw.token("alice")) as first:
            await first.until(lambda: first.welcomes, what="welcome")
        epoch = first.welcomes[0].epoch
        # A position stored by the application, with the timestamp the client reported: resumed as is.
        stored = messages.StreamPosition(epoch=epoch, offset=1, timestamp="2026-11-25T18:30:01.000Z")
        async with Recorder(relay.url, lambda: gw.token("alice"), resume=stored) as rec:
            await rec.until(lambda: rec.welcomes, what="welcome")
            assert relay.auths()[-1]["resume"] == msgspec.to_builtins(stored)
        # One stored before timestamps existed (or taken from a welcome): no timestamp is invented.
        async with Recorder(relay.url, lambda: gw.token("alice"),
                            resume=messages.StreamPosition(epoch="gone", offset=7)) as rec:
            await rec.until(lambda: rec.welcomes, what="welcome")
            assert relay.auths()[-1]["resume"] == {"epoch": "gone", "offset": 7}
            assert rec.welcomes[0].recovered is False  # another epoch: reset to the welcome's position
            assert rec.client.position == messages.StreamPosition(epoch=epoch, offset=rec.welcomes[0].offset)

            await relay.close_clients(4000, "server restart")
            await rec.until(lambda: len(rec.welcomes) == 2, what="a welcome after the reconnect")
            # The position is the welcome's, not an event received: resumed without a timestamp.
            assert relay.auths()[-1]["resume"] == {"epoch": epoch, "offset": 2}


def sse_requests(proxy: ChaosProxy) -> list[tuple[str, dict[str, str]]]:
    """The ``GET /v1/sse`` requests on the proxy's open links: (target, lower-cased headers)."""
    found = []
    for link in proxy.open_links():
        head = link.head.decode("latin-1")
        if head.startswith("GET /v1/sse"):
            request_line, *lines = head.split("\r\n\r\n", 1)[0].split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in lines if ": " in line)
            found.append((request_line.split(" ")[1], headers))
    return found


async def test_over_sse_a_reconnect_sends_last_event_timestamp(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw:
        proxy = await ChaosProxy([gw.port]).start()
        try:
            async with Recorder(f"ws://127.0.0.1:{proxy.port}/v1/ws", lambda: gw.token("alice"),
                                transport="sse") as rec:
                await rec.until(lambda: rec.welcomes, what="welcome")
                ((target, _headers),) = sse_requests(proxy)
                assert "lastEventTimestamp" not in target
                await gw.gateway.publisher.publish([("alice", note(str(i))) for i in range(3)])
                await rec.until(lambda: len(rec.events) == 3, what="three events")
                received = stream_events(rec)[3]["timestamp"]

                proxy.cut(len(proxy.open_links()), random.Random(5))  # no close event: reconnect
                await rec.until(lambda: len(rec.welcomes) == 2, what="a welcome after the cut")
                ((target, headers),) = sse_requests(proxy)
                query = parse_qs(urlsplit(target).query)
                assert headers["last-event-id"] == f"{rec.welcomes[0].epoch}:3"
                assert query["lastEventTimestamp"] == [received] and query["textDeltas"] == ["true"]
                assert rec.welcomes[1].recovered is True
        finally:
            with contextlib.suppress(Exception):
                await proxy.stop()
