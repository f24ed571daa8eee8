"""One product on many processes: three ``livegate serve`` processes on one Redis and one
PostgreSQL (real servers the tests start), fake OpenAI and ComfyUI on loopback.

Records, cancel and outputs answer the same through every process; per-user limits hold
for the processes together; a run whose process is SIGKILLed is taken over by another
one (demo restarted, ComfyUI re-attached by prompt id with no second prompt, OpenAI failed
with ``interrupted_by_restart`` once its request went out) with exactly one terminal
``generationUpdate`` and exact offsets on the user's stream; a PostgreSQL outage answers
503 problems while the stream goes on, and the run that ended meanwhile is recorded when
the database is back.

Which process runs a generation is read from its record (``owner`` = host:pid:nonce) in
the database, the only place that knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from livegate.client import LivegateClient
from livegate.protocol import messages
from livegate.testing.fake_comfyui import FakeComfyUI
from livegate.testing.fake_openai import FakeOpenAI
from livegate.testing.postgres_server import PostgresServer
from livegate.testing.process import GatewayProcess
from livegate.testing.redis_server import RedisServer
from livegate.testing.spec_validation import schema_errors
from tests.app._generations import FIXTURES, tools_toml
from tests.scale._support import LoopThread, Tab, close_all, eventually, start_gateways, user_name

FINAL = ("completed", "failed", "cancelled")
TAKEOVER_SECONDS = 2.0


@dataclass
class Cluster:
    net: LoopThread
    redis: RedisServer
    postgres: PostgresServer
    database_url: str
    openai: FakeOpenAI
    comfy: FakeComfyUI
    gateways: list[GatewayProcess]

    def restore(self) -> None:
        if not self.postgres.running():
            self.postgres.start()
        for gw in self.gateways:
            if not gw.running():
                gw.start()

    def by_pid(self, pid: int) -> GatewayProcess:
        [gw] = [g for g in self.gateways if g.pid == pid]
        return gw

    def owner_of(self, gen_id: str) -> GatewayProcess | None:
        with psycopg.connect(self.database_url, connect_timeout=5) as conn:
            row = conn.execute("SELECT owner, status FROM generations WHERE id = %s", (gen_id,)).fetchone()
        if row is None or row[0] is None or row[1] != "running":
            return None
        pid = int(row[0].split(":")[1])
        return next((g for g in self.gateways if g.pid == pid), None)

    async def on_fakes(self, coro: Any, timeout: float = 15.0) -> Any:
        """Run a coroutine of a fake on the loop the fakes live on."""
        return await asyncio.to_thread(self.net.run, coro, timeout)

    def logs(self) -> str:
        return "\n".join(f"--- gateway :{gw.port} (pid {gw.pid}) ---\n{gw.log_tail(40)}" for gw in self.gateways)


@pytest.fixture(scope="module")
def _cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("cluster-generations")
    net = LoopThread()
    openai = FakeOpenAI(FIXTURES / "openai")
    comfy = FakeComfyUI(FIXTURES / "comfyui", speed=0.2)
    net.run(openai.__aenter__())
    net.run(comfy.__aenter__())
    tools_file = base / "tools.toml"
    tools_file.write_text(tools_toml(openai.base_url, comfy.base_url))
    try:
        with RedisServer() as redis, PostgresServer() as postgres:
            url = postgres.create_database("cluster")
            env = {"LIVEGATE_REDIS_URL": redis.url, "LIVEGATE_DATABASE_URL": url,
                   "LIVEGATE_TOOLS_FILE": str(tools_file), "LIVEGATE_TAKEOVER_SECONDS": str(TAKEOVER_SECONDS),
                   "LIVEGATE_MAX_CONCURRENCY_PER_USER": "2"}
            gateways = start_gateways(base, 3, env)
            try:
                yield Cluster(net, redis, postgres, url, openai, comfy, gateways)
            finally:
                for gw in gateways:
                    gw.kill()
    finally:
        with contextlib.suppress(Exception):
            net.run(comfy.__aexit__(None, None, None))
        with contextlib.suppress(Exception):
            net.run(openai.__aexit__(None, None, None))
        net.close()


@pytest.fixture
def cluster(_cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The module's cluster, whole at the start; gateway logs on failure (``report_call``
    is set by tests/scale/conftest.py's report hook)."""
    _cluster.restore()
    yield _cluster
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(_cluster.logs())
    _cluster.restore()


# -- helpers ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def http(gw: GatewayProcess, user: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {gw.token(user)}"} if user else {}
    async with httpx.AsyncClient(base_url=gw.http_url, headers=headers, timeout=20.0) as client:
        yield client


