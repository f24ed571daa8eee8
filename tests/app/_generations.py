"""A whole stack for generation tests: fake OpenAI and fake ComfyUI on local ports, a tools
TOML file naming them (tools of existing kinds are configuration only), and a gateway
started from that file. Plus :func:`follow`, which reads one generation's life off a
frame-validating :class:`~tests.app.conftest.Probe`."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import websockets

from livegate.testing.fake_comfyui import FakeComfyUI
from livegate.testing.fake_openai import FakeOpenAI
from livegate.testing.gateway import RunningGateway, running_gateway

from .conftest import Probe

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
WORKFLOWS = FIXTURES / "comfyui" / "workflows"
FINAL = ("completed", "failed", "cancelled")
COMFY = """
poll_interval_seconds = 0.25
reconnect_initial_delay_seconds = 0.02
reconnect_max_delay_seconds = 0.1
"""


def tools_toml(openai_url: str, comfy_url: str) -> str:
    """Seven tools of three kinds; the four ComfyUI ones differ only by their workflow."""
    comfy = "".join(
        f"""
[[tools]]
id = "{tool_id}"
kind = "comfyui"
title = "ComfyUI {workflow}"
timeout_seconds = 60
max_concurrency = 2
[tools.settings]
base_url = "{comfy_url}"
workflow = "{WORKFLOWS / workflow}"
{COMFY}"""
        for tool_id, workflow in (
            ("comfy", "success.json"),
            ("comfy-error", "execution_error.json"),
            ("comfy-slow", "slow_blur_chain.json"),
            ("comfy-ws", "websocket_image.json"),
        )
    )
    return f"""
[[tools]]
id = "demo"
kind = "demo"
title = "Demo"
[tools.settings]
duration_seconds = 0.3
steps = 3

[[tools]]
id = "chat"
kind = "openai"
title = "Chat"
timeout_seconds = 30
[tools.settings]
mode = "chat"
base_url = "{openai_url}/v1"
api_key = "sk-test"
retry_base_delay_seconds = 0.01
timeout_seconds = 5

[[tools]]
id = "image"
kind = "openai"
title = "Image"
[tools.settings]
mode = "image"
base_url = "{openai_url}/v1"
api_key = "sk-test"
sizes = ["1024x1024"]
{comfy}"""


@dataclasses.dataclass
class Stack:
    gw: RunningGateway
    openai: FakeOpenAI
    comfy: FakeComfyUI
    tools_file: Path

    async def probe(self, user_id: str, gw: RunningGateway | None = None) -> Probe:
        gw = gw or self.gw
        ws = await websockets.connect(gw.ws_url, compression=None, max_queue=None)
        probe = Probe(ws)
        await probe.auth(gw.token(user_id))
        return probe


@contextlib.asynccontextmanager
async def fakes(tmp_path: Path, comfy_speed: float = 0.05) -> AsyncIterator[tuple[FakeOpenAI, FakeComfyUI, Path]]:
    async with FakeOpenAI(FIXTURES / "openai") as openai, FakeComfyUI(FIXTURES / "comfyui", speed=comfy_speed) as comfy:
        tools_file = tmp_path / "tools.toml"
        tools_file.write_text(tools_toml(openai.base_url, comfy.base_url))
        yield openai, comfy, tools_file
    assert not comfy.errors, comfy.errors


@contextlib.asynccontextmanager
async def stack(tmp_path: Path, comfy_speed: float = 0.05) -> AsyncIterator[Stack]:
    async with (
        fakes(tmp_path, comfy_speed) as (openai, comfy, tools_file),
        running_gateway(tmp_path / "data", tools_file=str(tools_file)) as gw,
    ):
        yield Stack(gw, openai, comfy, tools_file)


async def follow(probe: Probe, gen_id: str, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The stream events of ``gen_id`` up to its final ``generationUpdate`` (every frame is
    validated against asyncapi.yaml by the probe)."""
    events: list[dict[str, Any]] = []
    while True:
        message = await probe.recv(timeout)
        if message.get("generationId") != gen_id:
            continue
        events.append(message)
        if message["type"] == "generationUpdate" and message["status"] in FINAL:
            return events


def lifecycle(events: list[dict[str, Any]]) -> list[str]:
    """``generationUpdate`` statuses and ``progress`` markers, in stream order."""
    return [e["status"] if e["type"] == "generationUpdate" else "progress" for e in events]


def check_order(events: list[dict[str, Any]], final: str) -> list[dict[str, Any]]:
    """queued -> running -> progress... -> ``final``; offsets rise; fractions never fall.
    Returns the progress events."""
    steps = lifecycle(events)
    assert steps[:2] == ["queued", "running"] and steps[-1] == final, steps
    assert set(steps[2:-1]) <= {"progress"}, steps
    offsets = [e["offset"] for e in events]
    assert offsets == sorted(set(offsets)), offsets
    progress = [e for e in events if e["type"] == "generationProgress"]
    fractions = [p["fraction"] for p in progress]
    assert fractions == sorted(fractions), fractions
    return progress
