"""The generation service: transitions published in order, limits that queue, timeouts,
cancellation that reaches the tool, durable records and recovery after a restart."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from livegate.errors import IllegalTransition, NotFound, ToolError
from livegate.service.generations import InputsInvalid
from livegate.testing.spec_validation import schema_errors

from .conftest import ScriptedTool


def as_json(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


def generation(value: Any) -> dict[str, Any]:
    body = as_json(value)
    assert not schema_errors(body, "Generation", "asyncapi"), schema_errors(body, "Generation", "asyncapi")
    return body  # type: ignore[no-any-return]


async def test_every_transition_is_published_in_order(harness: Any) -> None:
    tool = ScriptedTool()
    h = harness(tool)
    svc = await h.start()
    created = generation(await svc.create("alice", "scripted", {"prompt": "hi"}))
    assert created["status"] == "queued" and created["outputs"] == []
    [run] = await tool.started(1)
    running = await h.wait_status("alice", created["id"], "running")
    assert running["progress"] == {"fraction": 0.5, "step": 1, "totalSteps": 2, "message": "halfway",
                                   "partialText": "Hel"}
    run.finish.set_result("ok")
    done = generation(await h.wait_status("alice", created["id"], "completed"))

    events = await h.events("alice")
    assert [(e["type"], e.get("status") or (e.get("textOffset"), e.get("textDelta"))) for e in events] == [
        ("generationUpdate", "queued"),
        ("generationUpdate", "running"),
        ("generationProgress", (0, "Hel")),
        ("generationProgress", (3, "lo")),  # published before the final update, never after
        ("generationUpdate", "completed"),
    ]
    assert [e["offset"] for e in events] == [1, 2, 3, 4, 5]
    [output] = events[-1]["outputs"]
    assert (output["kind"], output["text"], output["mediaType"]) == ("text", "Hello", "text/plain; charset=utf-8")
    assert done["outputs"][0]["id"] == output["id"]
    assert done["startedAt"] <= done["finishedAt"] and "progress" not in done
    assert (await h.events("bob")) == []  # nothing leaks into another user's stream


async def test_illegal_transitions_are_refused_and_change_nothing(harness: Any) -> None:
    tool = ScriptedTool()
    h = harness(tool)
    svc = await h.start()
    gen_id = (await svc.create("alice", "scripted", {})).id
    (await tool.started(1))[0].finish.set_result("ok")
    await h.wait_status("alice", gen_id, "completed")
    before = await h.events("alice")
    with pytest.raises(IllegalTransition, match="completed generation cannot be cancelled"):
        await svc.cancel("alice", gen_id)
    assert generation(await svc.get("alice", gen_id))["status"] == "completed"
    assert await h.events("alice") == before


async def test_inputs_are_validated_with_the_failing_path(harness: Any) -> None:
    svc = await harness(ScriptedTool()).start()
    with pytest.raises(InputsInvalid) as caught:
        await svc.create("alice", "scripted", {"prompt": "", "n": 0, "extra": 1})
    assert sorted(e.path for e in caught.value.errors) == ["$.inputs", "$.inputs.n", "$.inputs.prompt"]
    with pytest.raises(NotFound) as unknown:
        await svc.create("alice", "nope", {})
    assert unknown.value.code == "unknown_tool"
    assert (await svc.list("alice", limit=10, cursor=None, status=None)).items == []


@pytest.mark.parametrize(
    ("raised", "error"),
    [
        (ToolError("SaveImage failed", code="execution_error", node_id="9"),
         {"code": "execution_error", "message": "SaveImage failed", "nodeId": "9"}),
        (ToolError("429 after 3 retries", code="upstream_rate_limited"),
         {"code": "upstream_rate_limited", "message": "429 after 3 retries"}),
        (RuntimeError("boom"), {"code": "tool_error", "message": "RuntimeError: boom"}),
    ],
)
async def test_failures_carry_the_tools_error_code(harness: Any, raised: Exception, error: dict[str, Any]) -> None:
    tool = ScriptedTool()
    h = harness(tool)
    svc = await h.start()
    gen_id = (await svc.create("alice", "scripted", {})).id
    (await tool.started(1))[0].finish.set_result(raised)
    failed = generation(await h.wait_status("alice", gen_id, "failed"))
    assert failed["error"] == error
    assert (await h.events("alice"))[-1]["error"] == error


async def test_per_user_limit_queues_instead_of_refusing(harness: Any) -> None:
    tool = ScriptedTool()
    h = harness(tool, max_per_user=1)
    svc = await h.start()
    a1 = (await svc.create("alice", "scripted", {})).id
    a2 = (await svc.create("alice", "scripted", {})).id
    b1 = (await svc.create("bob", "scripted", {})).id
    runs = await tool.started(2)
    assert sorted(r.ctx.generation_id for r in runs) == sorted([a1, b1])  # bob is not held up by alice
    await asyncio.sleep(0.05)
    assert len(tool.runs) == 2 and generation(await svc.get("alice", a2))["status"] == "queued"
    next(r for r in runs if r.ctx.generation_id == a1).finish.set_result("ok")
    third = (await tool.started(3))[2]
    assert third.ctx.generation_id == a2
    for run in tool.runs[1:]:
        run.finish.set_result("ok")
    for user, gen_id in (("alice", a2), ("bob", b1)):
        await h.wait_status(user, gen_id, "completed")
    assert await h.updates("alice", a2) == ["queued", "running", "completed"]


async def test_per_tool_limit_queues_in_order(harness: Any) -> None:
    tool = ScriptedTool(max_concurrency=1)
    h = harness(tool)
    svc = await h.start()
    ids = [(await svc.create(user, "scripted", {})).id for user in ("alice", "bob", "carol")]
    await tool.started(1)
    await asyncio.sleep(0.05)
    assert len(tool.runs) == 1
    for step in range(3):
        assert tool.runs[step].ctx.generation_id == ids[step]  # FIFO across users
        tool.runs[step].finish.set_result("ok")
        if step < 2:
            await tool.started(step + 2)
    await h.wait_status("carol", ids[2], "completed")


async def test_per_tool_timeout_fails_the_run_and_stops_the_tool(harness: Any) -> None:
    tool = ScriptedTool(timeout=0.2)
    h = harness(tool)
    svc = await h.start()
    gen_id = (await svc.create("alice", "scripted", {})).id
    failed = await h.wait_status("alice", gen_id, "failed")
    assert failed["error"]["code"] == "timeout" and "0.2 s" in failed["error"]["message"]
    assert tool.runs[0].stopped_upstream


async def test_cancelling_queued_and_running_generations(harness: Any) -> None:
    tool = ScriptedTool(max_concurrency=1)
    h = harness(tool)
    svc = await h.start()
    running = (await svc.create("alice", "scripted", {})).id
    queued = (await svc.create("alice", "scripted", {})).id
    [run] = await tool.started(1)
    with pytest.raises(NotFound):
        await svc.cancel("bob", running)  # another user's generation does not exist for bob

    assert generation(await svc.cancel("alice", queued))["status"] == "cancelled"
    assert await h.updates("alice", queued) == ["queued", "cancelled"]  # it never ran

    cancelled = generation(await svc.cancel("alice", running))
    assert cancelled["status"] == "cancelled" and "finishedAt" in cancelled
    assert run.stopped_upstream and not run.detached
    assert await h.updates("alice", running) == ["queued", "running", "cancelled"]
    await asyncio.sleep(0.05)
    assert len(tool.runs) == 1  # the cancelled queued run was never started
    with pytest.raises(IllegalTransition):
        await svc.cancel("alice", running)


async def test_records_survive_a_restart_and_runs_in_flight_are_resolved(harness: Any) -> None:
    """Same data directory, new process: history is kept; a run of a tool that cannot
    re-attach is failed with ``interrupted_by_restart``; one that can is followed to its
    end; a queued run is started. Nothing stays ``running``."""
    plain, attach = ScriptedTool("plain", max_concurrency=1), ScriptedTool("attach", can_reattach=True)
    first = harness(plain, attach)
    svc = await first.start()
    done = (await svc.create("alice", "plain", {"prompt": "one"})).id
    (await plain.started(1))[0].finish.set_result("ok")
    await first.wait_status("alice", done, "completed")
    lost = (await svc.create("alice", "plain", {"prompt": "two"})).id
    waiting = (await svc.create("alice", "plain", {"prompt": "three"})).id
    followed = (await svc.create("alice", "attach", {"prompt": "four"})).id
    vanished = (await svc.create("bob", "attach", {"prompt": "five"})).id
    await plain.started(2)
    await attach.started(2)
    await first.stop()  # the process stops: runs are detached, not cancelled
    assert [(r.detached, r.stopped_upstream) for r in plain.runs[1:] + attach.runs] == [(True, False)] * 3

    plain2, attach2 = ScriptedTool("plain", max_concurrency=1), ScriptedTool("attach", can_reattach=True)
    second = harness(plain2, attach2)
    svc2 = await second.start()
    assert generation(await svc2.get("alice", done))["outputs"][0]["text"] == "Hello"
    failed = await second.wait_status("alice", lost, "failed")  # its takeover job found nothing to follow
    assert failed["error"]["code"] == "interrupted_by_restart"

    reattached = await attach2.started(2)
    assert all(r.reattached for r in reattached)
    assert {r.ctx.upstream_ref for r in reattached} == {f"ref-{followed}", f"ref-{vanished}"}
    by_id = {r.ctx.generation_id: r for r in reattached}
    by_id[followed].finish.set_result("ok")
    by_id[vanished].finish.set_result(None)  # upstream no longer knows the run
    assert (await second.wait_status("alice", followed, "completed"))["outputs"][0]["text"] == "Hello"
    gone = await second.wait_status("bob", vanished, "failed")
    assert gone["error"]["code"] == "interrupted_by_restart"

    [restarted] = await plain2.started(1)  # the queued run starts in the new process
    assert restarted.ctx.generation_id == waiting
    restarted.finish.set_result("ok")
    await second.wait_status("alice", waiting, "completed")
    # the new process published the resolutions on the (new) stream
    assert await second.updates("alice", lost) == ["failed"]
    assert await second.updates("alice", waiting) == ["running", "completed"]
    page = await svc2.list("alice", limit=10, cursor=None, status=None)
    assert [g.id for g in page.items] == [followed, waiting, lost, done]
    assert {g.status for g in page.items} == {"completed", "failed"}


async def test_a_tool_removed_from_the_config_fails_its_runs_on_start(harness: Any) -> None:
    gone = ScriptedTool("gone", can_reattach=True)
    first = harness(gone)
    svc = await first.start()
    gen_id = (await svc.create("alice", "gone", {})).id
    await gone.started(1)
    await first.stop()
    second = harness(ScriptedTool("other"))
    svc2 = await second.start()
    if second.database_url is None:
        # embedded: this process is the whole product, so the run can only fail
        failed = generation(await svc2.get("alice", gen_id))
        assert failed["status"] == "failed" and failed["error"] == {
            "code": "tool_error", "message": "The tool 'gone' is no longer configured"}
        return
    # many processes: another process may still have the tool (a rolling deploy), so the
    # run waits for a worker of its tool's queue instead of failing ...
    assert generation(await svc2.get("alice", gen_id))["status"] == "running"
    assert not svc2._contexts  # nothing of it runs here
    # ... and one that has the tool takes it over
    back = ScriptedTool("gone", can_reattach=True)
    third = harness(back)
    await third.start()
    [run] = await back.started(1)
    assert run.ctx.generation_id == gen_id and run.reattached
    run.finish.set_result("ok")
    await third.wait_status("alice", gen_id, "completed")


async def test_list_is_newest_first_with_cursor_pages_and_a_status_filter(harness: Any) -> None:
    tool = ScriptedTool(max_concurrency=2)
    h = harness(tool, max_per_user=10)
    svc = await h.start()
    ids = [(await svc.create("alice", "scripted", {"n": i + 1})).id for i in range(5)]
    await svc.create("bob", "scripted", {})
    runs = await tool.started(2)
    runs[0].finish.set_result("ok")
    await h.wait_status("alice", ids[0], "completed")
    await tool.started(3)  # the freed slot went to the next in line

    seen, cursor, pages = [], None, 0
    while True:
        page = as_json(await svc.list("alice", limit=2, cursor=cursor, status=None))
        assert not schema_errors(page, "GenerationPage")
        seen += [g["id"] for g in page["items"]]
        pages += 1
        cursor = page.get("nextCursor")
        if cursor is None:
            break
    assert seen == ids[::-1] and pages == 3
    completed = await svc.list("alice", limit=10, cursor=None, status="completed")
    assert [g.id for g in completed.items] == [ids[0]]
    queued = await svc.list("alice", limit=10, cursor=None, status="queued")
    assert [g.id for g in queued.items] == ids[:2:-1]
    with pytest.raises(ValueError):
        await svc.list("alice", limit=2, cursor="not-a-cursor", status=None)
    for run in tool.runs[1:]:
        run.finish.set_result("ok")


async def test_progress_over_the_event_limit_drops_the_preview_and_splits_the_text(harness: Any, caplog: Any) -> None:
    import logging

    tool = ScriptedTool()
    h = harness(tool)
    svc = await h.start()
    svc.publisher.max_event_bytes = 4096
    created = generation(await svc.create("alice", "scripted", {"prompt": "hi"}))
    [run] = await tool.started(1)
    await h.wait_status("alice", created["id"], "running")
    logger = logging.getLogger("livegate")
    logger.addHandler(caplog.handler)
    try:
        await run.ctx.progress(0.6, preview=b"\xff" * 10_000, preview_media_type="image/png")
        await run.ctx.flush()  # type: ignore[attr-defined]
        await run.ctx.progress(0.7, preview=b"\x01" * 100, partial_text="t" * 8000)
        await run.ctx.flush()  # type: ignore[attr-defined]
        run.finish.set_result("ok")
        await h.wait_status("alice", created["id"], "completed")
    finally:
        logger.removeHandler(caplog.handler)
    events = await h.events("alice")
    assert all(len(str(e)) < 4096 for e in events)
    progress = {e["fraction"]: e for e in events if e["type"] == "generationProgress"}
    assert "preview" not in progress.get(0.6, {})
    assert progress[0.7]["preview"]["mediaType"] == "image/jpeg"
    # A text delta is never dropped: it is split over events that each fit, in order.
    parts = [(e["textOffset"], e["textDelta"]) for e in events if "textDelta" in e and e["fraction"] == 0.7]
    assert len(parts) > 1 and "".join(d for _, d in parts) == "t" * 8000  # the tool replaced "Hel"
    assert [o for o, _ in parts] == [sum(len(d) for _, d in parts[:i]) for i in range(len(parts))]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("preview dropped" in w for w in warnings), warnings


async def test_a_claimed_run_whose_job_was_lost_is_deferred_again(harness: Any) -> None:
    """A process that claimed a run and died before deferring its job leaves it queued
    with its slot taken; the sweep defers it again and it runs."""
    import time

    from livegate.store import GenerationRow

    tool = ScriptedTool()
    h = harness(tool)
    svc = await h.start()
    now = time.time()
    # the state a crash between claim and defer leaves: claimed a minute ago, no job
    orphan = GenerationRow(id="gen_00000000000000aa", user_id="carol", tool_id="scripted", status="queued",
                           inputs={}, created_at=now - 61, updated_at=now - 61)
    await svc.store.insert(orphan)
    await svc.store.update(orphan.id, dispatched_at=now - 60, owner="gone:1:x")
    assert await svc.redefer_lost_claims() == 1
    [run] = await tool.started(1)
    assert run.ctx.generation_id == orphan.id
    run.finish.set_result("ok")
    await h.wait_status("carol", orphan.id, "completed")
    assert await svc.redefer_lost_claims() == 0


async def test_a_running_run_whose_job_ended_without_it_is_taken_over(harness: Any) -> None:
    """A runner whose first database write failed in an outage ended its job (procrastinate
    then deletes it) and left the record ``running`` with nobody on it: the sweep finds the
    job gone and takes the run over (re-attached by its upstream reference). Only a durable
    engine can tell (PostgreSQL)."""
    import time

    from livegate.store import GenerationRow

    tool = ScriptedTool(can_reattach=True)
    h = harness(tool)
    svc = await h.start()
    if not svc.engine.durable:
        assert await svc.redefer_lost_claims() == 0
        return  # embedded: the restart recovery of a data directory covers this (other tests)
    now = time.time()
    stuck = GenerationRow(id="gen_00000000000000ab", user_id="dora", tool_id="scripted", status="running",
                          inputs={}, created_at=now - 10, updated_at=now - 10, started_at=now - 5,
                          dispatched_at=now - 60, attempt=1, owner="gone:1:x", job_id="987654321",
                          upstream_ref="prompt-1")
    await svc.store.insert(stuck)
    assert not await svc.engine.exists("987654321")
    assert await svc.redefer_lost_claims() == 1
    [run] = await tool.started(1)
    assert run.ctx.generation_id == stuck.id and run.reattached
    run.finish.set_result("ok")
    await h.wait_status("dora", stuck.id, "completed")
    assert await svc.redefer_lost_claims() == 0


async def test_fair_use_one_user_cannot_starve_another(harness: Any) -> None:
    """A user over their share of a tool's slots (``tool_share_per_user``) gets no more of
    them while another user waits; alone they may use the whole tool (work-conserving).
    Beyond ``max_queued_per_user`` queued runs, creating answers ``too_many_queued``."""
    from livegate.errors import TooManyQueued

    tool = ScriptedTool(max_concurrency=2)
    h = harness(tool, max_per_user=10)
    svc = await h.start()
    svc.tool_share_per_user, svc.max_queued_per_user = 0.5, 3
    alone = [(await svc.create("alice", "scripted", {})).id for _ in range(2)]
    await tool.started(2)  # alone, alice uses both slots
    hers = [(await svc.create("alice", "scripted", {})).id for _ in range(3)]
    with pytest.raises(TooManyQueued):
        await svc.create("alice", "scripted", {})  # 3 queued already
    bobs = (await svc.create("bob", "scripted", {})).id
    first, second = sorted(tool.runs[:2], key=lambda r: alone.index(r.ctx.generation_id))  # any start order
    first.finish.set_result("ok")
    await h.wait_status("alice", alone[0], "completed")
    [*_, third] = await tool.started(3)
    assert third.ctx.generation_id == bobs  # bob waited: the freed slot is his, not alice's next
    second.finish.set_result("ok")
    [*_, fourth] = await tool.started(4)
    assert fourth.ctx.generation_id == hers[0]  # nobody else waits: alice again
    for run in tool.runs[2:]:
        run.finish.set_result("ok")
    await h.wait_status("bob", bobs, "completed")
    async with asyncio.timeout(15):  # the rest of alice's runs go through, one slot at a time
        while [(await svc.get("alice", g)).status for g in hers] != ["completed"] * len(hers):
            for run in tool.runs:
                if run.waiting and not run.finish.done():
                    run.finish.set_result("ok")
            await asyncio.sleep(0.02)


async def test_no_job_outlives_its_run(harness: Any) -> None:
    """The engine keeps no job rows for ended runs (completed, failed, cancelled while
    queued or running): the generation's record is the only history."""
    from livegate.errors import ToolError

    tool = ScriptedTool(max_concurrency=1)
    h = harness(tool)
    svc = await h.start()
    done, failed, running, queued = [(await svc.create("alice", "scripted", {})).id for _ in range(4)]
    (await tool.started(1))[0].finish.set_result("ok")
    await h.wait_status("alice", done, "completed")
    (await tool.started(2))[1].finish.set_result(ToolError("boom", code="tool_error"))
    await h.wait_status("alice", failed, "failed")
    await tool.started(3)
    await svc.cancel("alice", queued)
    await svc.cancel("alice", running)
    # the worker deletes a job just after its runner returned (the records are final already)
    async with asyncio.timeout(5):
        while list(await svc.engine.app.job_manager.list_jobs_async()):
            await asyncio.sleep(0.02)


