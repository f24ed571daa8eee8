"""The sandbox in Chromium against two gateway processes behind a real load balancer.

The deployment of docs/scaling.md, for real: a ``redis-server`` (the user streams), a
PostgreSQL (records, outputs and the job queue), two ``livegate serve`` processes on both,
and ``nginx`` in front of them with plain round robin — no stickiness, so consecutive HTTP
requests of one page alternate between the processes and the page's socket sits on one of
them. nginx's access log names the backend of every request (``$upstream_addr``); that is
how the tests prove which process accepted what.

* A run started in the page is cancelled through the *other* process: round robin is
  steered so the run is accepted by the process that does not hold the page's socket, and
  the page's Cancel button sends the in-band ``cancel`` over that socket (no HTTP cancel in
  nginx's log). The page shows it Cancelled, and nothing of the run arrives after the
  cancelled update (a marker published afterwards arrives, the run's progress does not).
* Several runs, then the page reloaded: the history (``GET /v1/generations``, answered by
  both processes in turn) shows every run exactly once with its final status, and the
  outputs load whichever process serves them.
* Behind a second nginx that does not pass WebSocket upgrades, the page falls back to
  Server-Sent Events: a run's whole life arrives over SSE, and its pings, POSTed through
  round robin to both processes, are answered on the stream whichever holds it.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, expect

from livegate.testing.nginx import Nginx
from livegate.testing.postgres_server import PostgresServer
from livegate.testing.process import GatewayProcess
from livegate.testing.redis_server import RedisServer
from livegate.testing.spec_validation import assert_valid_message
from tests.browser.conftest import (
    Pages,
    assert_sent_frames_valid,
    debug_state,
    received_frames,
    run_demo,
    server_frames_valid,
    server_stream,
    sign_in,
    wait_live,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.xdist_group("browser-cluster"),
    pytest.mark.redis,
    pytest.mark.asyncio(loop_scope="module"),
]

LOG_WAIT_SECONDS = 10.0


@dataclass
class Cluster:
    gateways: tuple[GatewayProcess, GatewayProcess]
    lb: Nginx

    def upstream(self, gateway: GatewayProcess) -> str:
        return self.lb.upstream(gateway.port)

    def gateway_of(self, upstream: str) -> GatewayProcess:
        return next(g for g in self.gateways if self.upstream(g) == upstream)

    def other(self, upstream: str) -> GatewayProcess:
        return next(g for g in self.gateways if self.upstream(g) != upstream)

    def mark(self) -> int:
        """A position in the access log: ``served(..., since=mark)`` looks only after it."""
        return len(self.lb.access_entries())

    async def served(self, method: str, uri: re.Pattern[str], *, count: int = 1, since: int = 0) -> list[dict[str, Any]]:
        """The access-log entries (after ``since``) of ``method`` on a matching URI, once
        ``count`` are logged (nginx logs a request when its response is complete: bounded wait)."""
        deadline = time.monotonic() + LOG_WAIT_SECONDS
        while True:
            entries = self.lb.access_entries()[since:]
            found = [e for e in entries if e["method"] == method and uri.fullmatch(e["uri"])]
            if len(found) >= count or time.monotonic() > deadline:
                assert len(found) >= count, (method, uri.pattern, found, entries[-20:])
                return found
            await asyncio.sleep(0.02)  # polling the file nginx appends to

    async def socket_holder(self) -> GatewayProcess:
        """The one process holding an authenticated socket now (its ``livegate_connections``
        gauge; the tests of this module have one page open at a time)."""
        async with httpx.AsyncClient(timeout=5) as client:
            held = [gw for gw in self.gateways
                    if _gauge((await client.get(f"{gw.http_url}/metrics")).text, "livegate_connections") > 0]
        assert len(held) == 1, [gw.port for gw in held]
        return held[0]

    async def steer_next_request_to(self, gateway: GatewayProcess) -> None:
        """Round robin alternates strictly (one nginx worker, two backends): send probes
        through the balancer until one lands on the *other* backend, so that the next
        request goes to ``gateway``. Bounded: two probes always suffice."""
        async with httpx.AsyncClient(base_url=self.lb.http_url, timeout=5) as client:
            for _ in range(4):
                since = self.mark()
                assert (await client.get("/healthz")).status_code == 200
                (probe,) = await self.served("GET", re.compile(r"/healthz"), since=since)
                if probe["upstream"] != self.upstream(gateway):
                    return
        raise AssertionError("round robin did not alternate between the two backends")


def _gauge(exposition: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in exposition.splitlines() if line.startswith(name + " "))


@pytest.fixture(scope="module")
def cluster(postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    database_url = postgres_server.create_database("cluster_" + secrets.token_hex(4))
    root = tmp_path_factory.mktemp("cluster")
    with RedisServer() as redis:
        env = {"LIVEGATE_REDIS_URL": redis.url, "LIVEGATE_DATABASE_URL": database_url,
               "LIVEGATE_TAKEOVER_SECONDS": "3"}
        first = GatewayProcess(root / "gw1", env=env, startup_timeout=40, dev=True)  # sandbox sign-in
        second = GatewayProcess(root / "gw2", env=env, startup_timeout=40, dev=True)
        try:
            first.start()  # one after the other: the first one migrates the empty database
            second.start()
            with Nginx([first.port, second.port]) as lb:
                yield Cluster((first, second), lb)
        finally:
            second.kill()
            first.kill()


async def publish_marker(cluster: Cluster, user: str, message: str) -> None:
    async with httpx.AsyncClient(base_url=cluster.lb.http_url, timeout=10) as client:
        response = await client.post(
            "/v1/events", headers={"Authorization": f"Bearer {cluster.gateways[0].service_token}"},
            json={"events": [{"userId": user, "event": {"type": "notification", "level": "info",
                                                         "message": message}}]})
    response.raise_for_status()


async def generation_from(gateway: GatewayProcess, user: str, gen_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10,
                                 headers={"Authorization": f"Bearer {gateway.token(user)}"}) as client:
        response = await client.get(f"/v1/generations/{gen_id}")
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


async def test_a_run_accepted_by_one_process_is_cancelled_through_the_other(cluster: Cluster, pages: Pages) -> None:
    tab = await pages.new("alice")
    page = tab.page
    since = cluster.mark()
    await sign_in(tab, cluster.lb.http_url, "alice")
    holder = await cluster.socket_holder()
    await page.wait_for_load_state("networkidle")  # the page's start-up requests are done
    await cluster.steer_next_request_to(cluster.other(cluster.upstream(holder)))
    gen_id = await run_demo(page, duration=20, steps=20)
    run = page.locator(f".run[data-generation-id={gen_id}]")
    await expect(run.locator(".step")).to_have_text(re.compile(r"Step [2-9] of 20"))
    (created,) = await cluster.served("POST", re.compile(r"/v1/generations"), since=since)
    assert created["status"] == "202", created  # openapi.yaml createGeneration: accepted
    assert created["upstream"] != cluster.upstream(holder), (created, holder.port)

    # The page's own Cancel button: the in-band cancel over the socket the other process holds.
    await run.get_by_role("button", name="Cancel").click()
    await expect(run.locator(".status-badge")).to_have_text("Cancelled")
    await expect(run.locator(".cancel")).to_be_hidden()
    await expect(page.locator(f".history-item[data-generation-id={gen_id}]")).to_have_attribute(
        "data-status", "cancelled")
    answers = await received_frames(tab, lambda m: m["type"] == "cancelResult")
    assert [(a["generationId"], a["status"]) for a in answers] == [(gen_id, "cancelled")], answers
    assert not [e for e in cluster.lb.access_entries()[since:] if e["uri"].endswith("/cancel")]
    await page.screenshot(path=pages.artifacts_prefix() + "-cancelled.png")

    # Nothing of the run after its cancelled update: a marker published afterwards (through
    # the balancer, so by either process) arrives, and between the two there is nothing.
    await publish_marker(cluster, "alice", "after the cancel")
    await expect(page.locator(".toast")).to_contain_text("after the cancel")
    events = await debug_state(page, "d.events")
    (marker,) = [i for i, e in enumerate(events) if e["type"] == "notification"]
    mine = [(i, e) for i, e in enumerate(events) if e.get("generationId") == gen_id]
    last_index, last = mine[-1]
    assert last["type"] == "generationUpdate" and last["status"] == "cancelled", mine[-3:]
    assert last_index < marker
    assert [e["status"] for _, e in mine if e["type"] == "generationUpdate"] == ["queued", "running", "cancelled"]
    assert max(e["step"] or 0 for _, e in mine if e["type"] == "generationProgress") < 20

    # Both processes hold the same record: cancelled, no outputs.
    for gateway in cluster.gateways:
        record = await generation_from(gateway, "alice", gen_id)
        assert record["status"] == "cancelled" and record["outputs"] == [], (gateway.port, record)

    # The page got exactly the server's stream (read through the balancer), once each.
    welcome = await debug_state(page, "d.welcomes[0]")
    stream = await server_stream(cluster.lb.ws_url, cluster.gateways[0].token("alice"), welcome["epoch"])
    assert await debug_state(page, "d.offsets") == [e["offset"] for e in stream if e["offset"] > welcome["offset"]]
    assert await debug_state(page, "d.protocolErrors") == []
    server_frames_valid(tab)
    assert_sent_frames_valid(tab)


async def run_to_the_end(page: Page, *, prompt: str) -> str:
    gen_id = await run_demo(page, duration=0.6, steps=3, prompt=prompt)
    await expect(page.locator(f".run[data-generation-id={gen_id}] .status-badge")).to_have_text("Completed")
    return gen_id


async def test_history_after_a_reload_shows_every_run_once_and_outputs_load_from_either_process(
    cluster: Cluster, pages: Pages
) -> None:
    tab = await pages.new("bea")
    page = tab.page
    user = "bea"
    since = cluster.mark()
    await sign_in(tab, cluster.lb.http_url, user)
    expected: dict[str, str] = {}
    prompts: dict[str, str] = {}
    # Each create steered (round robin alternates, but the page's own requests between two
    # creates, e.g. a run's webhook deliveries, may be an even number): both processes accept.
    for i, prompt in enumerate(("a red barn", "a blue boat", "a green kite")):
        await page.wait_for_load_state("networkidle")
        await cluster.steer_next_request_to(cluster.gateways[i % 2])
        gen_id = await run_to_the_end(page, prompt=prompt)
        expected[gen_id], prompts[gen_id] = "completed", prompt
    await page.wait_for_load_state("networkidle")
    await cluster.steer_next_request_to(cluster.gateways[1])
    cancelled = await run_demo(page, duration=20, steps=20, prompt="never finished")
    run = page.locator(f".run[data-generation-id={cancelled}]")
    await expect(run.locator(".status-badge")).to_have_text("Running")
    await run.get_by_role("button", name="Cancel").click()
    await expect(run.locator(".status-badge")).to_have_text("Cancelled")
    expected[cancelled] = "cancelled"
    creates = await cluster.served("POST", re.compile(r"/v1/generations"), count=len(expected), since=since)
    assert {e["upstream"] for e in creates} == {cluster.upstream(g) for g in cluster.gateways}, creates

    # Reload until both processes have answered the history and served outputs (round robin
    # with the page's other requests in between: bounded, a few reloads at most).
    list_uri = re.compile(r"/v1/generations(\?.*)?")
    output_uri = re.compile(r"/v1/outputs/out_[0-9a-f]{16}\?.*")
    reloads = cluster.mark()
    both = {cluster.upstream(g) for g in cluster.gateways}
    for reload in range(8):  # noqa: B007 - named in the failure message
        await page.reload()
        await wait_live(page)
        items = page.locator(".history-item")
        await expect(items).to_have_count(len(expected))
        for gen_id, status in expected.items():
            item = page.locator(f".history-item[data-generation-id={gen_id}]")
            await expect(item).to_have_count(1)
            await expect(item).to_have_attribute("data-status", status)
        for gen_id, status in expected.items():
            if status == "completed":
                await page.wait_for_function(
                    "id => { const img = document.querySelector(`.history-item[data-generation-id=${id}] .thumb img`);"
                    " return img && img.complete && img.naturalWidth > 0; }", arg=gen_id)
        assert [await i.get_attribute("data-generation-id") for i in await items.all()] == list(reversed(expected))
        entries = cluster.lb.access_entries()[reloads:]
        lists = [e for e in entries if e["method"] == "GET" and list_uri.fullmatch(e["uri"])]
        served_outputs = [e for e in entries if e["method"] == "GET" and output_uri.fullmatch(e["uri"])]
        if {e["upstream"] for e in lists} == both and {e["upstream"] for e in served_outputs} == both:
            break
    else:
        raise AssertionError(f"after {reload + 1} reloads: lists {lists}, outputs {served_outputs}")
    assert all(e["status"] == "200" for e in lists), lists
    assert all(e["status"] in {"200", "206", "304"} for e in served_outputs), served_outputs
    await page.screenshot(path=pages.artifacts_prefix() + "-reloaded.png")

    # Open each completed run from the history: its image renders and its text loads.
    for gen_id, prompt in prompts.items():
        await page.locator(f".history-item[data-generation-id={gen_id}]").get_by_role("button", name="Open").click()
        view = page.locator(f".tool-window .run[data-generation-id={gen_id}]")
        await expect(view.locator(".status-badge")).to_have_text("Completed")
        await page.wait_for_function(
            "id => { const img = document.querySelector(`.tool-window .run[data-generation-id=${id}] "
            "figure[data-kind=image] img`); return img && img.complete && img.naturalWidth === 512; }", arg=gen_id)
        await expect(view.locator("figure[data-kind=text] pre")).to_contain_text(prompt)

    # Either process answers the same record and serves the same bytes for every output URL.
    for gen_id, status in expected.items():
        records = [await generation_from(g, user, gen_id) for g in cluster.gateways]
        assert records[0] == records[1] or _same_but_urls(records[0], records[1]), records
        assert records[0]["status"] == status
        for output in records[0]["outputs"]:
            bodies = []
            for gateway in cluster.gateways:
                async with httpx.AsyncClient(base_url=gateway.http_url, timeout=10) as client:
                    response = await client.get(output["url"])
                assert response.status_code == 200, (gateway.port, output, response.text[:200])
                bodies.append(response.content)
            assert bodies[0] == bodies[1] and len(bodies[0]) == output["sizeBytes"]
    assert await debug_state(page, "d.protocolErrors") == []
    server_frames_valid(tab)
    assert_sent_frames_valid(tab)


def _same_but_urls(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two descriptions of one generation, equal except for the signed URLs' expiry."""
    def strip(record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "outputs": [{**o, "url": o["url"].split("?", 1)[0]} for o in record["outputs"]]}
    return strip(a) == strip(b)


