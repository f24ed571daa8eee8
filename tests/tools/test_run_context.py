from __future__ import annotations

import asyncio

import pytest

from livegate.testing import RecordingRunContext


async def test_records_progress_outputs_and_refs() -> None:
    ctx = RecordingRunContext({"prompt": "x"}, upstream_ref=None)
    await ctx.progress(0.5, step=1, total_steps=2, message="half", partial_text="he")
    stored = await ctx.store_output(b"abc", kind="text", media_type="text/plain", filename="a.txt")
    await ctx.save_upstream_ref("ref-1")
    assert ctx.inputs == {"prompt": "x"}
    assert ctx.progress_events[0].message == "half"
    assert ctx.fractions == [0.5]
    assert stored.size_bytes == 3 and ctx.output_bytes(stored.id) == b"abc"
    assert ctx.upstream_ref == "ref-1" and ctx.upstream_refs == ["ref-1"]


async def test_wait_for_progress_wakes_on_new_events() -> None:
    ctx = RecordingRunContext()

    async def later() -> None:
        await asyncio.sleep(0)
        await ctx.progress(0.1)
        await ctx.progress(0.7, message="late")

    task = asyncio.create_task(later())
    event = await ctx.wait_for_progress(lambda p: p.fraction > 0.5, timeout=2)
    assert event.message == "late"
    await task
    # already recorded events are found at once
    assert (await ctx.wait_for_progress(timeout=0.01)).fraction == 0.1


async def test_wait_times_out_with_a_useful_message() -> None:
    ctx = RecordingRunContext()
    with pytest.raises(TimeoutError, match="no progress event"):
        await ctx.wait_for_progress(lambda p: False, timeout=0.05)
