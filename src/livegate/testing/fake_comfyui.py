"""A protocol-faithful fake ComfyUI 0.8.0: real HTTP + WebSocket on one local port.

Runs are *scripted from captured traces* (``tests/fixtures/comfyui``, see its README): a
submitted prompt is matched to a script by its graph shape (node ids + classes; inputs may
differ) — ``success.json`` submitted again unchanged gets the ``cached`` run, the
websocket-image workflow gets event-4 previews when the client announced
``supports_preview_metadata`` — or a scenario is forced (:meth:`FakeComfyUI.force_scenario`,
:attr:`FakeComfyUI.scenario`). Unknown workflows get a synthesised run of the same shape.

What is faithful: frames are replayed in captured order with the client's prompt_id
substituted, fresh timestamps and the captured relative timing times ``speed``; binary frames
are the captured bytes. Prompts run one after another; ``status`` frames go to every socket on
each queue change; execution frames only to the socket whose ``clientId`` submitted the
prompt (none connected: dropped). ``POST /interrupt`` lands at the next node start or
progress tick, as real ComfyUI's does. A reconnecting client gets no replay, only ``status``
(with ``sid``) and ``executing {node}`` without prompt_id. History holds every finished run.

Test hooks: :meth:`drop_connections`, :attr:`accept_websockets`, :meth:`pause` /
:meth:`resume`, :meth:`wait_for_node`, :meth:`wait_for_history`, :attr:`submitted` and
:attr:`interrupts` (what clients asked for). Run by hand:
``python -m livegate.testing.fake_comfyui --port 8188``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, Response, WebSocket, get, post, websocket
from litestar.exceptions import WebSocketDisconnect

from livegate.testing._comfyui_static import ComfyStatic
from livegate.testing._server import (
    NO_CONTENT_TYPE,
    BackgroundServer,
    find_fixtures_dir,
    strip_marked_content_type,
)
from livegate.testing.comfyui_traces import (
    OUTPUT_NODE_CLASSES,
    Script,
    ScriptFrame,
    build_scripts,
    iter_output_files,
    load_traces,
    substitute,
    synth_script,
    temp_prefix,
    workflow_shape,
)

__all__ = ["FakeComfyUI", "main"]

MALFORMED_BODY = b"500 Internal Server Error\n\nServer got itself in trouble"


@dataclass(slots=True)
class _Item:
    number: int
    prompt_id: str
    prompt: dict[str, Any]
    extra_data: dict[str, Any]
    outputs_to_execute: list[str]

    @property
    def client_id(self) -> str | None:
        return self.extra_data.get("client_id")

    def entry(self) -> list[Any]:
        return [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]


@dataclass(eq=False, slots=True)
class _Conn:
    sid: str
    socket: WebSocket[Any, Any, Any]
    flags: dict[str, Any] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    closed: bool = False

    async def send(self, frame: str | bytes) -> None:
        async with self.lock:
            if self.closed:
                return
            try:
                if isinstance(frame, bytes):
                    await self.socket.send_bytes(frame)
                else:
                    await self.socket.send_text(frame)
            except Exception:  # the peer went away: ComfyUI just drops the frame too
                self.closed = True

    async def close(self, code: int) -> None:
        async with self.lock:
            if not self.closed:
                self.closed = True
                with contextlib.suppress(Exception):
                    await self.socket.close(code=code)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _json(body: Any, status: int = 200) -> Response[bytes]:
    return Response(
        json.dumps(body).encode(), status_code=status, media_type="application/json; charset=utf-8"
    )


def _empty(status: int = 200) -> Response[bytes]:
    return Response(b"", status_code=status, headers={NO_CONTENT_TYPE: "1"})


class FakeComfyUI:
    """``async with FakeComfyUI(fixtures_dir, speed=0.05) as fake: ... fake.base_url``."""

    def __init__(
        self,
        fixtures_dir: str | Path | None = None,
        *,
        speed: float = 1.0,
        host: str = "127.0.0.1",
        port: int = 0,
        synth_node_seconds: float = 0.05,
    ) -> None:
        fixtures = Path(fixtures_dir) if fixtures_dir else find_fixtures_dir("comfyui")
        self.speed = speed
        self.synth_node_seconds = synth_node_seconds
        self.scenario: str | None = None  # sticky override for every prompt
        self.accept_websockets = True
        self.static = ComfyStatic(fixtures)
        self.traces = load_traces(fixtures)
        self.scripts = build_scripts(self.traces)
        self._by_shape = {
            workflow_shape(s.workflow): name
            for name, s in self.scripts.items()
            if name in ("success", "execution_error", "websocket_image", "queue_item", "slow_blur_chain")
        }
        self._forced: deque[str] = deque()
        self._cache: set[str] = set()
        self._rng = random.Random(0)
        self._number = 0
        self._pending: list[_Item] = []
        self._running: _Item | None = None
        self._last_node: str | None = None
        self._reached: dict[str, set[str]] = {}  # prompt id -> nodes it has started executing
        self._interrupt = False
        self._history: dict[str, dict[str, Any]] = {}
        self._conns: dict[str, _Conn] = {}
        self._all_conns: set[_Conn] = set()
        self._wakeup = asyncio.Event()
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._changed = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._server = BackgroundServer(strip_marked_content_type(self._app()), host=host, port=port)
        self.submitted: list[dict[str, Any]] = []  # every accepted POST /prompt body
        self.interrupts: list[Any] = []  # the prompt_id (or None) of every POST /interrupt
        self.errors: list[BaseException] = []  # exceptions inside the fake's executor

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> FakeComfyUI:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> str:
        self._worker = asyncio.create_task(self._work())
        return await self._server.start()

    async def stop(self) -> None:
        await self.drop_connections(code=1001)
        if self._worker:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        await self._server.stop()

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def ws_url(self) -> str:
        return self.base_url.replace("http://", "ws://", 1) + "/ws"

    # -- knobs and hooks ----------------------------------------------------------------

    def force_scenario(self, *names: str) -> None:
        """The next prompts (one per name) run these scripts whatever they contain."""
        for name in names:
            if name not in self.scripts and name != "synth":
                raise ValueError(f"unknown scenario {name!r}; known: {sorted(self.scripts)}")
        self._forced.extend(names)

    def pause(self) -> None:
        """Hold the running prompt before its next frame (the queue and HTTP still answer)
        until :meth:`resume`: a test can then do things "while node N runs"."""
        self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()

    async def drop_connections(self, code: int = 1011) -> None:
        """Close every WebSocket from the server side (runs continue)."""
        for conn in list(self._all_conns):
            await conn.close(code)

    @property
    def running_prompt_id(self) -> str | None:
        return self._running.prompt_id if self._running else None

    @property
    def current_node(self) -> str | None:
        return self._last_node

    @property
    def connection_count(self) -> int:
        return sum(1 for c in self._all_conns if not c.closed)

    def history_entry(self, prompt_id: str) -> dict[str, Any] | None:
        return self._history.get(prompt_id)

    async def wait_for_node(self, prompt_id: str, node: str, timeout: float = 10.0) -> None:
        """Until ``prompt_id`` is running and has reached node ``node`` (it may be past it
        already when a loaded machine wakes the waiter late)."""
        await self._wait(
            lambda: self.running_prompt_id == prompt_id and node in self._reached.get(prompt_id, ()), timeout
        )

    async def wait_for_history(self, prompt_id: str, timeout: float = 10.0) -> dict[str, Any]:
        await self._wait(lambda: prompt_id in self._history, timeout)
        return self._history[prompt_id]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        await self._wait(condition, timeout)

    async def _wait(self, condition: Callable[[], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                if condition():
                    return
                await changed.wait()

    def _notify(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    # -- queue and execution ------------------------------------------------------------

    def _queue_remaining(self) -> int:
        return len(self._pending) + (1 if self._running else 0)

    def _status(self, sid: str | None = None) -> str:
        data: dict[str, Any] = {"status": {"exec_info": {"queue_remaining": self._queue_remaining()}}}
        if sid is not None:
            data["sid"] = sid
        return json.dumps({"type": "status", "data": data})

    async def _broadcast_status(self) -> None:
        frame = self._status()
        for conn in list(self._all_conns):
            await conn.send(frame)

    async def _send_to(self, client_id: str | None, frame: str | bytes) -> None:
        conn = self._conns.get(client_id) if client_id else None
        if conn is not None:
            await conn.send(frame)

    async def _work(self) -> None:
        while True:
            while not self._pending:
                self._wakeup.clear()
                await self._wakeup.wait()
            item = self._pending.pop(0)
            self._running = item
            await self._broadcast_status()
            try:
                entry = await self._execute(item)
            except Exception as exc:  # a bug in the fake: keep serving, let tests see it
                self.errors.append(exc)
                entry = {"prompt": item.entry(), "outputs": {}, "status": None, "meta": {}}
            self._history[item.prompt_id] = entry
            self._running = None
            self._last_node = None
            await self._broadcast_status()
            end = {"type": "executing", "data": {"node": None, "prompt_id": item.prompt_id}}
            await self._send_to(item.client_id, json.dumps(end))
            self._notify()

    def _choose(self, item: _Item) -> Script:
        name = self._forced.popleft() if self._forced else self.scenario
        key = json.dumps(item.prompt, sort_keys=True)
        if name is None:
            name = self._by_shape.get(workflow_shape(item.prompt), "synth")
            if name == "success" and key in self._cache:
                name = "cached"
        conn = self._conns.get(item.client_id or "")
        if name == "websocket_image" and conn and conn.flags.get("supports_preview_metadata"):
            name = "websocket_image_feature_flags"
        if name == "synth":
            return synth_script(
                item.prompt, item.prompt_id, self._name_output, self.synth_node_seconds
            )
        return self.scripts[name]

    def _name_output(self, node_id: str, class_type: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        if class_type == "PreviewImage":
            prefix, kind = temp_prefix(self._rng), "temp"
        else:
            prefix, kind = str(inputs.get("filename_prefix", "ComfyUI")), "output"
        taken = sum(1 for (t, _, f) in self.static.files if t == kind and f.startswith(prefix + "_"))
        return {"filename": f"{prefix}_{taken + 1:05}_.png", "subfolder": "", "type": kind}

    async def _execute(self, item: _Item) -> dict[str, Any]:
        script = self._choose(item)
        self._interrupt = False  # ComfyUI clears the flag when a prompt starts
        loop = asyncio.get_running_loop()
        start = loop.time()
        messages: list[list[Any]] = []
        outputs: dict[str, Any] = {}
        meta: dict[str, Any] = {}
        finished: list[str] = []
        status_str = "success"
        frames = script.frames
        for index, frame in enumerate(frames):
            delay = start + frame.at * self.speed - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if not self._resumed.is_set():  # paused by the test: the run stands still
                paused_at = loop.time()
                await self._resumed.wait()
                start += loop.time() - paused_at
            if self._interrupt and _is_progress_tick(frames, index):
                # the progress hook checks for an interrupt before it reports anything
                messages.append(await self._interrupted(item, finished))
                status_str = "error"
                break
            if frame.data is not None:
                await self._send_to(item.client_id, _binary(frame.data, script.prompt_id, item.prompt_id))
                continue
            msg = _prepare(frame, script.prompt_id, item.prompt_id)
            type_, data = msg["type"], msg["data"]
            if type_ in ("execution_start", "execution_cached", "execution_success", "execution_error"):
                messages.append([type_, data])
            if type_ == "execution_error":
                status_str = "error"
            elif type_ == "executing":
                self._last_node = data["node"]
                if data["node"] is not None:
                    self._reached.setdefault(item.prompt_id, set()).add(str(data["node"]))
            elif type_ == "progress_state":
                finished[:] = [n for n, s in data["nodes"].items() if s.get("state") == "finished"]
            elif type_ == "executed":
                _rename_outputs(data, script.workflow, item.prompt)
                outputs[data["node"]] = data["output"]
                meta[data["node"]] = {
                    "node_id": data["node"],
                    "display_node": data.get("display_node", data["node"]),
                    "parent_node": None,
                    "real_node_id": data["node"],
                }
                for image in iter_output_files(data["output"]):
                    self.static.ensure_file(image)
            await self._send_to(item.client_id, json.dumps(msg))
            self._notify()
            if type_ == "executing" and self._interrupt:
                # a node about to run checks for an interrupt right after `executing`
                messages.append(await self._interrupted(item, finished))
                status_str = "error"
                break
        if status_str == "success":
            self._cache.add(json.dumps(item.prompt, sort_keys=True))
        return {
            "prompt": item.entry(),
            "outputs": outputs,
            "status": {
                "status_str": status_str,
                "completed": status_str == "success",
                "messages": messages,
            },
            "meta": meta,
        }

    async def _interrupted(self, item: _Item, finished: list[str]) -> list[Any]:
        node = self._last_node
        node_type = (item.prompt.get(node or "") or {}).get("class_type")
        data = {
            "prompt_id": item.prompt_id,
            "node_id": node,
            "node_type": node_type,
            "executed": list(finished),
            "timestamp": _now_ms(),
        }
        await self._send_to(item.client_id, json.dumps({"type": "execution_interrupted", "data": data}))
        return ["execution_interrupted", data]

    # -- HTTP and WebSocket ---------------------------------------------------------------

    def _app(self) -> Litestar:
        fake = self

        @post(["/prompt", "/api/prompt"], status_code=200)
        async def post_prompt(request: Request[Any, Any, Any]) -> Response[bytes]:
            return await fake._post_prompt(await request.body())

        @get(["/prompt", "/api/prompt"])
        async def get_prompt() -> Response[bytes]:
            return _json({"exec_info": {"queue_remaining": fake._queue_remaining()}})

        @get(["/queue", "/api/queue"])
        async def get_queue() -> Response[bytes]:
            running = [fake._running.entry()] if fake._running else []
            pending = [i.entry() for i in sorted(fake._pending, key=lambda i: i.number)]
            return _json({"queue_running": running, "queue_pending": pending})

        @post(["/queue", "/api/queue"], status_code=200)
        async def post_queue(request: Request[Any, Any, Any]) -> Response[bytes]:
            body = _loads(await request.body()) or {}
            before = len(fake._pending)
            if body.get("clear"):
                fake._pending.clear()
            ids = set(body.get("delete") or [])
            fake._pending = [i for i in fake._pending if i.prompt_id not in ids]
            if len(fake._pending) != before:
                await fake._broadcast_status()
                fake._notify()
            return _empty()

        @post(["/interrupt", "/api/interrupt"], status_code=200)
        async def post_interrupt(request: Request[Any, Any, Any]) -> Response[bytes]:
            body = _loads(await request.body())
            target = body.get("prompt_id") if isinstance(body, dict) else None
            fake.interrupts.append(target)
            fake._notify()
            if fake._running and (target is None or target == fake._running.prompt_id):
                fake._interrupt = True
            return _empty()

        # parameters are read from the request: Litestar deprecates inferred parameters
        @get(["/history", "/api/history"])
        async def get_history(request: Request[Any, Any, Any]) -> Response[bytes]:
            items = list(fake._history.items())
            max_items = request.query_params.get("max_items")
            if max_items is not None and max_items.isdigit():
                items = items[-int(max_items) :] if int(max_items) > 0 else []
            return _json(dict(items))

        @get(["/history/{prompt_id:str}", "/api/history/{prompt_id:str}"])
        async def get_history_one(request: Request[Any, Any, Any]) -> Response[bytes]:
            prompt_id = request.path_params["prompt_id"]
            entry = fake._history.get(prompt_id)
            return _json({prompt_id: entry} if entry is not None else {})

        @post(["/history", "/api/history"], status_code=200)
        async def post_history(request: Request[Any, Any, Any]) -> Response[bytes]:
            body = _loads(await request.body()) or {}
            if body.get("clear"):
                fake._history.clear()
            for prompt_id in body.get("delete") or []:
                fake._history.pop(prompt_id, None)
            return _empty()

        @get(["/view", "/api/view"])
        async def view(request: Request[Any, Any, Any]) -> Response[bytes]:
            return fake._view(dict(request.query_params))

        @get(["/system_stats", "/api/system_stats"])
        async def system_stats() -> Response[bytes]:
            return _json(fake.static.body("get_system_stats"))

        @get(["/features", "/api/features"])
        async def features() -> Response[bytes]:
            return _json(fake.static.body("get_features"))

        @get(["/object_info", "/api/object_info"])
        async def object_info_all() -> Response[bytes]:
            return _json(fake.static.object_info)

        @get(["/object_info/{node_class:str}", "/api/object_info/{node_class:str}"])
        async def object_info(request: Request[Any, Any, Any]) -> Response[bytes]:
            node_class = request.path_params["node_class"]
            info = fake.static.object_info.get(node_class)
            return _json({node_class: info} if info is not None else {})

        @websocket(["/ws", "/api/ws"])
        async def ws(socket: WebSocket[Any, Any, Any]) -> None:
            await fake._serve_socket(socket)

        handlers: list[Any] = [post_prompt, get_prompt, get_queue, post_queue, post_interrupt, get_history]
        handlers += [get_history_one, post_history, view, system_stats, features]
        handlers += [object_info_all, object_info, ws]
        return Litestar(handlers, openapi_config=None, logging_config=None, debug=False)

    async def _post_prompt(self, raw: bytes) -> Response[bytes]:
        try:
            body = json.loads(raw)
        except ValueError:
            # aiohttp's answer to the unhandled JSONDecodeError, captured verbatim
            return Response(MALFORMED_BODY, status_code=500, media_type="text/plain")
        if not isinstance(body, dict) or "prompt" not in body:
            return _json(
                {
                    "error": {
                        "type": "no_prompt",
                        "message": "No prompt provided",
                        "details": "No prompt provided",
                        "extra_info": {},
                    },
                    "node_errors": {},
                },
                400,
            )
        rejected = self.static.validate(body["prompt"])
        if rejected is not None:
            return _json(rejected[1], rejected[0])
        prompt: dict[str, Any] = body["prompt"]
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        extra_data = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra_data["client_id"] = body["client_id"]
        extra_data["create_time"] = _now_ms()
        outputs = [n for n, node in prompt.items() if node["class_type"] in OUTPUT_NODE_CLASSES]
        item = _Item(self._number, prompt_id, prompt, extra_data, outputs)
        self._number += 1
        self.submitted.append(body)
        self._pending.append(item)
        await self._broadcast_status()
        self._wakeup.set()
        self._notify()
        return _json({"prompt_id": prompt_id, "number": item.number, "node_errors": {}})

    def _view(self, query: Mapping[str, str]) -> Response[bytes]:
        filename = query.get("filename")
        if not filename:
            return _empty(404)
        if filename[0] == "/" or ".." in filename:
            return _empty(400)
        type_ = query.get("type", "output")
        if type_ not in ("output", "input", "temp"):
            return _empty(400)
        subfolder = query.get("subfolder", "")
        if subfolder.startswith("/") or ".." in subfolder:
            return _empty(403)
        stored = self.static.view((type_, subfolder, filename), query.get("preview"))
        if stored is None:
            return _empty(404)
        return Response(
            stored.data,
            media_type=stored.media_type,
            headers={"Content-Disposition": f'filename="{filename}"'},
        )

    async def _serve_socket(self, socket: WebSocket[Any, Any, Any]) -> None:
        if not self.accept_websockets:
            await socket.close(code=1013)  # before accept: the client sees HTTP 403
            return
        await socket.accept()
        sid = socket.query_params.get("clientId") or uuid.uuid4().hex
        conn = _Conn(sid, socket)
        self._conns[sid] = conn  # like ComfyUI: the newest socket of a client id wins
        self._all_conns.add(conn)
        self._notify()
        try:
            await conn.send(self._status(sid))
            running = self._running
            if running and running.client_id == sid and self._last_node is not None:
                await conn.send(json.dumps({"type": "executing", "data": {"node": self._last_node}}))
            while not conn.closed:
                event = await socket.receive()
                if event["type"] == "websocket.disconnect":
                    break
                text = event.get("text")
                message = _loads(text if isinstance(text, str) else b"")
                if isinstance(message, dict) and message.get("type") == "feature_flags":
                    conn.flags = dict(message.get("data") or {})
                    reply = {"type": "feature_flags", "data": self.static.body("get_features")}
                    await conn.send(json.dumps(reply))
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            conn.closed = True
            self._all_conns.discard(conn)
            if self._conns.get(sid) is conn:
                del self._conns[sid]
            self._notify()


def _loads(raw: bytes | str) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _prepare(frame: ScriptFrame, old_pid: str, new_pid: str) -> dict[str, Any]:
    assert frame.msg is not None
    msg: dict[str, Any] = (substitute(frame.msg, old_pid, new_pid) if old_pid != new_pid
                           else json.loads(json.dumps(frame.msg)))
    if isinstance(msg.get("data"), dict) and "timestamp" in msg["data"]:
        msg["data"]["timestamp"] = _now_ms()
    return msg


def _binary(data: bytes, old_pid: str, new_pid: str) -> bytes:
    """A captured binary frame; event 4's JSON metadata names the prompt, so re-encode it
    (``json.dumps`` defaults, as ComfyUI does) when the prompt id differs."""
    if old_pid == new_pid or int.from_bytes(data[:4], "big") != 4:
        return data
    size = int.from_bytes(data[4:8], "big")
    metadata = json.loads(data[8 : 8 + size])
    if metadata.get("prompt_id") != old_pid:
        return data
    encoded = json.dumps({**metadata, "prompt_id": new_pid}).encode()
    return data[:4] + len(encoded).to_bytes(4, "big") + encoded + data[8 + size :]


def _rename_outputs(data: dict[str, Any], scripted: Mapping[str, Any], submitted: Mapping[str, Any]) -> None:
    """Saved files are named after the submitted ``filename_prefix`` (queue prompts A and B
    share a script but not a prefix)."""
    node = data["node"]
    old = ((scripted.get(node) or {}).get("inputs") or {}).get("filename_prefix")
    new = ((submitted.get(node) or {}).get("inputs") or {}).get("filename_prefix")
    if not isinstance(old, str) or not isinstance(new, str) or old == new:
        return
    for image in iter_output_files(data.get("output") or {}):
        if image.get("type") == "output" and image["filename"].startswith(old + "_"):
            image["filename"] = new + image["filename"][len(old) :]


def _is_progress_tick(frames: tuple[ScriptFrame, ...], index: int) -> bool:
    """A ``progress_state`` that opens a progress update (its ``progress`` frame follows,
    possibly after a binary preview)."""
    frame = frames[index]
    if frame.msg is None or frame.msg["type"] != "progress_state":
        return False
    for later in frames[index + 1 :]:
        if later.msg is not None:
            return bool(later.msg["type"] == "progress")
    return False


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake ComfyUI 0.8.0 replaying captured traces.")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--fixtures", type=Path, default=None, help="tests/fixtures/comfyui")
    parser.add_argument("--speed", type=float, default=1.0, help="multiplies captured delays")
    args = parser.parse_args(argv)

    async def serve() -> None:
        fake = FakeComfyUI(args.fixtures, speed=args.speed, host=args.host, port=args.port)
        async with fake:
            print(f"fake ComfyUI listening on {fake.base_url} (ws: {fake.ws_url})", flush=True)
            await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
