"""Sans-I/O core of the ComfyUI adapter: WebSocket frames and ``/history`` entries in,
actions out. No sockets, no clock, no asyncio.

``ComfyRunTracker(prompt_id, workflow).feed(frame) -> list[action]`` follows one prompt
through the ComfyUI 0.8.0 protocol (the traces in ``tests/fixtures/comfyui`` show every
shape handled here):

* text frames of other prompts are ignored, and ``feature_flags``; a ``status`` frame (sent
  to every socket on each change of ComfyUI's queue, ``queue_remaining``) becomes
  :class:`QueueChanged` while our prompt has not started, so the I/O layer can read our
  place in the remote queue (``GET /queue``);
* ``execution_start`` / ``execution_cached`` (cached nodes count as done and leave the
  total) / ``executing`` / ``progress`` / ``progress_state`` (used where present) update
  the overall fraction: ``(finished nodes + current node's value/max) / nodes to run``,
  never going down and kept below 1 until the end;
* ``executed`` collects output files (``type: output``); ``type: temp`` files (PreviewImage)
  are offered as previews (:class:`ShowFile`) and are the result only when a workflow saves
  nothing else;
* binary frames: event 1 (preview image) and 4 (preview with JSON metadata, filtered by its
  ``prompt_id``) become :class:`Preview`; images that ``SaveImageWebsocket`` nodes push this
  way are also the result; event 3 (progress text) becomes a progress message;
* ``execution_success`` / ``execution_error`` / ``execution_interrupted`` are remembered and
  reported when the prompt ends (``executing {node: null}``), as :class:`Succeeded`,
  :class:`Failed` or :class:`Interrupted`. If the end comes without one of them (frames were
  lost while disconnected), :class:`CheckHistory` asks the I/O layer to look it up, and
  :meth:`ComfyRunTracker.feed_history` turns a ``/history/{id}`` entry into the same actions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Action",
    "CheckHistory",
    "ComfyRunTracker",
    "Failed",
    "InlineImage",
    "Interrupted",
    "OutputFile",
    "Preview",
    "ProgressUpdate",
    "QueueChanged",
    "ShowFile",
    "Succeeded",
    "outputs_from_history",
    "succeeded",
    "summarise_validation_error",
]

PREVIEW_FORMATS = {1: "image/jpeg", 2: "image/png"}


@dataclass(frozen=True, slots=True)
class OutputFile:
    """A file ComfyUI reports; fetch it with ``GET /view?filename=&subfolder=&type=``."""

    node_id: str
    filename: str
    subfolder: str = ""
    type: str = "output"


@dataclass(frozen=True, slots=True)
class InlineImage:
    node_id: str | None
    data: bytes
    media_type: str


@dataclass(frozen=True, slots=True)
class ProgressUpdate:
    fraction: float
    step: int | None = None
    total_steps: int | None = None
    message: str | None = None


@dataclass(frozen=True, slots=True)
class Preview:
    fraction: float
    data: bytes
    media_type: str


@dataclass(frozen=True, slots=True)
class ShowFile:
    """A temporary image worth showing as a preview (fetch it, then publish it)."""

    fraction: float
    file: OutputFile


@dataclass(frozen=True, slots=True)
class CheckHistory:
    """The prompt ended but its outcome was not seen: read ``/history/{prompt_id}``."""


@dataclass(frozen=True, slots=True)
class Succeeded:
    files: tuple[OutputFile, ...]
    images: tuple[InlineImage, ...] = ()


@dataclass(frozen=True, slots=True)
class Failed:
    message: str
    node_id: str | None = None
    node_type: str | None = None


@dataclass(frozen=True, slots=True)
class Interrupted:
    node_id: str | None = None
    node_type: str | None = None


@dataclass(frozen=True, slots=True)
class QueueChanged:
    """ComfyUI's queue changed while our prompt waits in it (``queue_remaining`` prompts,
    running one included): look up our place with ``GET /queue``."""

    queue_remaining: int | None


Action = ProgressUpdate | Preview | ShowFile | CheckHistory | Succeeded | Failed | Interrupted | QueueChanged
Terminal = Succeeded | Failed | Interrupted


def _files(node_id: str, output: Any) -> list[OutputFile]:
    files: list[OutputFile] = []
    if isinstance(output, Mapping):
        for items in output.values():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, Mapping) and isinstance(item.get("filename"), str):
                    files.append(
                        OutputFile(
                            node_id, item["filename"], str(item.get("subfolder") or ""), str(item.get("type") or "output")
                        )
                    )
    return files


def succeeded(files: Iterable[OutputFile], images: Iterable[InlineImage]) -> Succeeded:
    """The result: saved files (``type: output``) and images pushed by websocket nodes; a
    workflow with neither (PreviewImage only) returns its temp files."""
    unique = list(dict.fromkeys(files))
    saved = [f for f in unique if f.type == "output"]
    inline = tuple(images)
    return Succeeded(tuple(saved or ([] if inline else unique)), inline)


def _failed(data: Mapping[str, Any]) -> Failed:
    node_id, node_type = data.get("node_id"), data.get("node_type")
    where = f"{node_type} (node {node_id})" if node_id else "ComfyUI"
    exc = data.get("exception_type")
    text = str(data.get("exception_message") or "execution failed").strip()
    return Failed(f"{where} failed: {exc + ': ' if exc else ''}{text}", node_id, node_type)


def outputs_from_history(entry: Mapping[str, Any]) -> list[OutputFile]:
    files: list[OutputFile] = []
    for node_id, output in (entry.get("outputs") or {}).items():
        files.extend(_files(str(node_id), output))
    return files


def summarise_validation_error(body: Any) -> str:
    """A readable one-liner for a ``POST /prompt`` 400 body (``error`` + ``node_errors``)."""
    if not isinstance(body, Mapping):
        return "ComfyUI refused the prompt"
    raw_error = body.get("error")
    error: Mapping[str, Any] = raw_error if isinstance(raw_error, Mapping) else {}
    parts = [str(error.get("message") or "ComfyUI refused the prompt").rstrip(".")]
    if error.get("details"):
        parts[0] += f": {error['details']}"
    for node_id, node in (body.get("node_errors") or {}).items():
        for item in (node or {}).get("errors") or []:
            detail = f" ({item['details']})" if item.get("details") else ""
            parts.append(
                f"node {node_id} ({node.get('class_type', '?')}): {item.get('type')}: {item.get('message')}{detail}"
            )
    return "; ".join(parts)


class ComfyRunTracker:
    """Follows one prompt. ``workflow`` is the API-format prompt that was submitted."""

    def __init__(self, prompt_id: str, workflow: Mapping[str, Any], *, ws_output_classes: Iterable[str] = ("SaveImageWebsocket",)) -> None:
        self.prompt_id = prompt_id
        self._classes = {str(k): str((v or {}).get("class_type", "?")) for k, v in workflow.items()}
        self._ws_outputs = {k for k, c in self._classes.items() if c in set(ws_output_classes)}
        self.started = False
        self.done = False
        self._cached: set[str] = set()
        self._finished: set[str] = set()
        self._current: str | None = None
        self._partial = 0.0
        self._fraction = 0.0
        self._outcome: Mapping[str, Any] | None = None  # the terminal message's data
        self._outcome_type: str | None = None
        self._files: list[OutputFile] = []
        self._images: list[InlineImage] = []
        self._last: ProgressUpdate | None = None

    @property
    def fraction(self) -> float:
        return self._fraction

    # -- input ----------------------------------------------------------------------------

    def feed(self, frame: str | bytes | Mapping[str, Any]) -> list[Action]:
        """One WebSocket frame (raw text, raw binary, or already-parsed JSON)."""
        if self.done:
            return []
        if isinstance(frame, (bytes, bytearray, memoryview)):
            return self._binary(bytes(frame))
        if isinstance(frame, str):
            try:
                frame = json.loads(frame)
            except ValueError:
                return []
        if not isinstance(frame, Mapping) or not isinstance(frame.get("data"), Mapping):
            return []
        return self._text(str(frame.get("type")), frame["data"])

    def feed_history(self, entry: Mapping[str, Any] | None) -> list[Action]:
        """The value of ``GET /history/{prompt_id}`` for our id (``None``/``{}``: not there)."""
        if self.done or not entry:
            return []
        status = entry.get("status") or {}
        messages = {m[0]: m[1] for m in status.get("messages") or [] if isinstance(m, list) and len(m) == 2}
        if status.get("status_str") == "success" or status.get("completed"):
            self.done = True
            return [succeeded(outputs_from_history(entry), self._images)]
        if status.get("status_str") == "error":
            self.done = True
            if "execution_interrupted" in messages:
                data = messages["execution_interrupted"]
                return [Interrupted(data.get("node_id"), data.get("node_type"))]
            return [_failed(messages.get("execution_error") or {})]
        return []

    # -- text frames ----------------------------------------------------------------------

    def _ours(self, data: Mapping[str, Any]) -> bool:
        return data.get("prompt_id") == self.prompt_id

    def _text(self, type_: str, data: Mapping[str, Any]) -> list[Action]:
        if type_ == "executing" and "prompt_id" not in data:
            # sent on reconnect to the client owning the running prompt: that is us
            node = data.get("node")
            return self._node_started(str(node)) if node else []
        if type_ == "status":
            if self.started:
                return []
            remaining = ((data.get("status") or {}).get("exec_info") or {}).get("queue_remaining")
            return [QueueChanged(remaining if isinstance(remaining, int) else None)]
        if not self._ours(data):
            return []
        if type_ == "execution_start":
            self.started = True
            return self._progress(message="Started")
        if type_ == "execution_cached":
            self.started = True
            self._cached.update(str(n) for n in data.get("nodes") or [])
            return self._progress(message=f"{len(self._cached)} node(s) cached" if self._cached else None)
        if type_ == "executing":
            if data.get("node") is None:
                return self._end()
            return self._node_started(str(data["node"]))
        if type_ == "progress":
            node, value, maximum = str(data.get("node")), data.get("value", 0), data.get("max", 1)
            self._set_current(node, value, maximum)
            label = self._classes.get(node, node)
            return self._progress(step=int(value), total=int(maximum), message=f"{label} {value}/{maximum}")
        if type_ == "progress_state":
            for node, state in (data.get("nodes") or {}).items():
                if state.get("state") == "finished":
                    self._finished.add(str(node))
                elif state.get("state") == "running":
                    self._set_current(str(node), state.get("value", 0), state.get("max", 1))
            return self._progress(quiet=True)
        if type_ == "executed":
            node = str(data.get("node"))
            actions: list[Action] = []
            for file in _files(node, data.get("output")):
                self._files.append(file)
                if file.type == "temp":
                    actions.append(ShowFile(self._fraction, file))
            return actions
        if type_ in ("execution_success", "execution_error", "execution_interrupted"):
            self._outcome_type, self._outcome = type_, data
        return []

    def _node_started(self, node: str) -> list[Action]:
        self.started = True
        if self._current is not None and self._current != node:
            self._finished.add(self._current)
        self._current, self._partial = node, 0.0
        return self._progress(message=f"Running {self._classes.get(node, 'node')} (node {node})")

    def _set_current(self, node: str, value: Any, maximum: Any) -> None:
        self.started = True
        if self._current is not None and self._current != node:
            self._finished.add(self._current)
        self._current = node
        try:
            self._partial = max(0.0, min(1.0, float(value) / float(maximum)))
        except (TypeError, ValueError, ZeroDivisionError):
            self._partial = 0.0

    def _end(self) -> list[Action]:
        if self._outcome_type is None:
            return [CheckHistory()]
        self.done = True
        if self._outcome_type == "execution_success":
            return [succeeded(self._files, self._images)]
        data = self._outcome or {}
        if self._outcome_type == "execution_interrupted":
            return [Interrupted(data.get("node_id"), data.get("node_type"))]
        return [_failed(data)]

    def _progress(
        self, *, step: int | None = None, total: int | None = None, message: str | None = None, quiet: bool = False
    ) -> list[Action]:
        to_run = [n for n in self._classes if n not in self._cached]
        done = len([n for n in self._finished if n in to_run])
        partial = self._partial if self._current in to_run and self._current not in self._finished else 0.0
        # everything cached: nothing left to run but the bookkeeping
        fraction = min(0.99, (done + partial) / len(to_run)) if to_run else 0.99
        rising = fraction > self._fraction + 0.005
        self._fraction = max(self._fraction, fraction)
        if quiet and not rising:
            return []  # progress_state is half of all frames: publish only real movement
        update = ProgressUpdate(round(self._fraction, 4), step, total, message if not quiet else None)
        if update == self._last:
            return []
        self._last = update
        return [update]

    # -- binary frames --------------------------------------------------------------------

    def _binary(self, frame: bytes) -> list[Action]:
        if len(frame) < 8:
            return []
        event = int.from_bytes(frame[:4], "big")
        if event == 1 and self.started:
            media_type = PREVIEW_FORMATS.get(int.from_bytes(frame[4:8], "big"), "image/jpeg")
            return self._preview(self._current, frame[8:], media_type)
        if event == 3 and self.started:
            size = int.from_bytes(frame[4:8], "big")
            text = frame[8 + size :].decode("utf-8", "replace").strip()
            return self._progress(message=text) if text else []
        if event == 4:
            size = int.from_bytes(frame[4:8], "big")
            try:
                metadata = json.loads(frame[8 : 8 + size])
            except ValueError:
                return []
            if not isinstance(metadata, Mapping) or metadata.get("prompt_id") != self.prompt_id:
                return []
            node = metadata.get("node_id")
            media_type = str(metadata.get("image_type") or "image/png")
            return self._preview(str(node) if node is not None else None, frame[8 + size :], media_type)
        return []

    def _preview(self, node: str | None, data: bytes, media_type: str) -> list[Action]:
        if node is not None and node in self._ws_outputs:
            self._images.append(InlineImage(node, data, media_type))
        return [Preview(self._fraction, data, media_type)]
