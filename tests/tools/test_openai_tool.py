"""The openai tool against the fake OpenAI server, one test per fixture scenario."""

from __future__ import annotations

import asyncio
import io
import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from livegate.errors import ToolError
from livegate.testing import RecordingRunContext
from livegate.testing.fake_openai import FakeOpenAI
from livegate.tools.base import ToolSpec
from livegate.tools.openai import OpenAITool, retry_delay
from livegate.tools.settings import ToolConfigError

REQUEST_ID = "req_0123456789abcdef0123456789abcdef"


@pytest.fixture
async def make(fake_openai: FakeOpenAI) -> AsyncIterator[Any]:
    tools: list[OpenAITool] = []

    def build(**settings: Any) -> OpenAITool:
        merged = {
            "base_url": fake_openai.base_url + "/v1",
            "api_key": "sk-test",
            "retry_base_delay_seconds": 0.01,
            **settings,
        }
        tool = OpenAITool(ToolSpec(id="oa", kind="openai", title="OpenAI", settings=merged))
        tools.append(tool)
        return tool

    yield build
    for tool in tools:
        await tool.aclose()


async def run_error(tool: OpenAITool, inputs: dict[str, Any] | None = None) -> ToolError:
    with pytest.raises(ToolError) as caught:
        await tool.run(RecordingRunContext(inputs or {"prompt": "Say hello"}))
    return caught.value


def api_calls(fake: FakeOpenAI) -> int:
    return sum(1 for r in fake.requests if r.path.startswith("/v1/"))


# -- chat -------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["stream_basic", "stream_with_usage"])
async def test_chat_stream_publishes_the_growing_text(make: Any, fake_openai: FakeOpenAI, fixture: str) -> None:
    fake_openai.chat_fixture = fixture
    ctx = RecordingRunContext({"prompt": "Say hello", "system": "Be brief.", "temperature": 0.2})
    [output] = await make(model="gpt-4o-mini").run(ctx)
    assert output.kind == "text" and output.media_type.startswith("text/plain")
    assert output.text == "Hello! How can I help?" == ctx.output_bytes(output.id).decode()
    texts = [e.partial_text for e in ctx.progress_events if e.partial_text]
    assert texts[0] == "Hello" and texts[-1] == "Hello! How can I help?"
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
    assert ctx.fractions == sorted(ctx.fractions) and max(ctx.fractions) < 1
    sent = fake_openai.requests[0]
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.body["stream"] is True and sent.body["model"] == "gpt-4o-mini"
    assert sent.body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"},
    ]
    assert sent.body["temperature"] == 0.2


async def test_chat_without_streaming(make: Any) -> None:
    [output] = await make(stream=False).run(RecordingRunContext({"prompt": "Say hello"}))
    assert output.text == "Hello! How can I help?"


