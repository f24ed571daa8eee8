"""The comfyui tool against the fake ComfyUI, through every captured scenario.

The fake replays ``tests/fixtures/comfyui`` (a real ComfyUI 0.8.0 capture) at
``COMFY_SPEED``; the tool is driven with a :class:`RecordingRunContext`, so these tests see
exactly what the tool reports: progress, previews, stored outputs and errors.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from livegate.errors import ToolError
from livegate.testing import RecordingRunContext
from livegate.testing.fake_comfyui import FakeComfyUI
from livegate.tools.base import ToolSpec
from livegate.tools.comfyui import ComfyUITool

from .conftest import COMFY_FIXTURES

WORKFLOWS = COMFY_FIXTURES / "workflows"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
async def make(fake_comfy: FakeComfyUI) -> AsyncIterator[Any]:
    tools: list[ComfyUITool] = []

    def build(workflow: str | dict[str, Any], **settings: Any) -> ComfyUITool:
        merged = {
            "base_url": fake_comfy.base_url,
            "workflow": str(WORKFLOWS / workflow) if isinstance(workflow, str) else workflow,
            "poll_interval_seconds": 0.25,
            "reconnect_initial_delay_seconds": 0.02,
            "reconnect_max_delay_seconds": 0.1,
            "cancel_timeout_seconds": 5,
            **settings,
        }
        tool = ComfyUITool(ToolSpec(id="comfy", kind="comfyui", title="ComfyUI", settings=merged))
        tools.append(tool)
        return tool

    yield build
    for tool in tools:
        await tool.aclose()


async def run_error(tool: ComfyUITool, ctx: RecordingRunContext | None = None) -> ToolError:
    with pytest.raises(ToolError) as caught:
        await tool.run(ctx or RecordingRunContext({}))
    return caught.value


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def messages(ctx: RecordingRunContext) -> list[str]:
    return [e.message for e in ctx.progress_events if e.message]


# -- success, cached, previews ------------------------------------------------------------


async def test_success_then_cached(make: Any, fake_comfy: FakeComfyUI) -> None:
    tool = make("success.json")
    ctx = RecordingRunContext({})
    [output] = await tool.run(ctx)

    # the submission carries our client id and our own prompt id, saved before submitting
    [body] = fake_comfy.submitted
    assert ctx.upstream_refs == [body["prompt_id"]] and body["client_id"]
    assert body["prompt"] == json.loads((WORKFLOWS / "success.json").read_text())

    assert (output.kind, output.media_type, output.filename) == ("image", "image/png", "gateway_capture_00001_.png")
    data = ctx.output_bytes(output.id)
    assert data.startswith(PNG_MAGIC) and (output.width, output.height) == image_size(data)

    # node-level progress mapped to one rising overall fraction, kept below 1 until the end
    assert ctx.fractions == sorted(ctx.fractions) and ctx.fractions[-1] < 1
    assert messages(ctx)[0] == "Queued on ComfyUI"
    assert {"VAEEncodeTiled 1/7", "VAEDecodeTiled 23/23", "Running SaveImage (node 9)"} <= set(messages(ctx))
    steps = [(e.step, e.total_steps) for e in ctx.progress_events if e.step is not None]
    assert (1, 7) in steps and (23, 23) in steps
    # PreviewImage's temp file is fetched through /view and shown as a preview, not a result
    [preview] = ctx.previews
    assert preview.preview_media_type == "image/png" and (preview.preview or b"").startswith(PNG_MAGIC)

    cached = RecordingRunContext({})
    [again] = await tool.run(cached)  # the identical prompt: ComfyUI answers from its cache
    assert "10 node(s) cached" in messages(cached)
    assert not [m for m in messages(cached) if m.startswith("Running")]
    assert again.filename == "gateway_capture_00001_.png" and cached.output_bytes(again.id) == data


async def test_inputs_are_mapped_into_the_workflow(make: Any, fake_comfy: FakeComfyUI) -> None:
    tool = make(
        "success.json",
        inputs={
            "color": {"schema": {"type": "integer", "minimum": 0, "maximum": 16777215}, "node": "1", "input": "color"},
            "size": {
                "schema": {"type": "integer", "minimum": 64, "maximum": 512},
                "targets": [{"node": "1", "input": "width"}, {"node": "1", "input": "height"}],
            },
        },
    )
    schema = tool.input_schema
    assert schema["properties"]["color"]["default"] == 3368652  # the workflow's own value
    await tool.run(RecordingRunContext({"color": 255, "size": 128.0}))  # 128.0 is a JSON Schema integer
    submitted = fake_comfy.submitted[0]["prompt"]["1"]["inputs"]
    assert (submitted["color"], submitted["width"], submitted["height"]) == (255, 128, 128)
    assert isinstance(submitted["width"], int)
    assert (await run_error(tool, RecordingRunContext({"color": -1}))).code == "invalid_inputs"
    assert len(fake_comfy.submitted) == 1  # refused before anything reached ComfyUI


@pytest.mark.parametrize(
    ("workflow", "preview_metadata", "event"),
    [("websocket_image.json", False, 1), ("websocket_image_feature_flags.json", True, 4)],
)
async def test_websocket_images_are_previews_and_outputs(
    make: Any, workflow: str, preview_metadata: bool, event: int
) -> None:
    """SaveImageWebsocket pushes its images as binary frames: event 1 for a plain client,
    event 4 (with metadata naming our prompt) after ``supports_preview_metadata``."""
    ctx = RecordingRunContext({})
    outputs = await make(workflow, preview_metadata=preview_metadata).run(ctx)
    assert [(o.kind, o.media_type, o.filename) for o in outputs] == [
        ("image", "image/png", "websocket_1.png"),
        ("image", "image/png", "websocket_2.png"),
    ]
    for output in outputs:
        assert image_size(ctx.output_bytes(output.id)) == (64, 64) == (output.width, output.height)
    assert len(ctx.previews) == 2
    assert [p.preview for p in ctx.previews] == [ctx.output_bytes(o.id) for o in outputs]
    assert all(p.preview_media_type == "image/png" for p in ctx.previews)


# -- failures reported by ComfyUI ----------------------------------------------------------


async def test_execution_error_names_the_failing_node(make: Any) -> None:
    error = await run_error(make("execution_error.json"))
    assert error.code == "execution_error" and error.node_id == "3"
    assert "SaveImage (node 3) failed" in error.message


VALIDATION_FIXTURES = [
    ("post_prompt_400_unknown_class", ["does not exist"]),
    ("post_prompt_400_missing_input", ["node 2 (SaveImage): required_input_missing", "images"]),
    ("post_prompt_400_value_out_of_range", ["value_smaller_than_min"]),
    ("post_prompt_400_invalid_combo", ["value_not_in_list"]),
    ("post_prompt_400_bad_link_type", ["return_type_mismatch"]),
    ("post_prompt_400_no_outputs", ["Prompt has no outputs"]),
]


@pytest.mark.parametrize(("fixture", "needles"), VALIDATION_FIXTURES)
async def test_validation_errors_are_bad_requests_with_node_errors(
    make: Any, fake_comfy: FakeComfyUI, fixture: str, needles: list[str]
) -> None:
    prompt = json.loads((COMFY_FIXTURES / "http" / f"{fixture}.json").read_text())["request"]["body"]["prompt"]
    error = await run_error(make(prompt))
    assert error.code == "upstream_bad_request" and error.message.startswith("ComfyUI refused the workflow")
    for needle in needles:
        assert needle in error.message
    assert fake_comfy.submitted == [] and fake_comfy.running_prompt_id is None


async def test_interrupt_from_elsewhere_is_an_execution_error(make: Any, fake_comfy: FakeComfyUI) -> None:
    """Someone interrupts our prompt on ComfyUI's own UI: the run fails, naming the node."""
    ctx = RecordingRunContext({})
    task = asyncio.create_task(make("slow_blur_chain.json").run(ctx))
    prompt_id = await ctx.wait_for_upstream_ref()
    await fake_comfy.wait_for_node(prompt_id, "2")
    async with httpx.AsyncClient(base_url=fake_comfy.base_url) as client:
        await client.post("/interrupt", json={"prompt_id": prompt_id})
    with pytest.raises(ToolError) as caught:
        await task
    assert caught.value.code == "execution_error" and caught.value.node_id == "3"
    assert "interrupted on ComfyUI at ImageBlur (node 3)" in caught.value.message


