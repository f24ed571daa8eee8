"""Which tools exist: a TOML file of ``[[tools]]`` tables (or the same as YAML, a
``tools:`` list), built through a kind table.

::

    [[tools]]
    id = "demo"                  # unique; [a-z0-9][a-z0-9_-]* (asyncapi.yaml ToolId)
    kind = "demo"                # a key of KINDS
    title = "Demo (no network)"  # default: the id
    timeout_seconds = 120        # default 600
    max_concurrency = 4          # default 4
    [tools.settings]             # kind-specific, checked by the tool's constructor
    duration_seconds = 3

Adding a tool of an existing kind is configuration only. Settings that name files (the
ComfyUI ``workflow``) are resolved against the directory of the TOML file. Every problem
is a :class:`~livegate.tools.settings.ToolConfigError` naming the file and the tool.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livegate.tools.base import Tool, ToolSpec
from livegate.tools.settings import ToolConfigError

__all__ = [
    "KINDS",
    "ToolKind",
    "build_tool",
    "build_tools",
    "default_tool_specs",
    "example_tools_path",
    "load_tool_specs",
    "parse_tool_specs",
]

_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")  # asyncapi.yaml ToolId
_KEYS = {"id", "kind", "title", "timeout_seconds", "max_concurrency", "settings"}
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True)
class ToolKind:
    """How to build a tool of one kind; ``path_settings`` name settings holding file paths."""

    factory: Callable[[ToolSpec], Tool]
    path_settings: tuple[str, ...] = ()


def _demo(spec: ToolSpec) -> Tool:
    from livegate.tools.demo import DemoTool

    return DemoTool(spec)


def _openai(spec: ToolSpec) -> Tool:
    from livegate.tools.openai import OpenAITool

    return OpenAITool(spec)


def _comfyui(spec: ToolSpec) -> Tool:
    from livegate.tools.comfyui import ComfyUITool

    return ComfyUITool(spec)


KINDS: Mapping[str, ToolKind] = {
    "demo": ToolKind(_demo),
    "openai": ToolKind(_openai),
    "comfyui": ToolKind(_comfyui, path_settings=("workflow",)),
}


def _number(entry: Mapping[str, Any], key: str, default: float, where: str, *, integer: bool) -> Any:
    value = entry.get(key, default)
    wrong_type = isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int))
    if wrong_type or value <= 0:
        kind = "a positive integer" if integer else "a positive number"
        raise ToolConfigError(f"{where}: {key!r} must be {kind}, got {value!r}")
    return value


def parse_tool_specs(
    data: Mapping[str, Any], *, base_dir: Path | None = None, source: str = "tools config"
) -> list[ToolSpec]:
    """Specs from an already-parsed TOML document (``{"tools": [...]}``)."""
    unknown = set(data) - {"tools"}
    if unknown:
        raise ToolConfigError(f"{source}: unknown top-level key(s) {sorted(unknown)}")
    entries = data.get("tools", [])
    if not isinstance(entries, list):
        raise ToolConfigError(f"{source}: 'tools' must be an array of tables ([[tools]])")
    specs: list[ToolSpec] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{source}: tools[{index}]"
        if not isinstance(entry, Mapping):
            raise ToolConfigError(f"{where}: must be a table")
        tool_id = entry.get("id")
        if not isinstance(tool_id, str) or not _ID.fullmatch(tool_id):
            raise ToolConfigError(f"{where}: 'id' must match {_ID.pattern}, got {tool_id!r}")
        where = f"{source}: tool {tool_id!r}"
        if tool_id in seen:
            raise ToolConfigError(f"{where}: duplicate id")
        seen.add(tool_id)
        if set(entry) - _KEYS:
            raise ToolConfigError(f"{where}: unknown key(s) {sorted(set(entry) - _KEYS)}")
        kind = entry.get("kind")
        if not isinstance(kind, str) or kind not in KINDS:
            raise ToolConfigError(f"{where}: unknown kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
        title = entry.get("title", tool_id)
        if not isinstance(title, str) or not title:
            raise ToolConfigError(f"{where}: 'title' must be a non-empty string")
        settings = entry.get("settings", {})
        if not isinstance(settings, Mapping):
            raise ToolConfigError(f"{where}: 'settings' must be a table")
        settings = dict(settings)
        for key in KINDS[kind].path_settings:
            value = settings.get(key)
            if isinstance(value, str) and base_dir is not None and not Path(value).is_absolute():
                settings[key] = str((base_dir / value).resolve())
        specs.append(
            ToolSpec(
                id=tool_id,
                kind=kind,
                title=title,
                settings=settings,
                timeout_seconds=float(_number(entry, "timeout_seconds", 600.0, where, integer=False)),
                max_concurrency=_number(entry, "max_concurrency", 4, where, integer=True),
            )
        )
    return specs


def load_tool_specs(path: str | Path) -> list[ToolSpec]:
    """Read a tools file — TOML, or YAML when it is named ``*.yaml`` / ``*.yml`` (the same
    document: a ``tools`` list of tables); relative file settings resolve against its
    directory."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ToolConfigError(f"cannot read tools config {path}: {exc}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            raise ToolConfigError(f"{path}: invalid YAML: {exc}") from None
        if not isinstance(data, Mapping):
            raise ToolConfigError(f"{path}: the document must be a mapping with a 'tools' list")
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ToolConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_tool_specs(data, base_dir=path.resolve().parent, source=str(path))


def default_tool_specs() -> list[ToolSpec]:
    """The tools used when none are configured: just the demo (``default_tools.toml``)."""
    return load_tool_specs(HERE / "default_tools.toml")


def example_tools_path() -> Path:
    """``tools.example.toml``: demo, OpenAI chat and image, and a ComfyUI workflow."""
    return HERE / "tools.example.toml"


def build_tool(spec: ToolSpec) -> Tool:
    """A tool instance for ``spec``; bad settings raise ``ToolConfigError``."""
    kind = KINDS.get(spec.kind)
    if kind is None:
        raise ToolConfigError(f"tool {spec.id!r}: unknown kind {spec.kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    return kind.factory(spec)


def build_tools(specs: list[ToolSpec]) -> dict[str, Tool]:
    """Tool id -> instance, in config order."""
    return {spec.id: build_tool(spec) for spec in specs}
