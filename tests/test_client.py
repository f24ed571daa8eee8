"""livegate.client.LivegateClient against real gateways: auth, typed events, resume after
4001/4000 with backoff and jitter, token refresh through the callback, terminal codes."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path
from typing import Any, Self

import msgspec
import pytest

from livegate.client import (
    CancelRefused,
    ClientStopped,
    LivegateClient,
    close_code_for_refusal,
    sse_url_for,
)
from livegate.protocol import http, messages
from livegate.testing.gateway import running_gateway
from livegate.testing.process import GatewayProcess
from livegate.testing.redis_server import free_port
from livegate.testing.spec_validation import message_errors
from livegate.testing.tcp_proxy import ChaosProxy


class Recorder:
    """Runs a client and keeps everything it yields; checks every raw frame against the spec."""

    def __init__(self, url: str, token: Any, **kwargs: Any) -> None:
        self.frames: list[str] = []
        self.invalid: list[str] = []
        self.client = LivegateClient(url, token, backoff_initial=0.05, backoff_max=0.3, on_frame=self._frame,
                                     **kwargs)
        self.items: list[Any] = []
        self.stopped: ClientStopped | None = None
        self._task: asyncio.Task[None] | None = None

    def _frame(self, frame: str) -> None:
        self.frames.append(frame)
        errors = message_errors(frame)
        if errors:
            self.invalid.append(f"{errors}: {frame[:200]}")

    async def __aenter__(self) -> Self:
        await self.client.__aenter__()
        self._task = asyncio.create_task(self._consume())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()
        if self._task is not None:
            self._task.cancel()
            with _suppress():
                await self._task
        assert not self.invalid, self.invalid

    async def _consume(self) -> None:
        try:
            async for item in self.client.messages():
                self.items.append(item)
        except ClientStopped as exc:
            self.stopped = exc

    @property
    def welcomes(self) -> list[messages.Welcome]:
        return [i for i in self.items if isinstance(i, messages.Welcome)]

    @property
    def events(self) -> list[Any]:
        return [i for i in self.items if not isinstance(i, (messages.Welcome, messages.Error))]

    async def until(self, predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; close codes {self.client.close_codes}, "
                                     f"stopped {self.stopped!r}, items {self.items[-3:]}")
            await asyncio.sleep(0.01)


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


def note(text: str) -> http.NotificationInput:
    return http.NotificationInput(level="info", message=text)


async def test_authenticates_and_yields_typed_events(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, Recorder(gw.ws_url, gw.token("alice")) as rec:
        await rec.until(lambda: rec.welcomes, what="welcome")
        welcome = rec.welcomes[0]
        assert welcome.user_id == "alice" and welcome.offset == 0 and rec.client.position is not None
        publisher = gw.gateway.publisher
        await publisher.publish([("alice", note("hello")),
                                 ("alice", http.GenerationProgressInput(generation_id="g1", fraction=0.5)),
                                 ("bob", note("not for alice"))])
        await rec.until(lambda: len(rec.events) == 2, what="two events")
        first, second = rec.events
        assert isinstance(first, messages.Notification) and first.message == "hello" and first.offset == 1
        assert isinstance(second, messages.GenerationProgress) and second.generation_id == "g1"
        assert second.fraction == 0.5 and second.offset == 2
        # The position carries the timestamp of the event at it, exactly as the frame had it.
        stamp = json.loads(rec.frames[-1])["timestamp"]
        assert rec.client.position == messages.StreamPosition(epoch=welcome.epoch, offset=2, timestamp=stamp)


async def test_resumes_without_loss_after_slow_consumer_close(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, queue_max_bytes=40_000) as gw, Recorder(gw.ws_url, gw.token("alice")) as rec:
        await rec.until(lambda: rec.welcomes, what="welcome")
        # One burst with no await in between: the server's queue for this connection overflows.
        await gw.gateway.publisher.publish([("alice", note(f"{i}:" + "x" * 500)) for i in range(200)])
        await rec.until(lambda: len(rec.events) == 200, what="all 200 events")
        assert rec.client.close_codes[:1] == [4001]
        assert [w.recovered for w in rec.welcomes] == [messages.UNSET, True]
        assert [e.offset for e in rec.events] == list(range(1, 201)), "each event once, in order"
        assert [e.message.split(":")[0] for e in rec.events] == [str(i) for i in range(200)]
        assert rec.stopped is None and len(rec.client.reconnect_delays) == 1
        assert 0 <= rec.client.reconnect_delays[0] <= 0.1  # first backoff: U(0, 2 * 0.05)


async def test_reconnects_after_server_restart_4000(tmp_path: Path) -> None:
    gw = await asyncio.to_thread(GatewayProcess(tmp_path).start)
    try:
        async with Recorder(gw.ws_url, lambda: gw.token("alice")) as rec:
            await rec.until(lambda: rec.welcomes, what="welcome")
            await asyncio.to_thread(_publish, gw, "alice", 3)
            await rec.until(lambda: len(rec.events) == 3, what="events before the restart")
            await asyncio.to_thread(gw.restart)
            await rec.until(lambda: len(rec.welcomes) == 2, timeout=20, what="a welcome after the restart")
            assert rec.client.close_codes[0] == 4000
            # The memory bus lost its history: a new epoch, and the client is told (not a silent gap).
            assert rec.welcomes[1].recovered is False and rec.welcomes[1].epoch != rec.welcomes[0].epoch
            await asyncio.to_thread(_publish, gw, "alice", 2)
            await rec.until(lambda: len(rec.events) == 5, what="events after the restart")
            assert [e.offset for e in rec.events] == [1, 2, 3, 1, 2]
            position = rec.client.position
            assert position is not None and (position.epoch, position.offset) == (rec.welcomes[1].epoch, 2)
    finally:
        gw.kill()


def _publish(gw: GatewayProcess, user: str, count: int) -> None:
    import httpx

    response = httpx.post(f"{gw.http_url}/v1/events", headers={"Authorization": f"Bearer {gw.service_token}"},
                          json={"events": [{"userId": user, "event": {"type": "notification", "level": "info",
                                                                        "message": str(i)}} for i in range(count)]},
                          timeout=10)
    response.raise_for_status()


async def test_refreshes_the_token_through_the_callback(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, token_expiring_lead_seconds=1.0, token_grace_seconds=0.3) as gw:
        issued: list[float] = []

        async def token() -> str:
            ttl = 1.5 if not issued else 60.0
            issued.append(ttl)
            return gw.token("alice", ttl_seconds=ttl)

        started = time.monotonic()
        async with Recorder(gw.ws_url, token) as rec:
            await rec.until(lambda: len(issued) == 2, timeout=5, what="a refresh token from the callback")
            await rec.until(lambda: any('"refreshed"' in f for f in rec.frames), timeout=5, what="refreshed")
            # Past the first token's expiry plus grace: the connection is still the same one.
            await rec.until(lambda: time.monotonic() - started > 2.0, timeout=5, what="the first expiry")
            await gw.gateway.publisher.publish([("alice", note("still connected"))])
            await rec.until(lambda: rec.events, what="an event after the first expiry")
            assert rec.client.close_codes == [] and len(rec.welcomes) == 1
            assert any('"tokenExpiring"' in f for f in rec.frames)


async def test_stops_on_a_refused_fixed_token(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, Recorder(gw.ws_url, "not-a-jwt") as rec:
        await rec.until(lambda: rec.stopped is not None, what="the client to stop")
        assert rec.stopped is not None and rec.stopped.close_code == 4401
        assert rec.client.close_codes == [4401] and rec.welcomes == []
        errors = [i for i in rec.items if isinstance(i, messages.Error)]
        assert [e.code for e in errors] == ["token_malformed"]


async def test_asks_the_callback_once_more_then_stops(tmp_path: Path) -> None:
    calls: list[int] = []

    def token() -> str:
        calls.append(1)
        return "still-not-a-jwt"

    async with running_gateway(tmp_path) as gw, Recorder(gw.ws_url, token) as rec:
        await rec.until(lambda: rec.stopped is not None, what="the client to stop")
        assert rec.client.close_codes == [4401, 4401] and len(calls) == 2


async def test_stops_on_terminal_forbidden_even_with_a_token_callback(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, allowed_origins=("https://app.example",)) as gw, \
            Recorder(gw.ws_url, lambda: gw.token("alice")) as rec:
        await rec.until(lambda: rec.stopped is not None, what="the client to stop")
        assert rec.stopped is not None and rec.stopped.close_code == 4403
        assert rec.client.close_codes == [4403]


async def test_backoff_has_jitter_grows_and_is_bounded() -> None:
    url = f"ws://127.0.0.1:{free_port()}/v1/ws"  # nothing listens there
    client = LivegateClient(url, "t", backoff_initial=0.01, backoff_max=0.05, max_reconnects=8)
    async with client:
        with pytest.raises(ClientStopped, match="gave up after 8"):
            await client.next_message(timeout=10)
    delays = client.reconnect_delays
    assert len(delays) == 8
    for n, delay in enumerate(delays, start=1):
        assert 0 <= delay <= min(0.05, 0.01 * 2**n), (n, delay)
    assert len(set(delays)) == len(delays), "full jitter: no two sleeps alike"


async def test_too_many_connections_backs_off_at_least_five_seconds(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, max_connections_per_user=1) as gw, \
            Recorder(gw.ws_url, lambda: gw.token("alice")) as first:
        await first.until(lambda: first.welcomes, what="the first connection")
        async with Recorder(gw.ws_url, lambda: gw.token("alice")) as second:
            await second.until(lambda: second.client.reconnect_delays, what="a backoff after 4003")
            assert second.client.close_codes == [4003] and second.client.reconnect_delays[0] >= 5.0
            assert second.stopped is None and second.welcomes == []


async def test_cancels_over_the_stream_and_exposes_deadline_and_queue_position(tmp_path: Path) -> None:
    async with running_gateway(tmp_path) as gw, Recorder(gw.ws_url, gw.token("alice")) as watcher, \
            Recorder(gw.ws_url, gw.token("alice")) as other_tab:
        await watcher.until(lambda: watcher.welcomes and other_tab.welcomes, what="welcomes")
        async with gw.http("alice") as client:
            created = (await client.post("/v1/generations", json={
                "toolId": "demo", "inputs": {"durationSeconds": 20, "steps": 20}, "cancelAfterSeconds": 600})).json()
        gen_id = created["id"]

        def updates() -> list[messages.GenerationUpdate]:
            return [e for e in watcher.events if isinstance(e, messages.GenerationUpdate) and e.generation_id == gen_id]

        await watcher.until(lambda: [u for u in updates() if u.status == "running"], what="running")
        queued = updates()[0]
        assert queued.status == "queued" and queued.queue_position == 1  # typed fields of the contract
        assert queued.deadline_at is not msgspec.UNSET and queued.deadline_at.timestamp() > time.time() + 500

        result = await other_tab.client.cancel(gen_id)  # from the other connection of the user
        assert (result.generation_id, result.status) == (gen_id, "cancelled")
        await watcher.until(lambda: updates()[-1].status == "cancelled", what="the cancelled update")
        with pytest.raises(CancelRefused) as finished:
            await other_tab.client.cancel(gen_id)
        assert finished.value.code == "illegal_transition"
        with pytest.raises(CancelRefused) as unknown:
            await watcher.client.cancel("gen_unknown")
        assert unknown.value.code == "not_found"
        assert not [i for i in watcher.items + other_tab.items if isinstance(i, messages.Error)]  # answered, not queued


async def test_stops_after_a_transport_close_the_contract_marks_terminal(tmp_path: Path) -> None:
    """asyncapi.yaml ``x-transport-close-codes``: 1009 (``reconnect: false``) would only come back
    for the same frame, so the client stops instead of retrying it for ever."""
    async with running_gateway(tmp_path) as gw, Recorder(gw.ws_url, lambda: "x" * (4 * 1024 * 1024)) as rec:
        await rec.until(lambda: rec.stopped is not None, what="the client to stop")
        assert rec.stopped is not None and rec.stopped.close_code == 1009
        assert rec.client.close_codes == [1009]
async def test_sse_mode_resumes_exactly_after_a_cut_refreshes_and_pings_over_post(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, token_expiring_lead_seconds=1.0, token_grace_seconds=0.3) as gw:
        proxy = await ChaosProxy([gw.port]).start()  # the network between client and gateway
        issued: list[float] = []

        async def token() -> str:
            ttl = 1.5 if not issued else 60.0
            issued.append(ttl)
            return gw.token("alice", ttl_seconds=ttl)

        try:
            async with Recorder(f"ws://127.0.0.1:{proxy.port}/v1/ws", token, transport="sse") as rec:
                assert rec.client.sse_url == f"http://127.0.0.1:{proxy.port}/v1/sse"
                await rec.until(lambda: rec.welcomes, what="welcome")
                await gw.gateway.publisher.publish([("alice", note(str(i))) for i in range(3)])
                await rec.until(lambda: len(rec.events) == 3, what="three events")
                # tokenExpiring arrives on the stream; the refresh is POSTed; refreshed comes back.
                await rec.until(lambda: any('"refreshed"' in f for f in rec.frames), timeout=5, what="refreshed")
                pong = await rec.client.ping()
                assert isinstance(pong, messages.Pong)

                # Every link cut (no close event); events published meanwhile are replayed.
                proxy.cut(len(proxy.open_links()), random.Random(3))
                await gw.gateway.publisher.publish([("alice", note(str(i))) for i in range(3, 6)])
                await rec.until(lambda: len(rec.welcomes) == 2, what="a welcome after the cut")
                await gw.gateway.publisher.publish([("alice", note("6"))])
                await rec.until(lambda: len(rec.events) == 7, what="every event")
                assert [e.offset for e in rec.events] == list(range(1, 8)), "each event once, in order"
                assert [e.message for e in rec.events] == [str(i) for i in range(7)]
                assert rec.welcomes[1].recovered is True and rec.client.close_codes == []
        finally:
            await proxy.stop()


def test_sse_refusals_map_to_close_codes_and_urls_follow_the_websocket_url() -> None:
    assert close_code_for_refusal(401, "token_expired") == 4402
    assert close_code_for_refusal(401, "token_signature_invalid") == 4401
    assert close_code_for_refusal(401, "ticket_invalid") == 4401
    assert close_code_for_refusal(429, "too_many_connections") == 4003
    assert close_code_for_refusal(403, "origin_not_allowed") == 4403
    assert close_code_for_refusal(503, None) == 4006
    assert close_code_for_refusal(404, "not_found") is None
    assert sse_url_for("wss://gw.example/v1/ws") == "https://gw.example/v1/sse"
    assert sse_url_for("ws://127.0.0.1:8000/v1/ws") == "http://127.0.0.1:8000/v1/sse"