# -- cancellation and timeouts stop the upstream work ----------------------------------------


def history_outcome(entry: dict[str, Any]) -> list[str]:
    return [m[0] for m in entry["status"]["messages"]]


async def test_cancelling_a_running_prompt_interrupts_it(make: Any, fake_comfy: FakeComfyUI) -> None:
    ctx = RecordingRunContext({})
    task = asyncio.create_task(make("slow_blur_chain.json").run(ctx))
    prompt_id = await ctx.wait_for_upstream_ref()
    await fake_comfy.wait_for_node(prompt_id, "2")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # the tool waited for ComfyUI to confirm: the prompt is over, interrupted, nothing saved
    entry = fake_comfy.history_entry(prompt_id)
    assert entry is not None and history_outcome(entry)[-1] == "execution_interrupted"
    assert entry["outputs"] == {} and not ctx.outputs


async def test_queue_of_three_prompts_and_cancelling_a_pending_one(make: Any, fake_comfy: FakeComfyUI) -> None:
    """The ``queue_three_prompts`` capture: A, B, C queued back to back; C is removed with
    ``POST /queue {"delete": [C]}`` while pending and never runs; A and B run in order."""
    tool = make(
        "queue_item_A.json",
        inputs={
            "color": {"schema": {"type": "integer"}, "node": "1", "input": "color"},
            "prefix": {"schema": {"type": "string"}, "node": "3", "input": "filename_prefix"},
        },
    )
    contexts = [
        RecordingRunContext({"color": colour, "prefix": f"gateway_queue_{name}"})
        for name, colour in (("A", 255), ("B", 65280), ("C", 16711680))
    ]
    def submitted(count: int) -> Any:
        return lambda: len(fake_comfy.submitted) == count

    tasks = []
    for ctx in contexts:  # submitted in this order
        tasks.append(asyncio.create_task(tool.run(ctx)))
        await ctx.wait_for_upstream_ref()
        await fake_comfy.wait_for(submitted(len(tasks)))
        fake_comfy.pause()  # A stays on its first frames until the three are queued
    a, b, c = (ctx.upstream_ref for ctx in contexts)
    async with httpx.AsyncClient(base_url=fake_comfy.base_url) as client:
        queue = (await client.get("/queue")).json()
    assert [item[1] for item in queue["queue_pending"]][-1] == c  # C waits behind the others

    tasks[2].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[2]
    async with httpx.AsyncClient(base_url=fake_comfy.base_url) as client:
        queue = (await client.get("/queue")).json()
    assert c not in [item[1] for item in queue["queue_pending"] + queue["queue_running"]]

    fake_comfy.resume()
    first, second = await asyncio.gather(*tasks[:2])
    assert first[0].filename == "gateway_queue_A_00001_.png"
    assert second[0].filename == "gateway_queue_B_00001_.png"
    assert list(fake_comfy._history) == [a, b] and fake_comfy.history_entry(c or "") is None


