"""What the SSE wire adds to the endpoint (openapi.yaml ``createSseTicket``, ``openSseStream``,
``sendSseMessage``; asyncapi.yaml ``sseStream`` and its ``x-sse`` rules), through a real
gateway and httpx streaming. The endpoint's own behaviour over SSE is the conformance suite
(test_ws_wires.py); the cluster (tickets and POSTs across processes, nginx) is
tests/scale/test_sse_cluster.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from livegate.testing.gateway import RunningGateway, running_gateway
from livegate.testing.spec_validation import assert_valid_message, schema_errors
from livegate.testing.sse import SseClient, SseRefused

from .conftest import note


@pytest.fixture
async def sse(gateway: RunningGateway) -> AsyncIterator[SseClient]:
    async with SseClient(gateway.http_url) as client:
        yield client


def problem(refused: SseRefused | httpx.Response, status: int, code: str) -> dict[str, Any]:
    body = refused.problem if isinstance(refused, SseRefused) else refused.json()
    got = refused.status if isinstance(refused, SseRefused) else refused.status_code
    assert (got, body["code"]) == (status, code), body
    assert schema_errors(body, "Problem") == [], body
    return body



async def offsets(sse: SseClient, count: int) -> list[int]:
    got = []
    while len(got) < count:
        message = await sse.next_message()
        if message["type"] != "welcome" and "offset" in message:
            got.append(message["offset"])
    return got


# -- tickets -------------------------------------------------------------------------------------


async def test_a_ticket_opens_one_stream_once_bound_to_the_tokens_user_and_expiry(gateway, sse) -> None:
    now = time.time()
    token = gateway.token("alice", ttl_seconds=600, now=now)
    async with gateway.http("alice") as client:
        response = await client.post("/v1/sse/tickets", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and schema_errors(response.json(), "SseTicket") == []
    body = response.json()
    assert now < datetime.fromisoformat(body["expiresAt"]).timestamp() <= time.time() + 30
    assert gateway.token("alice") not in str(response.request.url)
    await sse.open(ticket=body["ticket"])
    welcome = await sse.next_message()
    assert welcome["type"] == "welcome" and welcome["userId"] == "alice"
    assert datetime.fromisoformat(welcome["expiresAt"]).timestamp() == pytest.approx(round(now + 600, 3))
    async with SseClient(gateway.http_url) as again:
        with pytest.raises(SseRefused) as refused:
            await again.open(ticket=body["ticket"])
        problem(refused.value, 401, "ticket_invalid")
        with pytest.raises(SseRefused) as unknown:
            await again.open(ticket="tk_never-issued")
        problem(unknown.value, 401, "ticket_invalid")


async def test_a_ticket_expires_with_its_deadline(gateway, sse) -> None:
    # A token that expires in 1.5 s gets a ticket that expires with it (not 30 s).
    ticket = await sse.ticket(gateway.token("alice", ttl_seconds=1.5))
    async with gateway.http() as client:
        refused = await client.post("/v1/sse/tickets")
    problem(refused, 401, "unauthorized")
    await asyncio.sleep(1.6)  # past the ticket's known deadline (no race: nothing else to wait for)
    with pytest.raises(SseRefused) as expired:
        await sse.open(ticket=ticket)
    problem(expired.value, 401, "ticket_invalid")


async def test_bearer_instead_of_a_ticket_and_refusals_are_problems(gateway, sse) -> None:
    await sse.open(gateway.token("bob"), bearer=True)
    assert (await sse.next_message())["userId"] == "bob"
    async with SseClient(gateway.http_url) as other:
        with pytest.raises(SseRefused) as missing:
            await other.open()
        problem(missing.value, 401, "unauthorized")
        with pytest.raises(SseRefused) as bad:
            await other.open(gateway.token("bob") + "x", bearer=True)
        assert "token_signature_invalid" in problem(bad.value, 401, "unauthorized")["detail"]


# -- the response --------------------------------------------------------------------------------


async def test_headers_retry_and_keepalive(tmp_path: Path) -> None:
    async with (running_gateway(tmp_path, heartbeat_interval_seconds=0.2, sse_retry_ms=1500) as gw,
                httpx.AsyncClient(base_url=gw.http_url, timeout=5) as client):
        headers = {"Authorization": f"Bearer {gw.token('alice')}", "Accept-Encoding": "gzip, br"}
        async with client.stream("GET", "/v1/sse", headers=headers) as response:
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            assert "content-encoding" not in response.headers
            assert response.headers["livegate-connection-id"].startswith("s-")
            lines = response.aiter_lines()
            assert await anext(lines) == "retry: 1500"
            async with asyncio.timeout(5):
                seen = [line async for line in _until(lines, ": keepalive")]
            assert any(line.startswith("event: welcome") for line in seen)


async def _until(lines: AsyncIterator[str], stop: str) -> AsyncIterator[str]:
    async for line in lines:
        yield line
        if line == stop:
            return


async def test_each_event_is_one_sse_event_with_type_id_and_the_websockets_json(gateway, sse) -> None:
    await sse.open(gateway.token("alice"))
    welcome = await sse.next_message()
    results = await gateway.publish("alice", note("one"), {"type": "generationProgress", "generationId": "g",
                                                            "fraction": 0.5})
    first, second = await sse.next_event(), await sse.next_event()
    assert (first.event, first.id) == ("notification", f"{results[0]['epoch']}:1")
    assert (second.event, second.id) == ("generationProgress", f"{results[0]['epoch']}:2")
    assert sse.last_event_id == f"{welcome['epoch']}:2"
    await sse.post({"type": "ping", "id": "p"}, gateway.token("alice"))
    pong = await sse.next_event()
    assert (pong.event, pong.id) == ("pong", None)  # control frames carry no id: they are not resumable
    assert sse.last_event_id == f"{welcome['epoch']}:2"


@pytest.mark.parametrize("text_deltas", [True, False], ids=["textDeltas", "legacy"])
async def test_text_deltas_are_asked_for_with_a_query_parameter(gateway, sse, text_deltas: bool) -> None:
    """asyncapi.yaml ``x-sse.textDeltas``: ``textDeltas=true`` is ``auth.textDeltas``; without
    it the stream carries the deprecated whole text, as for a WebSocket that does not ask."""
    await sse.open(gateway.token("alice"), query={"textDeltas": "true"} if text_deltas else None)
    await sse.next_message()
    got = []
    for fraction, offset, delta in ((0.1, 0, "Hel"), (0.2, 3, "lo")):  # one at a time: no conflation
        await gateway.publish("alice", {"type": "generationProgress", "generationId": "g", "fraction": fraction,
                                        "textOffset": offset, "textDelta": delta})
        got.append(assert_valid_message(await sse.next_message()))
    first, second = got
    if text_deltas:
        assert [(m["textOffset"], m["textDelta"]) for m in (first, second)] == [(0, "Hel"), (3, "lo")]
    else:
        assert [m["partialText"] for m in (first, second)] == ["Hel", "Hello"]
    with pytest.raises(SseRefused) as refused:
        await sse.open(gateway.token("alice"), query={"textDeltas": "yes"})
    problem(refused.value, 400, "validation_failed")


# -- resume --------------------------------------------------------------------------------------


@pytest.mark.parametrize("in_query", [False, True], ids=["Last-Event-ID", "lastEventId"])
async def test_resume_replays_exactly_after_the_position_then_goes_live(gateway, sse, in_query: bool) -> None:
    results = await gateway.publish("alice", *[note(f"n{i}") for i in range(40)])
    epoch = results[0]["epoch"]
    await sse.open(gateway.token("alice"), last_event_id=f"{epoch}:25", in_query=in_query)
    welcome = await sse.next_message()
    assert welcome["recovered"] is True and welcome["offset"] == 40
    assert sse.last_event_id is None  # a recovered welcome moves no position
    publishing = asyncio.create_task(gateway.publish("alice", *[note(f"live{i}") for i in range(5)]))
    assert await offsets(sse, 20) == list(range(26, 46))  # no gap, no duplicate at the seam
    await publishing


async def test_an_eventsource_reconnect_resumes_from_the_last_id(gateway, sse) -> None:
    await sse.open(gateway.token("alice"))
    await sse.next_message()
    await gateway.publish("alice", *[note(f"a{i}") for i in range(3)])
    assert await offsets(sse, 3) == [1, 2, 3]
    await sse.close_stream()  # the network drops
    await gateway.publish("alice", *[note(f"b{i}") for i in range(2)])
    await sse.open(gateway.token("alice"), last_event_id=sse.last_event_id)  # what EventSource sends
    assert (await sse.next_message())["recovered"] is True
    assert await offsets(sse, 2) == [4, 5]


async def test_a_position_that_cannot_be_honoured_is_recovered_false_with_its_own_id(gateway, sse) -> None:
    await gateway.publish("alice", note("x"))
    await sse.open(gateway.token("alice"), last_event_id="another-epoch:3")
    event = await sse.next_event()
    welcome = assert_valid_message(event.data, "sse")
    assert welcome["recovered"] is False and event.id == f"{welcome['epoch']}:{welcome['offset']}"


@pytest.mark.parametrize("value", ["nonsense", "epoch:", ":12", "e:-1", "e:1.5", "e:" + "9" * 19, "x" * 97 + ":1"])
async def test_a_malformed_last_event_id_is_a_400_problem(gateway, sse, value: str) -> None:
    for in_query in (False, True):
        with pytest.raises(SseRefused) as refused:
            await sse.open(gateway.token("alice"), last_event_id=value, in_query=in_query)
        body = problem(refused.value, 400, "validation_failed")
        where = "$.query.lastEventId" if in_query else "$.headers.Last-Event-ID"
        assert [e["path"] for e in body["errors"]] == [where]


async def test_a_resume_timestamp_out_of_bounds_is_a_400_problem(gateway, sse) -> None:
    """openapi.yaml ``openSseStream`` ``lastEventTimestamp``: 1 to 40 characters."""
    results = await gateway.publish("alice", note("x"))
    with pytest.raises(SseRefused) as refused:
        await sse.open(gateway.token("alice"), last_event_id=f"{results[0]['epoch']}:1",
                       query={"lastEventTimestamp": "x" * 41})
    body = problem(refused.value, 400, "validation_failed")
    assert [e["path"] for e in body["errors"]] == ["$.query.lastEventTimestamp"]


# -- client messages -----------------------------------------------------------------------------


async def test_posted_messages_are_answered_on_the_stream(gateway, sse) -> None:
    token = gateway.token("alice")
    await sse.open(token)
    await sse.next_message()
    for body, kind, field in (({"type": "ping", "id": "p1"}, "pong", "id"), ("{nope", "error", "code"),
                              ({"type": "ping", "id": 5}, "error", "path"),
                              ({"type": "cancelEverything"}, "error", "code")):
        response = await sse.post(body, token)
        assert response.status_code == 202 and response.content == b""
        answer = (await sse.messages_until(kind))[-1]
        assert field in answer
    refreshed_token = gateway.token("alice", ttl_seconds=3600)
    assert (await sse.post({"type": "refresh", "id": "r1", "token": refreshed_token}, token)).status_code == 202
    refreshed = (await sse.messages_until("refreshed"))[-1]
    assert refreshed["id"] == "r1"


async def test_another_users_or_an_unknown_connection_is_404(gateway, sse) -> None:
    await sse.open(gateway.token("alice"))
    await sse.next_message()
    for token, connection in ((gateway.token("mallory"), sse.connection_id),
                              (gateway.token("alice"), "s-00000000-000000000000"),
                              (gateway.token("alice"), "c-not-an-sse-id")):
        response = await sse.post({"type": "ping", "id": "p"}, token, connection_id=connection)
        problem(response, 404, "not_found")
    response = await sse.http.post(f"/v1/sse/{sse.connection_id}/messages", json={"type": "ping"})
    problem(response, 401, "unauthorized")
    # nothing reached alice's stream
    await sse.post({"type": "ping", "id": "mine"}, gateway.token("alice"))
    assert (await sse.next_message())["id"] == "mine"


async def test_a_refresh_for_another_user_closes_4401(gateway, sse) -> None:
    token = gateway.token("alice")
    await sse.open(token)
    await sse.next_message()
    await sse.post({"type": "refresh", "id": "r", "token": gateway.token("eve")}, token)
    (error, close) = await sse.messages_until("close")
    assert error["code"] == "token_subject_mismatch" and close == {"type": "close", "code": 4401,
                                                                   "reason": "token_subject_mismatch"}
    with pytest.raises(EOFError):
        await sse.next_event()
    # the connection is gone: its id is not found any more
    problem(await sse.post({"type": "ping"}, token), 404, "not_found")


# -- limits and expiry ---------------------------------------------------------------------------


async def test_token_expiry_warns_then_closes_4402_unless_refreshed(tmp_path: Path) -> None:
    async with running_gateway(tmp_path, token_expiring_lead_seconds=60, token_grace_seconds=0.2) as gw:
        async with SseClient(gw.http_url) as sse:
            token = gw.token("alice", ttl_seconds=1.0)
            await sse.open(token)
            assert [m["type"] for m in await sse.messages_until("tokenExpiring")] == ["welcome", "tokenExpiring"]
            assert [m["type"] for m in await sse.messages_until("close")][-2:] == ["error", "close"]
            assert sse.ended is False
            with pytest.raises(EOFError):
                await sse.next_event()
        async with SseClient(gw.http_url) as sse:
            token = gw.token("alice", ttl_seconds=1.0)
            await sse.open(token)
            await sse.messages_until("tokenExpiring")
            fresh = gw.token("alice", ttl_seconds=600)
            await sse.post({"type": "refresh", "id": "r", "token": fresh}, token)
            await sse.messages_until("refreshed")
            await asyncio.sleep(1.3)  # past the old token's expiry + grace: the stream must stay
            assert (await sse.post({"type": "ping", "id": "still"}, fresh)).status_code == 202
            assert (await sse.messages_until("pong"))[-1]["id"] == "still"


async def test_too_many_connections_is_an_error_then_close_4003(tmp_path: Path) -> None:
    async with (running_gateway(tmp_path, max_connections_per_user=1) as gw, SseClient(gw.http_url) as first,
                SseClient(gw.http_url) as second):
        await first.open(gw.token("alice"))
        await first.next_message()
        await second.open(gw.token("alice"))
        error, close = await second.messages_until("close")
        assert error["code"] == "too_many_connections" and close["code"] == 4003
