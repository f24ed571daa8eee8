"""Captured ComfyUI 0.8.0 traces (``tests/fixtures/comfyui/*.jsonl``) as replayable scripts.

A *trace* is what a capture client saw (README.md next to the fixtures describes the
record format). A *script* is the part of a trace that ComfyUI's executor produced for one
prompt — every frame from ``execution_start`` up to and including the terminal
``execution_success`` / ``execution_error`` / ``execution_interrupted`` — with its timing.
``status`` frames (queue bookkeeping) and the closing ``executing {node: null}`` are left
out: the fake's queue produces those itself, so they stay right when prompts interleave.

Pure data handling, no I/O beyond reading the fixture files.
"""

from __future__ import annotations

import base64
import json
import random
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "OUTPUT_NODE_CLASSES",
    "Script",
    "ScriptFrame",
    "Trace",
    "build_scripts",
    "load_traces",
    "substitute",
    "synth_script",
    "workflow_shape",
]

TERMINAL_TYPES = frozenset({"execution_success", "execution_error", "execution_interrupted"})

# Node classes that ComfyUI treats as outputs (OUTPUT_NODE = True). The fixtures' object_info
# files confirm SaveImage, PreviewImage and SaveImageWebsocket; the rest are stock nodes.
OUTPUT_NODE_CLASSES = frozenset(
    {
        "SaveImage",
        "PreviewImage",
        "SaveImageWebsocket",
        "SaveAnimatedWEBP",
        "SaveAnimatedPNG",
        "SaveAudio",
        "SaveAudioMP3",
        "SaveAudioOpus",
        "PreviewAudio",
        "SaveVideo",
        "SaveWEBM",
        "SaveLatent",
        "PreviewAny",
        "SaveGLB",
    }
)


@dataclass(frozen=True, slots=True)
class ScriptFrame:
    """One server frame: ``msg`` (a parsed text frame) or ``data`` (a binary frame), sent
    ``at`` seconds after the script's ``execution_start``."""

    at: float
    msg: dict[str, Any] | None = None
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Script:
    """The executor's frames for one prompt, written for ``prompt_id`` (substitute it)."""

    name: str
    prompt_id: str
    frames: tuple[ScriptFrame, ...]
    workflow: Mapping[str, Any]


class Trace:
    """One ``*.jsonl`` capture: ``meta`` (line 0) and the other ``records`` in order."""

    def __init__(self, name: str, records: list[dict[str, Any]]) -> None:
        self.name = name
        self.meta = records[0]
        self.records = records[1:]

    @classmethod
    def load(cls, path: Path) -> Trace:
        lines = path.read_text(encoding="utf-8").splitlines()
        return cls(path.stem, [json.loads(line) for line in lines if line.strip()])

    @property
    def client_id(self) -> str | None:
        return self.meta.get("client_id")

    @property
    def workflow(self) -> dict[str, Any] | None:
        return self.meta.get("workflow")

    def of(self, direction: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["dir"] == direction]

    def submitted_prompt_ids(self) -> list[str]:
        """Prompt ids answered by successful ``POST /prompt``, in submission order."""
        return [
            r["response"]["body"]["prompt_id"]
            for r in self.of("http")
            if r["request"]["method"] == "POST"
            and r["request"]["path"] == "/prompt"
            and r["response"]["status"] == 200
        ]

    def run_frames(self, prompt_id: str) -> list[ScriptFrame]:
        """The executor's frames for ``prompt_id`` (see the module docstring)."""
        frames: list[ScriptFrame] = []
        start_ms: float | None = None
        for record in self.of("recv"):
            msg = record.get("msg") if record["kind"] == "text" else None
            if start_ms is None:
                if msg and msg["type"] == "execution_start" and _pid(msg) == prompt_id:
                    start_ms = record["t_ms"]
                else:
                    continue
            at = (record["t_ms"] - start_ms) / 1000.0
            if record["kind"] == "binary":
                frames.append(ScriptFrame(at, data=frame_bytes(record)))
                continue
            assert msg is not None
            if msg["type"] == "status" or _pid(msg) not in (prompt_id,):
                # queue bookkeeping, another prompt, or the prompt-less `executing` a
                # reconnect produces: not part of this prompt's execution
                continue
            frames.append(ScriptFrame(at, msg=msg))
            if msg["type"] in TERMINAL_TYPES:
                break
        return frames