async def test_the_tools_own_timeout_interrupts_the_prompt(make: Any, fake_comfy: FakeComfyUI) -> None:
    ctx = RecordingRunContext({})
    error = await run_error(make("slow_blur_chain.json", timeout_seconds=0.3), ctx)
    assert error.code == "timeout"
    entry = await fake_comfy.wait_for_history(ctx.upstream_ref or "")
    assert history_outcome(entry)[-1] == "execution_interrupted"


# -- disconnects: completion is never missed -------------------------------------------------


async def test_websocket_drop_mid_run_reconnects_and_completes(make: Any, fake_comfy: FakeComfyUI) -> None:
    """As in ``reconnect.jsonl``: the socket goes away while node 2 runs; on reconnect
    ComfyUI replays nothing and says ``executing {node}`` without a prompt id."""
    ctx = RecordingRunContext({})
    task = asyncio.create_task(make("slow_blur_chain.json").run(ctx))
    prompt_id = await ctx.wait_for_upstream_ref()
    await fake_comfy.wait_for_node(prompt_id, "2")
    await fake_comfy.drop_connections()
    await fake_comfy.wait_for(lambda: fake_comfy.connection_count == 1)  # the tool came back
    [output] = await task
    assert output.filename.startswith("gateway_slow_") and output.kind == "image"
    assert ctx.output_bytes(output.id).startswith(PNG_MAGIC)
    assert ctx.fractions == sorted(ctx.fractions)
    assert "Running ImageBlur (node 4)" in messages(ctx)  # followed live after the reconnect


