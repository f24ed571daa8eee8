"""The ``comfyui`` tool: run an API-format workflow on a ComfyUI server (0.8.0 protocol).

A run opens the WebSocket ``/ws?clientId=<ours>`` first (so no frame is missed), saves its
own ``prompt_id`` with ``ctx.save_upstream_ref`` and then ``POST /prompt``. Frames are
turned into progress, previews and the outcome by the sans-I/O
:class:`~livegate.tools.comfyui_tracker.ComfyRunTracker`; this module is the pump around
it. Outputs are fetched with ``GET /view`` and stored.

Reliability: a dropped WebSocket is reopened with backoff, and after every disconnect
(and every ``poll_interval_seconds`` as a safety net) ``GET /history/{prompt_id}`` is
read, so a completion is never missed — ComfyUI replays nothing on reconnect. A ``{}``
history means queued or running, or deleted: ``GET /queue`` tells which.

Remote queue: while the prompt waits in ComfyUI's queue, every ``status`` frame (ComfyUI
sends one to every socket on each queue change) makes the run read ``GET /queue`` and report
its place (``RunContext.report_queue_position``; 1 = next); it reports ``None`` once the
prompt starts.

Cancellation (by the user or a timeout; a stopping gateway, ``ctx.detaching``, leaves the
prompt running for the next start to re-attach): a running prompt gets
``POST /interrupt {prompt_id}`` (it lands at ComfyUI's next node or progress tick), a
pending one ``POST /queue {"delete": [id]}``; the run then waits, at most
``cancel_timeout_seconds``, for ComfyUI to confirm before re-raising.
:meth:`ComfyUITool.reattach` follows a prompt by the saved id after a gateway restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import logging
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import websockets
from PIL import Image, UnidentifiedImageError

from livegate.errors import ToolError
from livegate.tools.base import OutputKind, RunContext, StoredOutput, ToolSpec
from livegate.tools.comfyui_api import ComfyAPI
from livegate.tools.comfyui_tracker import (
    Action,
    CheckHistory,
    ComfyRunTracker,
    Failed,
    Interrupted,
    Preview,
    ProgressUpdate,
    QueueChanged,
    ShowFile,
    Succeeded,
    outputs_from_history,
    succeeded,
)
from livegate.tools.settings import SettingsReader, ToolConfigError, check_schema, validate_inputs

__all__ = ["ComfyUITool"]

log = logging.getLogger("livegate.tools.comfyui")


class _Vanished:
    """Neither queued nor in history: deleted, or ComfyUI restarted and lost its queue."""


Outcome = Succeeded | Failed | Interrupted | _Vanished


@dataclass(frozen=True, slots=True)
class _Binding:
    name: str
    schema: dict[str, Any]
    targets: tuple[tuple[str, str], ...]
    required: bool


def _kind(media_type: str) -> OutputKind:
    major = media_type.split("/")[0]
    if major in ("image", "video", "audio", "text"):
        return major  # type: ignore[return-value]
    return "file"


def load_workflow(value: Any, where: str) -> dict[str, Any]:
    """An API-format workflow from a path or an inline table."""
    if isinstance(value, str):
        try:
            value = json.loads(Path(value).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ToolConfigError(f"{where}: cannot read workflow {value!r}: {exc}") from None
    if not isinstance(value, dict) or not value:
        raise ToolConfigError(f"{where}: 'workflow' must be a file path or a table")
    if "nodes" in value and "links" in value:
        raise ToolConfigError(f"{where}: workflow is in UI format; export it with 'Save (API Format)'")
    for node_id, node in value.items():
        if not isinstance(node, dict) or "class_type" not in node:
            raise ToolConfigError(f"{where}: workflow node {node_id!r} has no class_type")
    return value


class _Run:
    """One prompt being followed: its tracker and its (re)connecting WebSocket."""

    def __init__(self, tool: ComfyUITool, ctx: RunContext, tracker: ComfyRunTracker, client_id: str) -> None:
        self.tool, self.ctx, self.tracker, self.client_id = tool, ctx, tracker, client_id
        self.ws: Any = None
        self.gaps = 0  # disconnects during the run: outputs are then re-read from history
        self.position: int | None = None  # our place in ComfyUI's queue, as last reported
        self.last_contact = asyncio.get_running_loop().time()

    async def connect(self) -> bool:
        url = self.tool.api.ws_url(self.client_id)
        try:
            self.ws = await websockets.connect(url, open_timeout=self.tool.request_timeout, max_size=None)
            if self.tool.preview_metadata:
                flags = {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
                await self.ws.send(json.dumps(flags))
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            log.info("ComfyUI WebSocket %s unavailable: %r", url, exc)
            await self.close()
            return False
        self.last_contact = asyncio.get_running_loop().time()
        return True

    async def close(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def follow(self) -> Outcome:
        """Until the prompt's outcome is known (WebSocket frames, else ``/history``)."""
        loop = asyncio.get_running_loop()
        tool = self.tool
        next_poll = loop.time() + tool.poll_interval
        backoff = tool.reconnect_initial_delay
        while True:
            if self.ws is None:
                connected = await self.connect()
                outcome = await self.poll()  # catch up on what happened while we were away
                if outcome is not None:
                    return outcome
                if connected:
                    backoff = tool.reconnect_initial_delay
                else:
                    if loop.time() - self.last_contact > tool.unavailable_timeout:
                        raise ToolError(
                            f"ComfyUI at {tool.api.base_url} unreachable for {tool.unavailable_timeout}s",
                            code="upstream_unavailable",
                        )
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, tool.reconnect_max_delay)
                continue
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancel that lands as a frame arrives, and the run would go on regardless
                async with asyncio.timeout(max(0.0, next_poll - loop.time())):
                    frame = await self.ws.recv()
            except TimeoutError:
                next_poll = loop.time() + tool.poll_interval
                outcome = await self.poll()
            except websockets.ConnectionClosed:
                self.gaps += 1
                await self.close()
                outcome = await self.poll()
            else:
                self.last_contact = loop.time()
                outcome = await self.apply(self.tracker.feed(frame))
            if outcome is not None:
                return outcome

    async def poll(self) -> Outcome | None:
        """Read ``/history`` (and ``/queue`` if it is empty); ``None``: still going."""
        api, prompt_id = self.tool.api, self.tracker.prompt_id
        try:
            entry = await api.history(prompt_id)
            if entry is None:
                state = await api.queue_state(prompt_id)
                if state.where == "absent":
                    # it may have finished between the two reads
                    entry = await api.history(prompt_id)
                    if entry is None:
                        return _Vanished()
                elif state.where == "running":
                    self.tracker.started = True
        except ToolError as exc:
            log.info("ComfyUI poll of %s failed: %s", prompt_id, exc)
            return None
        self.last_contact = asyncio.get_running_loop().time()
        return await self.apply(self.tracker.feed_history(entry)) if entry else None

    async def apply(self, actions: list[Action]) -> Outcome | None:
        ctx = self.ctx
        for action in actions:
            if isinstance(action, ProgressUpdate):
                await ctx.progress(
                    action.fraction, step=action.step, total_steps=action.total_steps, message=action.message
                )
            elif isinstance(action, Preview):
                await ctx.progress(action.fraction, preview=action.data, preview_media_type=action.media_type)
            elif isinstance(action, ShowFile):
                try:
                    data, media_type = await self.tool.api.view(action.file)
                except ToolError as exc:  # a preview is a nicety: never fail the run for it
                    log.info("preview %s not fetched: %s", action.file.filename, exc)
                else:
                    await ctx.progress(action.fraction, preview=data, preview_media_type=media_type)
            elif isinstance(action, QueueChanged):
                await self.update_position()
            elif isinstance(action, CheckHistory):
                outcome = await self.poll()
                if outcome is not None:
                    return outcome
            else:
                return action
        if self.tracker.started and self.position is not None:
            self.position = None  # it left the remote queue
            await ctx.report_queue_position(None)
        return None

    async def update_position(self) -> None:
        """Our place in ComfyUI's queue (``GET /queue``), reported when it changed."""
        try:
            state = await self.tool.api.queue_state(self.tracker.prompt_id)
        except ToolError as exc:
            log.info("ComfyUI queue of %s not read: %s", self.tracker.prompt_id, exc)
            return
        if state.where == "absent":
            return  # finished or deleted (our own cancel): the run's end says the rest
        if state.where == "running":
            self.tracker.started = True
        position = state.position if state.where == "pending" else None
        if position != self.position:
            self.position = position
            await self.ctx.report_queue_position(position)


