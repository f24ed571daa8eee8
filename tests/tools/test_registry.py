"""Tools come from a config file (TOML or YAML): a new tool of an existing kind is
configuration only, and every mistake is refused at load time, naming file and tool."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from livegate.tools import build_tools, default_tool_specs, load_tool_specs
from livegate.tools.settings import ToolConfigError

from .conftest import COMFY_FIXTURES

TOML = """
[[tools]]
id = "quick-demo"
kind = "demo"
title = "Quick demo"
timeout_seconds = 30
max_concurrency = 2
[tools.settings]
duration_seconds = 0.5

[[tools]]
id = "blur"
kind = "comfyui"
[tools.settings]
base_url = "http://comfy.internal:8188"
workflow = "workflows/slow_blur_chain.json"
[tools.settings.inputs.radius]
schema = { type = "integer", minimum = 1, maximum = 31 }
node = "2"
input = "blur_radius"
"""

YAML = """
tools:
  - id: quick-demo
    kind: demo
    title: Quick demo
    timeout_seconds: 30
    max_concurrency: 2
    settings: {duration_seconds: 0.5}
  - id: blur
    kind: comfyui
    settings:
      base_url: http://comfy.internal:8188
      workflow: workflows/slow_blur_chain.json
      inputs:
        radius: {schema: {type: integer, minimum: 1, maximum: 31}, node: "2", input: blur_radius}
"""


@pytest.mark.parametrize(("name", "text"), [("tools.toml", TOML), ("tools.yaml", YAML)])
def test_toml_and_yaml_declare_the_same_tools(tmp_path: Path, name: str, text: str) -> None:
    (tmp_path / "workflows").mkdir()
    shutil.copy(COMFY_FIXTURES / "workflows/slow_blur_chain.json", tmp_path / "workflows")
    path = tmp_path / name  # the workflow's relative path is resolved against this file
    path.write_text(text)
    specs = load_tool_specs(path)
    assert [(s.id, s.kind, s.title, s.timeout_seconds, s.max_concurrency) for s in specs] == [
        ("quick-demo", "demo", "Quick demo", 30.0, 2),
        ("blur", "comfyui", "blur", 600.0, 4),
    ]
    assert specs[1].settings["workflow"] == str((tmp_path / "workflows/slow_blur_chain.json").resolve())
    tools = build_tools(specs)
    assert tools["blur"].input_schema["properties"]["radius"]["default"] == 31  # from the workflow
    assert tools["quick-demo"].input_schema["properties"]["durationSeconds"]["default"] == 0.5


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[[tools]]\nid = "x"\nkind = "midjourney"', "unknown kind 'midjourney'; known kinds: comfyui, demo, openai"),
        ('[[tools]]\nid = "x"\nkind = "demo"\n[[tools]]\nid = "x"\nkind = "demo"', "tool 'x': duplicate id"),
        ('[[tools]]\nid = "Demo.1"\nkind = "demo"', "'id' must match"),  # not a contract ToolId
        ('[[tools]]\nid = "x"\nkind = "demo"\ncolour = 1', "unknown key(s) ['colour']"),
        ('[[tools]]\nid = "x"\nkind = "demo"\ntimeout_seconds = 0', "'timeout_seconds' must be a positive number"),
        ('[[tools]]\nid = "x"\nkind = "demo"\n[tools.settings]\nduration = 1', "unknown setting(s) duration"),
        ('[[tools]]\nid = "x"\nkind = "comfyui"\n[tools.settings]\nworkflow = "nope.json"', "cannot read workflow"),
        ("[[tools]\n", "invalid TOML"),
    ],
)
def test_mistakes_are_refused_naming_the_file_and_the_tool(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "tools.toml"
    path.write_text(text)
    with pytest.raises(ToolConfigError) as caught:
        build_tools(load_tool_specs(path))
    assert needle in caught.value.message
    assert str(path) in caught.value.message or "tool 'x'" in caught.value.message


def test_yaml_mistakes_and_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("tools: [\n")
    with pytest.raises(ToolConfigError, match="invalid YAML"):
        load_tool_specs(tmp_path / "bad.yaml")
    (tmp_path / "list.yml").write_text("- id: x\n")
    with pytest.raises(ToolConfigError, match="must be a mapping"):
        load_tool_specs(tmp_path / "list.yml")
    with pytest.raises(ToolConfigError, match="cannot read tools config"):
        load_tool_specs(tmp_path / "missing.toml")


def test_the_default_is_the_demo_alone() -> None:
    [spec] = default_tool_specs()
    assert (spec.id, spec.kind) == ("demo", "demo")