def frame_bytes(record: Mapping[str, Any]) -> bytes:
    """The exact bytes of a captured binary frame."""
    return base64.b64decode(record["frame_b64"])


def _pid(msg: Mapping[str, Any]) -> Any:
    data = msg.get("data")
    return data.get("prompt_id") if isinstance(data, dict) else None


def load_traces(fixtures_dir: Path) -> dict[str, Trace]:
    return {p.stem: Trace.load(p) for p in sorted(Path(fixtures_dir).glob("*.jsonl"))}


def workflow_shape(workflow: Mapping[str, Any]) -> frozenset[tuple[str, str]]:
    """What identifies "the same workflow" for choosing a script: node ids and classes
    (inputs such as prompt text, colours or seeds may differ)."""
    return frozenset(
        (str(node_id), str(node.get("class_type")))
        for node_id, node in workflow.items()
        if isinstance(node, Mapping)
    )


def substitute(value: Any, old: str, new: str) -> Any:
    """Deep copy of ``value`` with every string equal to ``old`` replaced by ``new``."""
    if isinstance(value, str):
        return new if value == old else value
    if isinstance(value, list):
        return [substitute(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, old, new) for k, v in value.items()}
    return value


def _script(name: str, trace: Trace, prompt_id: str, workflow: Any = None) -> Script:
    frames = tuple(trace.run_frames(prompt_id))
    if not frames or frames[-1].msg is None or frames[-1].msg["type"] not in TERMINAL_TYPES:
        raise ValueError(f"trace {trace.name}: no complete run for prompt {prompt_id}")
    return Script(name, prompt_id, frames, workflow or trace.workflow or {})


def _slow_blur_chain(reconnect: Trace, interrupted: Trace) -> Script:
    """The full run of ``workflows/slow_blur_chain.json``.

    ``reconnect.jsonl`` has the whole run except what was emitted while its client was
    away: node 2 finishing, node 3 starting. ``interrupted.jsonl`` (same workflow) has
    exactly those three frames; splice them in at the same distance from node 2's start.
    """
    pid = reconnect.submitted_prompt_ids()[0]
    base = reconnect.run_frames(pid)
    other_pid = interrupted.submitted_prompt_ids()[0]
    gap: list[tuple[float, dict[str, Any]]] = []
    node2_ms: float | None = None
    for record in interrupted.of("recv"):
        msg = record.get("msg") or {}
        data = msg.get("data") or {}
        if msg.get("type") == "executing" and data.get("node") == "2":
            node2_ms = record["t_ms"]
        elif node2_ms is not None and msg.get("type") in ("progress_state", "executing"):
            gap.append((record["t_ms"] - node2_ms, substitute(msg, other_pid, pid)))
            if msg["type"] == "executing":
                break
    index = next(
        i
        for i, f in enumerate(base)
        if f.msg and f.msg["type"] == "executing" and f.msg["data"]["node"] == "2"
    )
    at2 = base[index].at
    spliced = [ScriptFrame(at2 + ms / 1000.0, msg=msg) for ms, msg in gap]
    frames = base[: index + 1] + spliced + base[index + 1 :]
    return Script("slow_blur_chain", pid, tuple(frames), reconnect.workflow or {})


