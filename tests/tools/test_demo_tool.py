from __future__ import annotations

import asyncio
import io
import itertools
import wave

import pytest
from jsonschema import Draft202012Validator
from PIL import Image, ImageChops, ImageStat

from livegate.errors import ToolError
from livegate.testing import RecordingRunContext
from livegate.tools.base import ToolSpec
from livegate.tools.demo import DemoTool
from livegate.tools.settings import ToolConfigError


def make(**settings: object) -> DemoTool:
    return DemoTool(ToolSpec(id="demo", kind="demo", title="Demo", settings=dict(settings)))


def test_input_schema_is_a_form_ready_2020_12_schema() -> None:
    schema = make().input_schema
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"].endswith("2020-12/schema")
    props = schema["properties"]
    assert list(props) == ["prompt", "steps", "durationSeconds", "outputs", "width", "height", "seed"]
    for name, prop in props.items():
        assert prop["title"] and prop["description"], name
        if name != "seed":
            assert "default" in prop, name
    assert props["outputs"]["default"] == ["image", "text", "audio"]
    assert props["outputs"]["uniqueItems"] is True
    assert (props["steps"]["minimum"], props["steps"]["maximum"]) == (1, 50)
    # the defaults themselves are valid inputs
    defaults = {k: v["default"] for k, v in props.items() if "default" in v}
    assert not list(Draft202012Validator(schema).iter_errors(defaults))


def test_settings_set_the_defaults_and_unknown_settings_are_refused() -> None:
    schema = make(duration_seconds=1.5, steps=4).input_schema
    assert schema["properties"]["durationSeconds"]["default"] == 1.5
    assert schema["properties"]["steps"]["default"] == 4
    with pytest.raises(ToolConfigError, match="unknown setting"):
        make(durration_seconds=1)
    with pytest.raises(ToolConfigError, match="steps"):
        make(steps=0)