async def test_completion_while_disconnected_is_read_from_history(make: Any, fake_comfy: FakeComfyUI) -> None:
    """The socket drops and cannot be reopened until after the prompt ended: ``/history``
    tells the outcome and the outputs."""
    ctx = RecordingRunContext({})
    task = asyncio.create_task(make("slow_blur_chain.json", poll_interval_seconds=0.1).run(ctx))
    prompt_id = await ctx.wait_for_upstream_ref()
    await fake_comfy.wait_for_node(prompt_id, "2")
    fake_comfy.accept_websockets = False
    await fake_comfy.drop_connections()
    [output] = await asyncio.wait_for(task, 10)
    assert fake_comfy.connection_count == 0  # never reconnected: history did it all
    assert output.filename.startswith("gateway_slow_") and output.kind == "image"
    assert ctx.output_bytes(output.id).startswith(PNG_MAGIC)


async def test_unreachable_comfyui_is_unavailable(make: Any) -> None:
    async with FakeComfyUI(COMFY_FIXTURES) as gone:
        url = gone.base_url
    error = await run_error(make("success.json", base_url=url))
    assert error.code == "upstream_unavailable"


# -- re-attaching after a gateway restart ----------------------------------------------------


async def test_a_stopping_gateway_leaves_the_prompt_running_and_reattach_follows_it(
    make: Any, fake_comfy: FakeComfyUI
) -> None:
    tool = make("slow_blur_chain.json")
    ctx = RecordingRunContext({})
    task = asyncio.create_task(tool.run(ctx))
    prompt_id = await ctx.wait_for_upstream_ref()
    await fake_comfy.wait_for_node(prompt_id, "2")
    ctx.detaching = True  # what the generation service sets when the process stops
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fake_comfy.running_prompt_id == prompt_id  # not interrupted

    # a new process, a new tool instance, only the saved prompt id
    after = RecordingRunContext({}, upstream_ref=prompt_id)
    [output] = await make("slow_blur_chain.json").reattach(after)
    assert output.filename.startswith("gateway_slow_") and output.kind == "image"
    assert after.output_bytes(output.id).startswith(PNG_MAGIC)
    assert after.progress_events  # followed live again (same client id: frames come back)


async def test_reattach_to_a_finished_prompt_reads_the_history(make: Any, fake_comfy: FakeComfyUI) -> None:
    first = RecordingRunContext({})
    await make("success.json").run(first)
    again = RecordingRunContext({}, upstream_ref=first.upstream_ref)
    [output] = await make("success.json").reattach(again)
    assert output.filename == "gateway_capture_00001_.png"
    failed = RecordingRunContext({})
    await run_error(make("execution_error.json"), failed)
    with pytest.raises(ToolError) as caught:
        await make("execution_error.json").reattach(RecordingRunContext({}, upstream_ref=failed.upstream_ref))
    assert caught.value.code == "execution_error" and caught.value.node_id == "3"


async def test_reattach_to_an_unknown_prompt_is_impossible(make: Any) -> None:
    tool = make("success.json")
    assert await tool.reattach(RecordingRunContext({}, upstream_ref="00000000-0000-0000-0000-000000000000")) is None
    assert await tool.reattach(RecordingRunContext({})) is None


def test_example_tools_file_builds(tmp_path: Path) -> None:
    """``tools.example.toml`` names a workflow relative to itself; the kinds build from it."""
    from livegate.tools import build_tools, example_tools_path, load_tool_specs

    text = example_tools_path().read_text().replace("workflows/success.json", str(WORKFLOWS / "success.json"))
    (tmp_path / "tools.toml").write_text(text)
    tools = build_tools(load_tool_specs(tmp_path / "tools.toml"))
    assert {t.spec.kind for t in tools.values()} == {"demo", "openai", "comfyui"}


async def test_comfyui_dying_mid_run_is_unavailable_not_a_hang(make: Any) -> None:
    """The whole server goes away (socket and HTTP): the run fails once ComfyUI has been
    unreachable for ``unavailable_timeout_seconds``."""
    own = FakeComfyUI(COMFY_FIXTURES, speed=0.05)
    await own.start()
    ctx = RecordingRunContext({})
    task = asyncio.create_task(make("slow_blur_chain.json", base_url=own.base_url, unavailable_timeout_seconds=0.5,
                                    request_timeout_seconds=0.5).run(ctx))
    prompt_id = await ctx.wait_for_upstream_ref()
    await own.wait_for_node(prompt_id, "2")
    await own.stop()
    with pytest.raises(ToolError) as caught:
        await asyncio.wait_for(task, 10)
    assert caught.value.code == "upstream_unavailable" and "unreachable" in caught.value.message