def build_scripts(traces: Mapping[str, Trace]) -> dict[str, Script]:
    """Scripts by scenario name. ``interrupted`` and ``reconnect`` both name the
    slow blur chain: what happens to it depends on what the client does."""
    scripts: dict[str, Script] = {}
    for name in ("success", "cached", "execution_error", "websocket_image"):
        trace = traces[name]
        scripts[name] = _script(name, trace, trace.submitted_prompt_ids()[0])
    ff = traces["websocket_image_feature_flags"]
    scripts["websocket_image_feature_flags"] = _script(
        "websocket_image_feature_flags", ff, ff.submitted_prompt_ids()[0]
    )
    queue = traces["queue_three_prompts"]
    scripts["queue_item"] = _script("queue_item", queue, queue.submitted_prompt_ids()[0])
    slow = _slow_blur_chain(traces["reconnect"], traces["interrupted"])
    scripts["slow_blur_chain"] = slow
    scripts["interrupted"] = slow
    scripts["reconnect"] = slow
    return scripts


# -- synthesised runs for workflows no trace covers -----------------------------------

OutputNamer = Callable[[str, str, Mapping[str, Any]], dict[str, Any]]


def execution_order(workflow: Mapping[str, Any]) -> list[str]:
    """Nodes an output depends on, dependencies first (ComfyUI runs only those)."""
    order: list[str] = []
    seen: set[str] = set()

    def visit(node_id: str) -> None:
        if node_id in seen or node_id not in workflow:
            return
        seen.add(node_id)
        for value in (workflow[node_id].get("inputs") or {}).values():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                visit(value[0])
        order.append(node_id)

    for node_id, node in workflow.items():
        if node.get("class_type") in OUTPUT_NODE_CLASSES:
            visit(node_id)
    return order


def synth_script(
    workflow: Mapping[str, Any], prompt_id: str, name_output: OutputNamer, node_seconds: float
) -> Script:
    """A plausible run in the shape the traces show: per node ``progress_state`` (running),
    ``executing``, ``executed`` for output nodes, ``progress_state`` (finished)."""
    frames: list[ScriptFrame] = []
    at = 0.0
    states: dict[str, dict[str, Any]] = {}

    def add(type_: str, data: dict[str, Any]) -> None:
        frames.append(ScriptFrame(at, msg={"type": type_, "data": data}))

    def snapshot() -> dict[str, Any]:
        return {"prompt_id": prompt_id, "nodes": {k: dict(v) for k, v in states.items()}}

    add("execution_start", {"prompt_id": prompt_id, "timestamp": 0})
    add("execution_cached", {"nodes": [], "prompt_id": prompt_id, "timestamp": 0})
    for node_id in execution_order(workflow):
        node = workflow[node_id]
        states[node_id] = {
            "value": 0.0,
            "max": 1.0,
            "state": "running",
            "node_id": node_id,
            "prompt_id": prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }
        add("progress_state", snapshot())
        add("executing", {"node": node_id, "display_node": node_id, "prompt_id": prompt_id})
        at += node_seconds
        class_type = str(node.get("class_type"))
        if class_type in OUTPUT_NODE_CLASSES and class_type != "SaveImageWebsocket":
            image = name_output(node_id, class_type, node.get("inputs") or {})
            output = {"images": [image]}
            add(
                "executed",
                {"node": node_id, "display_node": node_id, "output": output, "prompt_id": prompt_id},
            )
        states[node_id].update(value=1.0, state="finished")
        add("progress_state", snapshot())
    add("execution_success", {"prompt_id": prompt_id, "timestamp": 0})
    return Script("synth", prompt_id, tuple(frames), dict(workflow))


def temp_prefix(rng: random.Random) -> str:
    """ComfyUI names PreviewImage files ``ComfyUI_temp_<5 random letters>_``."""
    return "ComfyUI_temp_" + "".join(rng.choice(string.ascii_lowercase) for _ in range(5))


def iter_output_files(output: Mapping[str, Any]) -> Iterable[dict[str, Any]]:
    """The ``{filename, subfolder, type}`` entries of an ``executed`` output."""
    for items in output.values():
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and "filename" in item:
                    yield item