async def create(gw: GatewayProcess, user: str, tool: str, **inputs: Any) -> str:
    async with http(gw, user) as client:
        response = await client.post("/v1/generations", json={"toolId": tool, "inputs": inputs})
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


async def record(gw: GatewayProcess, user: str, gen_id: str) -> dict[str, Any]:
    async with http(gw, user) as client:
        response = await client.get(f"/v1/generations/{gen_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert not schema_errors(body, "Generation", "asyncapi"), body
    return body


async def wait_record(gw: GatewayProcess, user: str, gen_id: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
    found: dict[str, Any] = {}

    async def reached() -> bool:
        found.clear()
        found.update(await record(gw, user, gen_id))
        return found["status"] == status

    await eventually(reached, timeout=timeout, interval=0.1, what=f"{gen_id} {status}")
    return found


async def tabs(cluster: Cluster, user: str) -> list[Tab]:
    opened = [Tab(gw.ws_url, gw.token(user)) for gw in cluster.gateways]
    for tab in opened:
        await tab.open()
    return opened


def lifecycle(tab: Tab, gen_id: str) -> list[str]:
    return [e["status"] for e in tab.events if e["type"] == "generationUpdate" and e["generationId"] == gen_id]


async def wait_final(tab: Tab, gen_id: str, timeout: float = 30.0) -> None:
    await eventually(lambda: any(s in FINAL for s in lifecycle(tab, gen_id)), timeout=timeout,
                     what=f"the end of {gen_id} on {tab.url}")
    assert not tab.invalid, tab.invalid[:3]


def assert_exact(tab: Tab) -> None:
    """Every event of the stream once, in order: offsets rise; a gap is only ever a
    ``generationProgress`` conflated for a slow reader (asyncapi.yaml: the latest progress
    of a generation replaces an older one still queued), never an update or a
    notification — the gap's neighbour is then a progress event of the same run."""
    events = tab.events
    offsets = [e["offset"] for e in events]
    assert offsets == sorted(set(offsets)), offsets
    for before, after in itertools.pairwise(events):
        if after["offset"] != before["offset"] + 1:
            assert after["type"] == "generationProgress", (before, after)


async def running_owner(cluster: Cluster, gen_id: str) -> GatewayProcess:
    owner: list[GatewayProcess] = []

    def found() -> bool:
        gw = cluster.owner_of(gen_id)
        if gw is not None:
            owner.append(gw)
        return gw is not None

    await eventually(found, timeout=15.0, interval=0.05, what=f"the process running {gen_id}")
    return owner[-1]


# -- tests --------------------------------------------------------------------------------------


async def test_records_cancel_and_outputs_answer_the_same_on_every_process(cluster: Cluster) -> None:
    user = user_name("records")
    first, second, third = cluster.gateways
    gen_id = await create(first, user, "demo", prompt="lighthouse", durationSeconds=0, outputs=["image", "text"])
    done = await wait_record(second, user, gen_id, "completed")
    def unsigned(body: dict[str, Any]) -> dict[str, Any]:  # each answer signs its output URLs anew
        return {**body, "outputs": [{**o, "url": o["url"].split("?")[0]} for o in body["outputs"]]}

    for gw in cluster.gateways:
        assert unsigned(await record(gw, user, gen_id)) == unsigned(done)
    # outputs: the same bytes and ranges through every process, by the URL any of them signed
    image = next(o for o in done["outputs"] if o["kind"] == "image")
    bodies = []
    for gw in cluster.gateways:
        async with http(gw) as anonymous:
            whole = await anonymous.get(image["url"])
            part = await anonymous.get(image["url"], headers={"Range": "bytes=10-99"})
        assert whole.status_code == 200 and part.status_code == 206
        assert part.content == whole.content[10:100]
        bodies.append(whole.content)
    assert bodies[0] == bodies[1] == bodies[2] and len(bodies[0]) == image["sizeBytes"]
    # another user sees nothing, on any process
    async with http(third, user_name("other")) as stranger:
        assert (await stranger.get(f"/v1/generations/{gen_id}")).status_code == 404

    # a queued run is cancelled through a process that did not create it
    slow = [await create(first, user, "demo", durationSeconds=20) for _ in range(2)]  # the user's 2 slots
    queued = await create(second, user, "demo", durationSeconds=20)
    assert (await record(third, user, queued))["status"] == "queued"
    async with http(third, user) as client:
        answer = await client.post(f"/v1/generations/{queued}/cancel")
        assert answer.status_code == 200 and answer.json()["status"] == "cancelled"
        for gen in slow:
            assert (await client.post(f"/v1/generations/{gen}/cancel")).json()["status"] == "cancelled"
        again = await client.post(f"/v1/generations/{queued}/cancel")
    assert again.status_code == 409 and again.headers["content-type"] == "application/problem+json"

    # pagination is consistent while runs are being created on every process
    created = [gen_id, *slow, queued]
    seen: list[str] = []
    cursor: str | None = None
    creating = asyncio.gather(*(create(gw, user, "demo", durationSeconds=0, outputs=["text"])
                                for gw in cluster.gateways for _ in range(2)))
    for step in range(20):
        async with http(cluster.gateways[step % 3], user) as client:
            page = (await client.get("/v1/generations", params={"limit": 2, **({"cursor": cursor} if cursor else {})})).json()
        seen += [g["id"] for g in page["items"]]
        cursor = page.get("nextCursor")
        if cursor is None:
            break
    created += await creating
    assert len(seen) == len(set(seen)), seen  # no run twice across pages
    assert set(created[:4]) <= set(seen)  # everything older than the first page is there
    async with http(third, user) as client:
        everything = (await client.get("/v1/generations", params={"limit": 100})).json()["items"]
    assert sorted(g["id"] for g in everything) == sorted(created)


async def test_a_cancel_through_another_process_stops_the_run_where_it_runs(cluster: Cluster) -> None:
    user = user_name("cancel")
    watching = await tabs(cluster, user)
    try:
        gen_id = await create(cluster.gateways[0], user, "demo", durationSeconds=30, steps=50)
        owner = await running_owner(cluster, gen_id)
        other = next(gw for gw in cluster.gateways if gw is not owner)
        await eventually(lambda: any(e.get("generationId") == gen_id and e["type"] == "generationProgress"
                                     for e in watching[0].events), timeout=10, what="progress")
        async with http(other, user) as client:
            answer = await client.post(f"/v1/generations/{gen_id}/cancel")
        assert answer.status_code == 200 and answer.json()["status"] == "cancelled", answer.text
        for tab in watching:
            await wait_final(tab, gen_id)
            assert lifecycle(tab, gen_id) == ["queued", "running", "cancelled"]
        # nothing of the run follows its terminal update (checked after a later marker event)
        marker = await create(other, user, "demo", durationSeconds=0, outputs=["text"])
        for tab in watching:
            await wait_final(tab, marker)
            mine = [e for e in tab.events if e.get("generationId") == gen_id]
            assert mine[-1]["type"] == "generationUpdate" and mine[-1]["status"] == "cancelled"
            assert_exact(tab)
    finally:
        await close_all(watching)


async def test_comfyui_cancel_through_another_process_interrupts_the_prompt(cluster: Cluster) -> None:
    user = user_name("comfy-cancel")
    submitted = len(cluster.comfy.submitted)
    gen_id = await create(cluster.gateways[1], user, "comfy-slow")
    await cluster.on_fakes(cluster.comfy.wait_for(lambda: cluster.comfy.running_prompt_id is not None
                                                  and len(cluster.comfy.submitted) > submitted))
    prompt_id = cluster.comfy.running_prompt_id or ""
    owner = await running_owner(cluster, gen_id)
    other = next(gw for gw in cluster.gateways if gw is not owner)
    async with http(other, user) as client:
        answer = await client.post(f"/v1/generations/{gen_id}/cancel")
    assert answer.json()["status"] == "cancelled", answer.text
    entry = cluster.comfy.history_entry(prompt_id)  # the owner interrupted it before the record said so
    assert entry is not None and entry["status"]["messages"][-1][0] == "execution_interrupted"


@pytest.mark.parametrize("kind", ["demo", "comfyui", "openai"])
async def test_a_run_whose_process_is_killed_is_taken_over(cluster: Cluster, kind: str) -> None:
    user = user_name(f"kill-{kind}")
    watching = await tabs(cluster, user)
    openai_requests = len(cluster.openai.requests)
    comfy_prompts = len(cluster.comfy.submitted)
    try:
        if kind == "demo":
            gen_id = await create(cluster.gateways[0], user, "demo", durationSeconds=3, steps=6, seed=3)
        elif kind == "comfyui":
            gen_id = await create(cluster.gateways[0], user, "comfy-slow")
        else:
            cluster.openai.hang_after_events = 3  # the answer starts, then the stream hangs
            gen_id = await create(cluster.gateways[0], user, "chat", prompt="Say hello")
        owner = await running_owner(cluster, gen_id)
        if kind == "comfyui":
            await cluster.on_fakes(cluster.comfy.wait_for(lambda: len(cluster.comfy.submitted) > comfy_prompts))
        if kind == "openai":
            await cluster.on_fakes(cluster.openai.wait_for(lambda: len(cluster.openai.requests) > openai_requests))
        await eventually(lambda: any(e.get("generationId") == gen_id and e["type"] == "generationProgress"
                                     for e in watching[0].events), timeout=15, what="progress before the kill")
        await asyncio.to_thread(owner.kill)  # SIGKILL: no goodbye, no handover
        survivors = [tab for tab, gw in zip(watching, cluster.gateways, strict=True) if gw is not owner]
        expected = {"demo": "completed", "comfyui": "completed", "openai": "failed"}[kind]
        for tab in survivors:
            await wait_final(tab, gen_id, timeout=60)
            # exactly one terminal update; the takeover publishes no second `running`
            assert lifecycle(tab, gen_id) == ["queued", "running", expected], lifecycle(tab, gen_id)
            assert_exact(tab)
        final = await record(next(gw for gw in cluster.gateways if gw is not owner), user, gen_id)
        assert final["status"] == expected
        if kind == "openai":
            assert final["error"]["code"] == "interrupted_by_restart"
            assert len(cluster.openai.requests) == openai_requests + 1  # never sent twice
        else:
            assert final["outputs"]
        if kind == "comfyui":
            assert len(cluster.comfy.submitted) == comfy_prompts + 1  # re-attached, not queued again
    finally:
        cluster.openai.hang_after_events = None
        await close_all(watching)


async def test_per_user_limits_hold_for_all_processes_together(cluster: Cluster) -> None:
    user = user_name("limits")
    ids = [await create(gw, user, "demo", durationSeconds=1.0, steps=2, outputs=["text"])
           for gw in cluster.gateways for _ in range(2)]
    most = 0

    async def all_done() -> bool:
        nonlocal most
        async with http(cluster.gateways[0], user) as client:
            items = (await client.get("/v1/generations", params={"limit": 100})).json()["items"]
        most = max(most, sum(1 for g in items if g["status"] == "running"))
        return all(g["status"] == "completed" for g in items if g["id"] in ids) and len(items) == len(ids)

    await eventually(all_done, timeout=60, interval=0.05, what="every run completed")
    assert most == 2  # LIVEGATE_MAX_CONCURRENCY_PER_USER=2 across the three processes


async def test_a_database_outage_answers_503_and_loses_nothing(cluster: Cluster) -> None:
    user = user_name("outage")
    gw = cluster.gateways[2]
    tab = Tab(gw.ws_url, gw.token(user))
    await tab.open()
    try:
        gen_id = await create(gw, user, "demo", durationSeconds=2, steps=8, outputs=["text"])
        await eventually(lambda: any(e.get("generationId") == gen_id and e["type"] == "generationProgress"
                                     for e in tab.events), timeout=15, what="progress")
        await asyncio.to_thread(cluster.postgres.kill)
        async with http(gw, user) as client:
            answer = await client.get(f"/v1/generations/{gen_id}")
            ready = await client.get("/readyz")
        assert answer.status_code == 503 and answer.headers["retry-after"]
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "database_unavailable"
        assert ready.status_code == 503 and ready.json()["checks"]["database"] is False
        # the stream goes on: the run's progress keeps arriving while the database is down
        await eventually(lambda: any(e.get("generationId") == gen_id and e.get("step") == 8 for e in tab.events),
                         timeout=20, what="the last step during the outage")
        note = secrets.token_hex(4)
        async with httpx.AsyncClient(timeout=10) as client:
            published = await client.post(f"{gw.http_url}/v1/events", headers={"Authorization": f"Bearer {gw.service_token}"},
                                          json={"events": [{"userId": user, "event": {"type": "notification", "level": "info",
                                                                                       "message": note}}]})
        assert published.status_code == 200
        await eventually(lambda: any(e.get("message") == note for e in tab.events), timeout=10, what="notification")
        assert lifecycle(tab, gen_id) == ["queued", "running"]  # the end waits for its record
        await asyncio.to_thread(cluster.postgres.start)
        await wait_final(tab, gen_id, timeout=60)
        assert lifecycle(tab, gen_id) == ["queued", "running", "completed"]
        done = await wait_record(gw, user, gen_id, "completed")
        assert done["outputs"] and done["outputs"][0]["text"]
        assert_exact(tab)
    finally:
        await tab.close()


async def test_livegate_worker_runs_generations_for_a_gateway_that_runs_none(
        cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> None:
    """``livegate worker`` (no sockets) next to a ``serve`` with ``LIVEGATE_RUN_WORKER=0``
    on a separate database: the gateway accepts and delivers, the worker runs."""
    import subprocess
    import sys

    base = tmp_path_factory.mktemp("worker")
    url = cluster.postgres.create_database("worker_" + secrets.token_hex(3))
    tools = base / "tools.toml"
    tools.write_text('[[tools]]\nid = "demo"\nkind = "demo"\ntitle = "Demo"\n')
    env = {"LIVEGATE_REDIS_URL": cluster.redis.url, "LIVEGATE_DATABASE_URL": url,
           "LIVEGATE_TOOLS_FILE": str(tools), "LIVEGATE_TAKEOVER_SECONDS": str(TAKEOVER_SECONDS)}
    gateway = GatewayProcess(base / "gw", env={**env, "LIVEGATE_RUN_WORKER": "0"}, startup_timeout=90)
    worker: subprocess.Popen[bytes] | None = None
    user = user_name("worker")
    with gateway:
        tab = Tab(gateway.ws_url, gateway.token(user))
        await tab.open()
        try:
            gen_id = await create(gateway, user, "demo", durationSeconds=0, outputs=["text"])
            assert (await record(gateway, user, gen_id))["status"] == "queued"  # nobody runs it yet
            log = (base / "worker.log").open("wb")
            worker = await asyncio.to_thread(
                subprocess.Popen, [sys.executable, "-m", "livegate.cli", "worker"],
                env={**gateway.environment(), **env}, stdout=log, stderr=subprocess.STDOUT)
            await wait_final(tab, gen_id, timeout=60)
            assert lifecycle(tab, gen_id) == ["queued", "running", "completed"]
            assert (await record(gateway, user, gen_id))["outputs"][0]["text"]
        finally:
            await tab.close()
            if worker is not None:
                worker.terminate()
                try:
                    assert await asyncio.to_thread(worker.wait, 20) == 0  # SIGTERM: a clean stop
                finally:
                    if worker.poll() is None:
                        worker.kill()
                        await asyncio.to_thread(worker.wait, 10)


async def test_streamed_text_is_exact_on_other_processes_for_clients_that_join_mid_stream(cluster: Cluster) -> None:
    """asyncapi.yaml "Streamed text": a run streams on one process; on the two others, a tab
    that joins mid-stream *without* ``textDeltas`` (an old client) gets ``partialText`` again
    once its gateway read the prefix from the database, and one *with* it (the Python client,
    which takes the prefix from GET on its own gateway) rebuilds the text; both end with the
    exact final text."""
    user = user_name("text")
    gen_id = await create(cluster.gateways[0], user, "demo", prompt="a lighthouse 🌅 at dusk, é中😀 " * 4,
                          steps=40, durationSeconds=6, outputs=["text"])
    owner = await running_owner(cluster, gen_id)
    others = [gw for gw in cluster.gateways if gw is not owner]

    async def streaming() -> bool:
        return bool(((await record(owner, user, gen_id)).get("progress") or {}).get("partialText"))

    await eventually(streaming, timeout=15.0, interval=0.05, what=f"{gen_id} streaming text")
    legacy = Tab(others[0].ws_url, others[0].token(user))
    await legacy.open()
    texts: list[str] = []

    async def follow(client: LivegateClient) -> str:
        async for message in client.messages():
            if isinstance(message, messages.GenerationProgress) and isinstance(message.partial_text, str):
                texts.append(message.partial_text)
            if isinstance(message, messages.GenerationUpdate) and message.status in FINAL:
                [output] = message.outputs or []
                assert isinstance(output.text, str)
                return output.text
        raise AssertionError("the client stopped")

    try:
        async with LivegateClient(others[1].ws_url, others[1].token(user)) as client:
            final = await asyncio.wait_for(follow(client), 30)
        await wait_final(legacy, gen_id)
    finally:
        await legacy.close()
    assert texts and texts[-1] == final, "the Python client joined mid-stream must rebuild the exact text"
    progress = [e for e in legacy.events if e["type"] == "generationProgress" and e["generationId"] == gen_id]
    assert all("textDelta" not in e for e in progress)
    with_text = [e["partialText"] for e in progress if "partialText" in e]
    assert with_text and with_text[-1] == final, "the old client gets partialText again, exact"