async def test_a_run_produces_real_files_and_streams_progress() -> None:
    ctx = RecordingRunContext({"prompt": "a red kite", "steps": 5, "durationSeconds": 0.25, "width": 200, "height": 120})
    loop = asyncio.get_running_loop()
    started = loop.time()
    outputs = await make().run(ctx)
    assert loop.time() - started >= 0.25

    assert [o.kind for o in outputs] == ["image", "text", "audio"]
    image, text, audio = outputs

    png = Image.open(io.BytesIO(ctx.output_bytes(image.id)))
    assert png.format == "PNG" and png.size == (200, 120)
    assert (image.width, image.height, image.media_type) == (200, 120, "image/png")
    assert image.size_bytes == len(ctx.output_bytes(image.id))

    assert text.media_type.startswith("text/plain")
    assert text.text and ctx.output_bytes(text.id).decode() == text.text
    assert "a red kite" in text.text

    with wave.open(io.BytesIO(ctx.output_bytes(audio.id))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        seconds = wav.getnframes() / wav.getframerate()
    assert 1.0 <= seconds <= 2.0
    assert audio.media_type == "audio/wav" and audio.duration_seconds == pytest.approx(seconds)

    events = ctx.progress_events
    assert [e.step for e in events] == [1, 2, 3, 4, 5]
    assert all(e.total_steps == 5 and e.message for e in events)
    assert ctx.fractions == sorted(ctx.fractions) and ctx.fractions[-1] == 1.0
    for event in events:
        assert event.preview_media_type == "image/jpeg"
        Image.open(io.BytesIO(event.preview or b"")).verify()
    texts = [e.partial_text or "" for e in events]
    assert all(later.startswith(earlier) for earlier, later in itertools.pairwise(texts))
    assert texts[-1] == text.text
    assert len(set(texts)) == len(texts)  # word by word: every step adds something


async def test_previews_sharpen_step_by_step() -> None:
    ctx = RecordingRunContext({"steps": 6, "durationSeconds": 0, "outputs": ["image"]})
    await make().run(ctx)
    frames = [Image.open(io.BytesIO(e.preview or b"")).convert("L") for e in ctx.progress_events]
    # every frame is closer to the finished picture than the one before
    distance = [ImageStat.Stat(ImageChops.difference(f, frames[-1])).mean[0] for f in frames]
    assert distance == sorted(distance, reverse=True) and distance[0] > 5 * (distance[-2] + 0.01)


async def test_same_seed_same_bytes_other_seed_other_picture() -> None:
    async def png(seed: int) -> bytes:
        ctx = RecordingRunContext({"seed": seed, "durationSeconds": 0, "steps": 1, "width": 64, "height": 64})
        outputs = await make().run(ctx)
        return b"".join(ctx.output_bytes(o.id) for o in outputs)

    assert await png(7) == await png(7)
    assert await png(7) != await png(8)


@pytest.mark.parametrize(
    ("wanted", "kinds"),
    [(["text"], ["text"]), (["audio"], ["audio"]), (["audio", "image"], ["image", "audio"])],
)
async def test_outputs_can_be_narrowed(wanted: list[str], kinds: list[str]) -> None:
    ctx = RecordingRunContext({"outputs": wanted, "durationSeconds": 0, "steps": 2})
    outputs = await make().run(ctx)
    assert [o.kind for o in outputs] == kinds
    has_image, has_text = "image" in wanted, "text" in wanted
    assert all((e.preview is not None) == has_image for e in ctx.progress_events)
    assert all((e.partial_text is not None) == has_text for e in ctx.progress_events)


@pytest.mark.parametrize(
    "inputs",
    [{"steps": 0}, {"outputs": ["video"]}, {"outputs": []}, {"width": 2000}, {"colour": "red"}, {"prompt": ""}],
)
async def test_invalid_inputs_are_refused(inputs: dict[str, object]) -> None:
    with pytest.raises(ToolError) as caught:
        await make().run(RecordingRunContext(inputs))
    assert caught.value.code == "invalid_inputs"


async def test_cancellation_stops_the_run_promptly() -> None:
    ctx = RecordingRunContext({"steps": 50, "durationSeconds": 5})
    task = asyncio.create_task(make().run(ctx))
    await ctx.wait_for_progress(timeout=5)
    seen = len(ctx.progress_events)
    task.cancel()
    async with asyncio.timeout(1):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(ctx.progress_events) == seen and not ctx.outputs


async def test_a_takeover_runs_it_again_with_the_same_outputs() -> None:
    """A demo run whose process died is restarted by the process taking it over: it is
    deterministic, so the outputs are the same bytes as an uninterrupted run's."""
    inputs = {"prompt": "a lighthouse", "seed": 7, "durationSeconds": 0, "outputs": ["image", "text"]}
    first, second = RecordingRunContext(inputs), RecordingRunContext(inputs, upstream_ref=None)
    ran = await make().run(first)
    taken_over = await make().reattach(second)
    assert taken_over is not None and len(taken_over) == len(ran) == 2
    assert list(second.outputs.values()) == list(first.outputs.values())


async def test_default_inputs_make_everything_at_once() -> None:
    """What ``make run`` shows a newcomer: with no inputs at all, a 512x512 PNG, one
    preview per step, the text streamed word by word and a WAV clip."""
    from livegate.tools import build_tool, default_tool_specs

    [spec] = default_tool_specs()
    default = build_tool(spec)
    assert spec.kind == "demo" and default.input_schema["properties"]["durationSeconds"]["default"] == 3
    steps = default.input_schema["properties"]["steps"]["default"]
    ctx = RecordingRunContext({})
    outputs = await make(duration_seconds=0.2, steps=steps).run(ctx)
    assert [(o.kind, o.media_type) for o in outputs] == [
        ("image", "image/png"), ("text", "text/plain; charset=utf-8"), ("audio", "audio/wav")
    ]
    with Image.open(io.BytesIO(ctx.output_bytes(outputs[0].id))) as png:
        assert (png.format, png.size) == ("PNG", (512, 512))
    assert ctx.output_bytes(outputs[2].id)[:4] == b"RIFF"
    assert [e.step for e in ctx.progress_events] == list(range(1, steps + 1))
    assert len(ctx.previews) == steps and ctx.progress_events[-1].partial_text == outputs[1].text


async def test_integral_numbers_count_as_integers() -> None:
    """JSON Schema (and so the HTTP API) accepts ``2.0`` for an integer input."""
    ctx = RecordingRunContext({"steps": 2.0, "durationSeconds": 0, "width": 64.0, "height": 64, "outputs": ["image"]})
    [image] = await make().run(ctx)
    assert [e.step for e in ctx.progress_events] == [1, 2] and (image.width, image.height) == (64, 64)
