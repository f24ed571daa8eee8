"""Shared fixtures for the tool tests: fixture paths (computed from this file, so a fresh
clone works) and the fake upstreams on free local ports."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from livegate.testing.fake_comfyui import FakeComfyUI
from livegate.testing.fake_openai import FakeOpenAI

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
COMFY_FIXTURES = FIXTURES / "comfyui"
OPENAI_FIXTURES = FIXTURES / "openai"
# captured delays x 0.05: the 17.6 s slow-blur run takes under a second
COMFY_SPEED = 0.05


@pytest.fixture
async def fake_comfy() -> AsyncIterator[FakeComfyUI]:
    async with FakeComfyUI(COMFY_FIXTURES, speed=COMFY_SPEED) as fake:
        yield fake
    assert not fake.errors, fake.errors


@pytest.fixture
async def fake_openai() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI(OPENAI_FIXTURES) as fake:
        yield fake