async def test_behind_a_proxy_that_refuses_websocket_upgrades_a_run_arrives_over_sse(
    cluster: Cluster, pages: Pages
) -> None:
    with Nginx([g.port for g in cluster.gateways], upgrade=False, buffering=True) as proxy:  # nginx defaults
        tab = await pages.new("sue")
        page = tab.page
        await sign_in(tab, proxy.http_url, "sue")
        indicator = page.locator("#connection")
        await expect(indicator).to_contain_text("Live · SSE")
        await expect(indicator).to_have_attribute("data-transport", "sse")
        gen_id = await run_demo(page, duration=2.0, steps=6, prompt="a lantern in snow")
        run = page.locator(f".run[data-generation-id={gen_id}]")
        await expect(run.locator(".status-badge")).to_have_text("Completed")
        await expect(run.locator("figure.output")).to_have_count(3)
        await expect(run.locator("figure[data-kind=text] pre")).to_contain_text("a lantern in snow")

        # Client messages go through round robin: pings land on both processes, and every
        # one is answered on the stream, which lives on one of them.
        since = len(proxy.access_entries())
        for _ in range(4):
            pong = await page.evaluate("() => window.__livegate.client.ping()")
            assert pong["type"] == "pong"
        deadline = time.monotonic() + LOG_WAIT_SECONDS  # nginx logs a POST once its answer is done,
        while True:  # which may be after the pong came back on the stream
            posts = [e for e in proxy.access_entries()[since:]
                     if e["method"] == "POST" and re.fullmatch(r"/v1/sse/[^/]+/messages", e["uri"])]
            if len(posts) >= 4 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.02)
        assert len(posts) == 4 and {e["status"] for e in posts} == {"202"}, posts
        assert {e["upstream"] for e in posts} == {cluster.upstream(g) for g in cluster.gateways}, posts

        # The proxy never upgraded a WebSocket: the client gave up on them after two attempts.
        handshakes = [e for e in proxy.access_entries() if e["uri"] == "/v1/ws"]
        assert len(handshakes) >= 2 and "101" not in {e["status"] for e in handshakes}, handshakes
        assert await debug_state(page, "d.transports.map(t => t.transport)") == ["websocket", "sse"]

        welcome = await debug_state(page, "d.welcomes[0]")
        stream = await server_stream(cluster.lb.ws_url, cluster.gateways[0].token("sue"), welcome["epoch"])
        assert await debug_state(page, "d.offsets") == [e["offset"] for e in stream if e["offset"] > welcome["offset"]]
        assert [e["status"] for e in stream if e.get("generationId") == gen_id and e["type"] == "generationUpdate"] \
            == ["queued", "running", "completed"]
        assert await debug_state(page, "d.protocolErrors") == []
        assert await debug_state(page, "d.duplicates") == []
        for frame in await debug_state(page, "d.sent"):
            assert_valid_message(frame, "client")