async def test_streamed_text_goes_out_as_deltas_that_rebuild_every_text_the_tool_sent(harness: Any) -> None:
    """Appends, emoji outside the BMP (UTF-16 offsets), a cut and a rewrite: applying each
    event's ``text[:textOffset] + textDelta`` gives exactly the tool's text at that point."""
    from livegate.protocol.textdelta import apply

    tool = ScriptedTool()
    h = harness(tool)
    svc = await h.start()
    created = generation(await svc.create("alice", "scripted", {"prompt": "hi"}))
    [run] = await tool.started(1)
    await h.wait_status("alice", created["id"], "running")
    sent = ["Hel", "Hello 🌅", "Hello 🌅 wor", "Hello 🌅 world😀!", "Hello", "Help me"]
    for i, text in enumerate(sent[1:]):
        await run.ctx.progress(0.6 + i / 100, partial_text=text)
        await run.ctx.flush()  # type: ignore[attr-defined]
    snapshot = (await h.wait_status("alice", created["id"], "running"))["progress"]
    assert snapshot["partialText"] == "Help me"  # GET: the text so far
    run.finish.set_result("ok")
    await h.wait_status("alice", created["id"], "completed")
    events = [e for e in await h.events("alice") if "textDelta" in e]
    texts, text = [], ""
    for event in events:
        step = apply(text, event["textOffset"], event["textDelta"])
        assert step is not None
        texts.append(text := step)
    assert texts == [*sent, "Hello"]  # the scripted tool ends with "Hello"
    assert [e["textOffset"] for e in events[1:4]] == [3, 8, 12]  # 🌅 counts 2 UTF-16 units
