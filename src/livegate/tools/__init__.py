"""Producer-side tools: what turns a generation's inputs into outputs.

* ``base`` — the interface (:class:`Tool`, :class:`RunContext`, :class:`ToolSpec`).
* ``registry`` — tools from a TOML file, built through a kind table.
* ``demo`` (no network), ``openai`` (HTTP API, streamed), ``comfyui`` (WebSocket + HTTP);
  each maps its library's errors to ``ToolError`` at its boundary.
"""

from __future__ import annotations

from livegate.tools.base import OutputKind, RunContext, StoredOutput, Tool, ToolSpec
from livegate.tools.registry import (
    KINDS,
    build_tool,
    build_tools,
    default_tool_specs,
    example_tools_path,
    load_tool_specs,
    parse_tool_specs,
)
from livegate.tools.settings import ToolConfigError

__all__ = [
    "KINDS",
    "OutputKind",
    "RunContext",
    "StoredOutput",
    "Tool",
    "ToolConfigError",
    "ToolSpec",
    "build_tool",
    "build_tools",
    "default_tool_specs",
    "example_tools_path",
    "load_tool_specs",
    "parse_tool_specs",
]