class ComfyUITool:
    """Settings: ``base_url`` (default ``http://127.0.0.1:8188``), ``workflow`` (path to an
    API-format JSON file, or an inline table), ``inputs`` (name -> ``{schema, node, input}``
    or ``{schema, targets = [{node, input}, ...]}``, optional ``required``),
    ``timeout_seconds`` (the tool's own limit for a run, code ``timeout``),
    ``request_timeout_seconds`` (30), ``poll_interval_seconds`` (5),
    ``reconnect_initial_delay_seconds`` (0.1), ``reconnect_max_delay_seconds`` (2),
    ``cancel_timeout_seconds`` (15), ``unavailable_timeout_seconds`` (60),
    ``preview_metadata`` (true: ask for event-4 previews that name their prompt)."""

    def __init__(self, spec: ToolSpec) -> None:
        self.spec = spec
        where = f"tool {spec.id!r} (kind {spec.kind!r})"
        r = SettingsReader(spec.id, spec.kind, spec.settings)
        base_url = r.string("base_url", "http://127.0.0.1:8188")
        self.workflow = load_workflow(r.raw("workflow"), where)
        bindings = r.mapping("inputs", {})
        self.deadline: float | None = r.number("timeout_seconds", None, minimum=0.001)
        self.request_timeout: float = r.number("request_timeout_seconds", 30.0, minimum=0.001)
        self.poll_interval: float = r.number("poll_interval_seconds", 5.0, minimum=0.01)
        self.reconnect_initial_delay: float = r.number("reconnect_initial_delay_seconds", 0.1, minimum=0)
        self.reconnect_max_delay: float = r.number("reconnect_max_delay_seconds", 2.0, minimum=0)
        self.cancel_timeout: float = r.number("cancel_timeout_seconds", 15.0, minimum=0)
        self.unavailable_timeout: float = r.number("unavailable_timeout_seconds", 60.0, minimum=0)
        self.preview_metadata = bool(r.raw("preview_metadata", True))
        r.finish()
        self.bindings = [self._binding(name, value, where) for name, value in bindings.items()]
        check_schema(self.input_schema, where)
        self.api = ComfyAPI(base_url, timeout=self.request_timeout)

    def _binding(self, name: str, value: Any, where: str) -> _Binding:
        if not isinstance(value, dict):
            raise ToolConfigError(f"{where}: input {name!r} must be a table")
        raw_targets = value.get("targets") or [{"node": value.get("node"), "input": value.get("input")}]
        targets = []
        for target in raw_targets:
            node, key = str(target.get("node")), target.get("input")
            if node not in self.workflow or not isinstance(key, str):
                raise ToolConfigError(f"{where}: input {name!r} targets unknown node {node!r} or no 'input'")
            targets.append((node, key))
        schema = dict(value.get("schema") or {})
        current = self.workflow[targets[0][0]].get("inputs", {}).get(targets[0][1])
        if "default" not in schema and current is not None and not isinstance(current, list):
            schema["default"] = current  # the workflow's own value (a list would be a link)
        unknown = set(value) - {"schema", "node", "input", "targets", "required"}
        if unknown:
            raise ToolConfigError(f"{where}: input {name!r} has unknown key(s) {sorted(unknown)}")
        return _Binding(name, schema, tuple(targets), bool(value.get("required", False)))

    @property
    def input_schema(self) -> dict[str, Any]:
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": self.spec.title,
            "type": "object",
            "additionalProperties": False,
            "required": [b.name for b in self.bindings if b.required],
            "properties": {b.name: b.schema for b in self.bindings},
        }

    def workflow_for(self, inputs: dict[str, Any]) -> dict[str, Any]:
        workflow = copy.deepcopy(self.workflow)
        for binding in self.bindings:
            if binding.name in inputs:
                for node, key in binding.targets:
                    workflow[node].setdefault("inputs", {})[key] = copy.deepcopy(inputs[binding.name])
        return workflow

    # -- Tool -----------------------------------------------------------------------------

    async def run(self, ctx: RunContext) -> list[StoredOutput]:
        workflow = self.workflow_for(validate_inputs(self.input_schema, ctx.inputs))
        prompt_id, client_id = str(uuid.uuid4()), str(uuid.uuid4())
        run = _Run(self, ctx, ComfyRunTracker(prompt_id, workflow), client_id)
        submitting = False
        try:
            if not await run.connect():
                raise ToolError(
                    f"cannot open the ComfyUI WebSocket at {self.api.ws_url(client_id)}",
                    code="upstream_unavailable",
                )
            # saved before submitting: after a crash in between, reattach finds nothing
            # and says so, rather than a prompt running unseen
            await ctx.save_upstream_ref(prompt_id)
            submitting = True
            await self.api.submit(workflow, client_id=client_id, prompt_id=prompt_id)
            await ctx.progress(0.0, message="Queued on ComfyUI")
            return await self._finish(run)
        except asyncio.CancelledError:
            if submitting and not ctx.detaching:
                await self._stop_upstream(run)
            raise
        finally:
            await run.close()

    async def reattach(self, ctx: RunContext) -> list[StoredOutput] | None:
        prompt_id = ctx.upstream_ref
        if not prompt_id:
            return None
        entry = await self.api.history(prompt_id)
        item = None
        if entry is None:
            state = await self.api.queue_state(prompt_id)
            item = state.item
            if state.where == "absent":
                entry = await self.api.history(prompt_id)
                if entry is None:
                    return None  # never queued, deleted, or lost by a ComfyUI restart
        source = item if item is not None else (entry or {}).get("prompt")
        workflow = source[2] if isinstance(source, list) and len(source) > 3 else self.workflow
        extra = source[3] if isinstance(source, list) and len(source) > 3 else {}
        # reusing the dead run's client id routes the prompt's frames to us again
        client_id = extra.get("client_id") if isinstance(extra, dict) else None
        run = _Run(self, ctx, ComfyRunTracker(prompt_id, workflow), client_id or str(uuid.uuid4()))
        try:
            if entry is not None:
                outcome = await run.apply(run.tracker.feed_history(entry))
                return await self._finish(run, outcome)
            await run.connect()
            return await self._finish(run)
        except asyncio.CancelledError:
            if not ctx.detaching:
                await self._stop_upstream(run)
            raise
        finally:
            await run.close()

    async def aclose(self) -> None:
        await self.api.aclose()

    # -- outcome ----------------------------------------------------------------------------

    async def _finish(self, run: _Run, outcome: Outcome | None = None) -> list[StoredOutput]:
        if outcome is None:
            try:
                async with asyncio.timeout(self.deadline):
                    outcome = await run.follow()
            except TimeoutError:
                await self._stop_upstream(run)
                raise ToolError(f"the run exceeded the tool's limit of {self.deadline}s", code="timeout") from None
        if isinstance(outcome, Failed):
            raise ToolError(outcome.message, code="execution_error", node_id=outcome.node_id)
        if isinstance(outcome, Interrupted):
            where = f" at {outcome.node_type} (node {outcome.node_id})" if outcome.node_id else ""
            raise ToolError(
                f"the prompt was interrupted on ComfyUI{where}, not by this gateway",
                code="execution_error",
                node_id=outcome.node_id,
            )
        if isinstance(outcome, _Vanished):
            raise ToolError(
                f"prompt {run.tracker.prompt_id} vanished from ComfyUI (deleted, or the server restarted)",
                code="upstream_unavailable",
            )
        if run.gaps:
            # frames were lost while disconnected: the history is the authority on outputs
            with contextlib.suppress(ToolError):
                entry = await self.api.history(run.tracker.prompt_id)
                if entry:
                    outcome = succeeded(outputs_from_history(entry), outcome.images)
        return await self._store(run.ctx, outcome)

    async def _store(self, ctx: RunContext, outcome: Succeeded) -> list[StoredOutput]:
        stored: list[StoredOutput] = []
        blobs = [(f.filename, *await self.api.view(f)) for f in outcome.files]
        blobs += [(f"websocket_{i + 1}.png", img.data, img.media_type) for i, img in enumerate(outcome.images)]
        for filename, data, media_type in blobs:
            kind = _kind(media_type)
            width = height = None
            if kind == "image":
                with contextlib.suppress(UnidentifiedImageError, OSError), Image.open(io.BytesIO(data)) as image:
                    width, height = image.size
            stored.append(
                await ctx.store_output(
                    data, kind=kind, media_type=media_type, filename=filename, width=width, height=height
                )
            )
        return stored

    async def _stop_upstream(self, run: _Run) -> None:
        """Interrupt (running) or delete (pending) our prompt and wait, bounded, until
        ComfyUI confirms. Best effort: failures are logged, never raised."""
        api, prompt_id = self.api, run.tracker.prompt_id
        try:
            async with asyncio.timeout(self.cancel_timeout):
                state = await api.queue_state(prompt_id)
                if run.tracker.started or state.where == "running":
                    await api.interrupt(prompt_id)
                elif state.where == "pending":
                    await api.delete(prompt_id)
                    if (await api.queue_state(prompt_id)).where == "running":  # it just started
                        await api.interrupt(prompt_id)
                else:
                    return  # already over
                if run.tracker.done:
                    return
                outcome = await run.follow()
                log.info("ComfyUI prompt %s stopped: %s", prompt_id, type(outcome).__name__)
        except (TimeoutError, ToolError) as exc:
            log.warning("could not confirm that ComfyUI stopped prompt %s: %r", prompt_id, exc)
