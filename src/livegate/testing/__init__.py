"""Test doubles that users of the package can reuse.

* :class:`RecordingRunContext` — an in-memory ``RunContext`` for driving a tool.
* :class:`FakeComfyUI` — a real HTTP + WebSocket server replaying captured ComfyUI 0.8.0
  traces (``python -m livegate.testing.fake_comfyui``).
* :class:`FakeOpenAI` — a real HTTP server answering like the OpenAI API from the
  constructed fixtures (``python -m livegate.testing.fake_openai``).
* :mod:`livegate.testing.redis_server` / :mod:`livegate.testing.postgres_server` — real,
  throwaway ``redis-server`` and PostgreSQL processes on free local ports.

The fakes are imported lazily: they pull in Litestar and uvicorn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from livegate.testing.run_context import ProgressEvent, RecordingRunContext

if TYPE_CHECKING:
    from livegate.testing.fake_comfyui import FakeComfyUI
    from livegate.testing.fake_openai import FakeOpenAI

__all__ = ["FakeComfyUI", "FakeOpenAI", "ProgressEvent", "RecordingRunContext"]


def __getattr__(name: str) -> Any:
    if name == "FakeComfyUI":
        from livegate.testing.fake_comfyui import FakeComfyUI

        return FakeComfyUI
    if name == "FakeOpenAI":
        from livegate.testing.fake_openai import FakeOpenAI

        return FakeOpenAI
    raise AttributeError(name)
