"""SSE on a cluster (asyncapi.yaml ``sseStream``, openapi.yaml ``createSseTicket`` /
``openSseStream`` / ``sendSseMessage``): two ``livegate serve`` processes on one Redis, alone
and behind Debian's nginx with its default ``proxy_buffering on`` (round robin, one worker:
consecutive requests alternate between the two processes).

* a ticket issued by one process opens a stream on the other, once, even when two
  processes race for it;
* a client message POSTed to the process that does not hold the stream reaches it (through
  the relay) and is answered on the stream; another user's, an unknown and a closed
  connection are 404 there too;
* through nginx every event arrives before the next one is published (``X-Accel-Buffering:
  no`` defeats the proxy's buffering), a POST that nginx sends to the other process is
  answered on the stream, and the closing ``event: close`` passes through.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from livegate.testing.nginx import Nginx
from livegate.testing.process import GatewayProcess
from livegate.testing.redis_server import RedisServer
from livegate.testing.sse import SseClient, SseRefused
from tests.scale._support import eventually, notification, publish_ok, start_gateways, user_name

pytestmark = [pytest.mark.redis, pytest.mark.xdist_group("scale-sse")]


@dataclass
class SseCluster:
    gateways: list[GatewayProcess]
    nginx: Nginx


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SseCluster]:
    base: Path = tmp_path_factory.mktemp("sse-cluster")
    with RedisServer() as redis:
        gateways = start_gateways(base, 2, {"LIVEGATE_REDIS_URL": redis.url})
        try:
            with Nginx([gw.port for gw in gateways], buffering=True) as nginx:
                yield SseCluster(gateways, nginx)
        finally:
            for gw in gateways:
                gw.kill()



async def test_a_ticket_from_one_process_opens_a_stream_on_the_other_once(cluster: SseCluster) -> None:
    one, other = cluster.gateways
    user = user_name("ticket")
    async with SseClient(one.http_url) as issuer, SseClient(other.http_url) as sse:
        ticket = await issuer.ticket(one.token(user))
        await sse.open(ticket=ticket)
        assert (await sse.next_message())["userId"] == user
        for gw in (one, other):
            async with SseClient(gw.http_url) as again:
                with pytest.raises(SseRefused) as refused:
                    await again.open(ticket=ticket)
                assert (refused.value.status, refused.value.problem["code"]) == (401, "ticket_invalid")
        # Two processes racing for one ticket: exactly one stream opens.
        raced = await issuer.ticket(one.token(user))
        clients = [SseClient(gw.http_url) for gw in (one, other)]
        try:
            outcomes = await asyncio.gather(*(c.open(ticket=raced) for c in clients), return_exceptions=True)
            assert sorted(type(o).__name__ for o in outcomes) == ["Response", "SseRefused"], outcomes
        finally:
            for client in clients:
                await client.aclose()


async def test_a_message_posted_to_the_other_process_is_answered_on_the_stream(cluster: SseCluster) -> None:
    holder, other = cluster.gateways
    user = user_name("post")
    token = holder.token(user)
    async with SseClient(holder.http_url) as sse, SseClient(other.http_url) as via_other:
        await sse.open(token)
        await sse.next_message()
        connection = sse.connection_id
        assert connection is not None
        response = await via_other.post({"type": "ping", "id": "across"}, token, connection_id=connection)
        assert response.status_code == 202, response.text
        assert (await sse.messages_until("pong"))[-1]["id"] == "across"
        fresh = other.token(user, ttl_seconds=3600)
        response = await via_other.post({"type": "refresh", "id": "r", "token": fresh}, token, connection_id=connection)
        assert response.status_code == 202
        assert (await sse.messages_until("refreshed"))[-1]["id"] == "r"
        await via_other.post("{nope", token, connection_id=connection)
        assert (await sse.messages_until("error"))[-1]["code"] == "bad_json"
        for who, target in ((other.token(user_name("mallory")), connection),
                            (token, connection[:-4] + "0000")):  # another user's / an unknown one on that node
            refused = await via_other.post({"type": "ping"}, who, connection_id=target)
            assert (refused.status_code, refused.json()["code"]) == (404, "not_found")
        await sse.close_stream()

        async def closed_there() -> bool:
            answer = await via_other.post({"type": "ping"}, token, connection_id=connection)
            return answer.status_code == 404

        await eventually(closed_there, timeout=10, interval=0.05, what="the closed connection is not found")


async def test_through_nginx_every_event_arrives_before_the_next_is_published(cluster: SseCluster) -> None:
    one, other = cluster.gateways
    nginx = cluster.nginx
    user = user_name("nginx")
    token = one.token(user)
    async with SseClient(nginx.http_url) as sse:
        await sse.open(token)  # the ticket and the GET: two requests, so two processes
        welcome = await sse.next_message()
        for i in range(30):
            (position,) = await publish_ok((one, other)[i % 2], [notification(user, f"n{i}")])
            event = await sse.next_event(timeout=5)  # before the next publish: nothing held back
            assert (event.event, event.id) == ("notification", f"{position[0]}:{position[1]}")
            assert position[1] == welcome["offset"] + i + 1
        before = len(nginx.access_entries())
        for i in range(2):  # consecutive requests alternate: one of them lands on the other process
            response = await sse.post({"type": "ping", "id": f"lb{i}"}, token)
            assert response.status_code == 202, response.text
            assert (await sse.messages_until("pong"))[-1]["id"] == f"lb{i}"
        posts = [e for e in nginx.access_entries()[before:] if e["method"] == "POST"]
        assert len({e["upstream"] for e in posts}) == 2, posts
        # A refused refresh closes the stream; `event: close` passes through and ends it.
        await sse.post({"type": "refresh", "token": one.token(user_name("eve"))}, token)
        error, close = await sse.messages_until("close")
        assert (error["code"], close["code"]) == ("token_subject_mismatch", 4401)
        with pytest.raises(EOFError):
            await sse.next_event()
