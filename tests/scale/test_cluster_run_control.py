"""Run control on many processes (issue 13): a deadline stops a run on whichever process
runs it (every process's dispatch tick sweeps expired runs, the cancel path reaches the
owner through the job engine), and an in-band ``cancel`` sent to one process cancels a
run another process runs. Same cluster shape as test_cluster_generations.py (three
``livegate serve`` on one Redis and one PostgreSQL), started for this module."""

from __future__ import annotations

from tests.scale._support import close_all, eventually, user_name
from tests.scale.test_cluster_generations import (  # noqa: F401  (the module's fixtures)
    Cluster,
    _cluster,
    assert_exact,
    cluster,
    create,
    http,
    lifecycle,
    record,
    running_owner,
    tabs,
    wait_final,
)


async def test_a_deadline_stops_the_run_on_the_process_that_runs_it(cluster: Cluster) -> None:  # noqa: F811
    user = user_name("deadline")
    watching = await tabs(cluster, user)
    try:
        async with http(cluster.gateways[0], user) as client:
            created = await client.post("/v1/generations", json={
                "toolId": "demo", "inputs": {"durationSeconds": 30, "steps": 50}, "cancelAfterSeconds": 3})
        assert created.status_code == 202, created.text
        gen_id = created.json()["id"]
        owner = await running_owner(cluster, gen_id)
        for tab in watching:
            await wait_final(tab, gen_id, timeout=20)
            assert lifecycle(tab, gen_id) == ["queued", "running", "cancelled"]
            [final] = [e for e in tab.events if e.get("generationId") == gen_id and e.get("status") == "cancelled"]
            assert final["error"]["code"] == "deadline_exceeded"
        for gw in cluster.gateways:  # the record says the same on every process
            stored = await record(gw, user, gen_id)
            assert stored["status"] == "cancelled" and stored["error"]["code"] == "deadline_exceeded"
        # the owner stopped the run: nothing of it follows its terminal update
        marker = await create(owner, user, "demo", durationSeconds=0, outputs=["text"])
        for tab in watching:
            await wait_final(tab, marker)
            mine = [e for e in tab.events if e.get("generationId") == gen_id]
            assert mine[-1]["type"] == "generationUpdate" and mine[-1]["status"] == "cancelled"
            assert_exact(tab)
    finally:
        await close_all(watching)


async def test_an_in_band_cancel_through_another_process_stops_the_run(cluster: Cluster) -> None:  # noqa: F811
    user = user_name("ws-cancel")
    watching = await tabs(cluster, user)
    try:
        gen_id = await create(cluster.gateways[0], user, "demo", durationSeconds=30, steps=50)
        owner = await running_owner(cluster, gen_id)
        index = next(i for i, gw in enumerate(cluster.gateways) if gw is not owner)
        elsewhere = watching[index]
        await elsewhere.send({"type": "cancel", "id": "c1", "generationId": gen_id})
        await eventually(lambda: elsewhere.answer("c1") is not None, timeout=20, what="the cancelResult")
        assert elsewhere.answer("c1") == {"type": "cancelResult", "id": "c1", "generationId": gen_id,
                                          "status": "cancelled"}
        for tab in watching:
            await wait_final(tab, gen_id)
            assert lifecycle(tab, gen_id) == ["queued", "running", "cancelled"]
        stranger = (await tabs(cluster, user_name("stranger")))[index]
        try:
            await stranger.send({"type": "cancel", "id": "s1", "generationId": gen_id})
            await eventually(lambda: stranger.answer("s1") is not None, timeout=10, what="the error")
            assert (stranger.answer("s1") or {})["code"] == "not_found"
        finally:
            await stranger.close()
    finally:
        await close_all(watching)