async def test_api_key_from_the_environment(make: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIVEGATE_TEST_OPENAI_KEY", "sk-test")
    tool = make(api_key=None, api_key_env="LIVEGATE_TEST_OPENAI_KEY")
    [output] = await tool.run(RecordingRunContext({"prompt": "hi"}))
    assert output.text
    monkeypatch.delenv("LIVEGATE_TEST_OPENAI_KEY")
    assert (await run_error(tool)).code == "upstream_unauthorized"


async def test_midstream_error_is_mapped_by_its_type(make: Any, fake_openai: FakeOpenAI) -> None:
    fake_openai.chat_fixture = "stream_error_midstream"
    ctx = RecordingRunContext({"prompt": "Say hello"})
    with pytest.raises(ToolError) as caught:
        await make().run(ctx)
    error = caught.value
    assert error.code == "upstream_unavailable"  # "type": "server_error"
    assert "The server had an error" in error.message and REQUEST_ID in error.message
    assert ctx.progress_events[-1].partial_text == "Hello!" and not ctx.outputs
    assert api_calls(fake_openai) == 1  # text was already shown: no retry


async def test_connection_cut_mid_stream_is_a_protocol_error(make: Any, fake_openai: FakeOpenAI) -> None:
    fake_openai.cut_after_events = 3
    error = await run_error(make())
    assert error.code == "upstream_protocol_error" and REQUEST_ID in error.message


async def test_stream_stalling_is_a_timeout(make: Any, fake_openai: FakeOpenAI) -> None:
    fake_openai.hang_after_events = 2
    error = await run_error(make(timeout_seconds=0.2))
    assert error.code == "upstream_timeout"


async def test_cancellation_closes_the_stream(make: Any, fake_openai: FakeOpenAI) -> None:
    fake_openai.hang_after_events = 4
    ctx = RecordingRunContext({"prompt": "Say hello"})
    task = asyncio.create_task(make().run(ctx))
    await ctx.wait_for_progress(lambda p: p.partial_text == "Hello! How")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake_openai.wait_for(lambda: fake_openai.stream_disconnects == 1)


# -- images -----------------------------------------------------------------------------


async def test_image_b64_json(make: Any, fake_openai: FakeOpenAI) -> None:
    ctx = RecordingRunContext({"prompt": "a small grey square", "size": "1024x1536"})
    [output] = await make(mode="image", model="gpt-image-1.5").run(ctx)
    assert (output.kind, output.media_type, output.width, output.height) == ("image", "image/png", 4, 4)
    Image.open(io.BytesIO(ctx.output_bytes(output.id))).verify()
    assert fake_openai.requests[0].body == {
        "model": "gpt-image-1.5",
        "prompt": "a small grey square",
        "n": 1,
        "size": "1024x1536",
    }


async def test_image_url_is_downloaded_without_our_key(make: Any, fake_openai: FakeOpenAI) -> None:
    ctx = RecordingRunContext({"prompt": "a small grey square"})
    [output] = await make(mode="image", model="dall-e-3", response_format="url").run(ctx)
    assert ctx.output_bytes(output.id) == fake_openai.png
    download = fake_openai.requests[-1]
    assert download.path.startswith("/files/") and "authorization" not in download.headers


async def test_image_stream_publishes_partial_previews(make: Any) -> None:
    ctx = RecordingRunContext({"prompt": "a small grey square"})
    [output] = await make(mode="image", partial_images=2).run(ctx)
    assert [e.step for e in ctx.previews] == [1, 2]
    assert all(e.preview_media_type == "image/png" for e in ctx.previews)
    assert output.width == 4


# -- HTTP errors and retries ---------------------------------------------------------------


async def test_401_is_unauthorized_without_retry(make: Any, fake_openai: FakeOpenAI) -> None:
    error = await run_error(make(api_key="sk-wrong"))
    assert error.code == "upstream_unauthorized"
    assert "Incorrect API key" in error.message and REQUEST_ID in error.message
    assert api_calls(fake_openai) == 1


async def test_404_model_is_a_bad_request(make: Any, fake_openai: FakeOpenAI) -> None:
    error = await run_error(make(model="gpt-nonexistent"))
    assert error.code == "upstream_bad_request" and "model_not_found" in error.message
    assert api_calls(fake_openai) == 1


async def test_400_invalid_request_is_a_bad_request_without_retry(make: Any, fake_openai: FakeOpenAI) -> None:
    error = await run_error(make(extra_body={"model": 5}))  # the fake's answer to a request without a model
    assert error.code == "upstream_bad_request" and "invalid_request_error" in error.message
    assert api_calls(fake_openai) == 1


async def test_5xx_backoff_grows_exponentially(make: Any, fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next("500_server_error", times=3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    [output] = await make(max_retries=3, retry_base_delay_seconds=0.04).run(RecordingRunContext({"prompt": "Hi"}))
    # 0.04 + 0.08 + 0.16 s, each with at most 25 % jitter off
    assert loop.time() - started >= 0.75 * 0.28
    assert output.text and api_calls(fake_openai) == 4


async def test_insufficient_quota_is_final_at_once(make: Any, fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next("429_insufficient_quota", times=5)
    error = await run_error(make())
    assert error.code == "upstream_rate_limited" and "quota" in error.message
    assert api_calls(fake_openai) == 1


async def test_429_waits_for_retry_after_then_succeeds(make: Any, fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next("429_rate_limit_exceeded")  # carries retry-after: 1
    loop = asyncio.get_running_loop()
    started = loop.time()
    [output] = await make().run(RecordingRunContext({"prompt": "Say hello"}))
    assert output.text == "Hello! How can I help?"
    assert loop.time() - started >= 0.95
    assert api_calls(fake_openai) == 2


async def test_429_retry_after_ms_wins_and_exhaustion_is_rate_limited(make: Any, fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next("429_rate_limit_exceeded", times=5, headers={"retry-after-ms": "10"})
    loop = asyncio.get_running_loop()
    started = loop.time()
    error = await run_error(make(max_retries=2))
    assert loop.time() - started < 0.9  # not the 1 s of retry-after
    assert error.code == "upstream_rate_limited" and "rate_limit_exceeded" in error.message
    assert api_calls(fake_openai) == 3


async def test_retry_after_above_the_cap_means_no_retry(make: Any, fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next("429_rate_limit_exceeded", headers={"retry-after": "600"})
    assert (await run_error(make())).code == "upstream_rate_limited"
    assert api_calls(fake_openai) == 1


async def test_500_is_retried_then_succeeds(make: Any, fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next("500_server_error", times=2)
    [output] = await make(max_retries=3).run(RecordingRunContext({"prompt": "Say hello"}))
    assert output.text and api_calls(fake_openai) == 3


async def test_500_exhausted_is_unavailable(make: Any, fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next("500_server_error", times=10)
    error = await run_error(make(max_retries=2))
    assert error.code == "upstream_unavailable" and REQUEST_ID in error.message
    assert api_calls(fake_openai) == 3


async def test_x_should_retry_false_overrides(make: Any, fake_openai: FakeOpenAI) -> None:
    fake_openai.fail_next("500_server_error", times=3, headers={"x-should-retry": "false"})
    assert (await run_error(make())).code == "upstream_unavailable"
    assert api_calls(fake_openai) == 1


async def test_hanging_upstream_times_out_after_retries(make: Any, fake_openai: FakeOpenAI) -> None:
    fake_openai.hang = True
    error = await run_error(make(timeout_seconds=0.15, max_retries=1))
    assert error.code == "upstream_timeout"
    assert api_calls(fake_openai) == 2


async def test_unreachable_upstream_is_unavailable() -> None:
    async with FakeOpenAI() as gone:  # bind a port, then free it: nothing listens there
        url = gone.base_url
    tool = OpenAITool(
        ToolSpec(
            id="oa",
            kind="openai",
            title="x",
            settings={"base_url": url + "/v1", "api_key": "k", "max_retries": 1, "retry_base_delay_seconds": 0},
        )
    )
    try:
        assert (await run_error(tool)).code == "upstream_unavailable"
    finally:
        await tool.aclose()


# -- the rest of the contract -----------------------------------------------------------------


async def test_takeover_after_the_request_went_upstream_is_refused_and_inputs_are_checked(make: Any) -> None:
    tool = make()
    sent = RecordingRunContext({"prompt": "x"}, upstream_ref="x")
    await sent.mark_request_sent()  # what the run did before its process died
    assert await tool.reattach(sent) is None  # never sent twice: it cost money, its answer is gone
    assert (await run_error(tool, {"prompt": ""})).code == "invalid_inputs"
    assert (await run_error(tool, {"prompt": ""})).code == "invalid_inputs"
    assert (await run_error(tool, {"prompt": "x", "temperature": 3})).code == "invalid_inputs"


async def test_takeover_before_the_request_went_upstream_runs_it(make: Any, fake_openai: FakeOpenAI) -> None:
    ctx = RecordingRunContext({"prompt": "Say hello"})  # its process died before sending
    [output] = await make().reattach(ctx)
    assert output.text == "Hello! How can I help?" and ctx.requests_sent == 1
    assert len(fake_openai.requests) == 1


def test_input_schemas() -> None:
    chat = OpenAITool(ToolSpec(id="c", kind="openai", title="Chat", settings={"system": "Be kind."})).input_schema
    assert list(chat["properties"]) == ["prompt", "system", "temperature"]
    assert chat["properties"]["system"]["default"] == "Be kind." and chat["required"] == ["prompt"]
    image = OpenAITool(ToolSpec(id="i", kind="openai", title="Img", settings={"mode": "image"})).input_schema
    assert image["properties"]["size"]["enum"] == ["1024x1024", "1536x1024", "1024x1536", "auto"]


@pytest.mark.parametrize(
    "settings",
    [{"mode": "video"}, {"api_key": "a", "api_key_env": "B"}, {"max_retries": -1}, {"modle": "x"},
     {"mode": "image", "size": "7x7"}],
)
def test_bad_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ToolConfigError):
        OpenAITool(ToolSpec(id="bad", kind="openai", title="x", settings=settings))


def test_retry_delay_rules() -> None:
    def delay(headers: dict[str, str], attempt: int = 0, jitter: float = 0.0) -> float | None:
        return retry_delay(
            httpx.Headers(headers), attempt, base=0.5, cap=8, max_retry_after=60, jitter=jitter, now=1_000_000
        )

    assert delay({"retry-after-ms": "250", "retry-after": "3"}) == 0.25
    assert delay({"retry-after": "1.5"}) == 1.5
    assert delay({"retry-after": "Mon, 12 Jan 1970 13:46:50 GMT"}) == pytest.approx(10, abs=1)
    assert delay({"retry-after": "600"}) is None
    assert delay({}, attempt=0) == 0.5 and delay({}, attempt=3) == 4 and delay({}, attempt=9) == 8
    assert delay({}, attempt=1, jitter=0.999) == pytest.approx(0.75, abs=0.01)
    assert delay({"retry-after": "0"}) == 0.5  # not a usable wait: back off instead
