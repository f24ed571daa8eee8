"""Serving a fake upstream: uvicorn inside the running event loop, on a free local port.

Also where a fake finds its fixtures when none is given (``find_fixtures_dir``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

__all__ = ["NO_CONTENT_TYPE", "BackgroundServer", "find_fixtures_dir", "strip_marked_content_type"]

# Litestar always sets a content-type. Real ComfyUI answers some requests (POST /queue,
# /interrupt, /view 404) with an empty body and no content-type at all; a handler marks such
# a response with this header and the wrapper below removes both.
NO_CONTENT_TYPE = "x-fake-no-content-type"


def strip_marked_content_type(app: Any) -> Any:
    """Wrap an ASGI app: drop ``content-type`` from responses marked ``NO_CONTENT_TYPE``."""
    marker = NO_CONTENT_TYPE.encode()

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def filtered_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers") or []
                if any(name.lower() == marker for name, _ in headers):
                    message = dict(message)
                    message["headers"] = [
                        (name, value)
                        for name, value in headers
                        if name.lower() not in (marker, b"content-type")
                    ]
            await send(message)

        await app(scope, receive, filtered_send)

    return wrapped


class _InLoopServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.wake = asyncio.Event()

    # uvicorn installs SIGINT/SIGTERM handlers while serving; several fakes in one test
    # process would restore each other's handlers in the wrong order. Leave signals alone.
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def main_loop(self) -> None:
        # uvicorn's own loop notices should_exit only every 0.1 s; tests stop many servers
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), 0.1)
            should_exit = await self.on_tick(counter)


class BackgroundServer:
    """Run an ASGI app with uvicorn as a task of the current event loop.

    ``port=0`` picks a free port; :attr:`base_url` is known once :meth:`start` returns.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._server: _InLoopServer | None = None
        self._task: asyncio.Task[None] | None = None
        self.port: int | None = None

    @property
    def base_url(self) -> str:
        if self.port is None:
            raise RuntimeError("server not started")
        return f"http://{self._host}:{self.port}"

    async def start(self) -> str:
        # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose
        # proto says TCP, and without it every response waits ~40 ms for a delayed ACK
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self._host, self._port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_level="critical",
            access_log=False,
            ws="websockets-sansio",
            ws_max_size=64 * 1024 * 1024,
            timeout_graceful_shutdown=2,
        )
        self._server = _InLoopServer(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # re-raise the startup error
                raise RuntimeError("uvicorn stopped during startup")
            await asyncio.sleep(0.005)
        return self.base_url

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        self._server.wake.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = None
        self._task = None


def find_fixtures_dir(name: str) -> Path:
    """Locate ``tests/fixtures/<name>``: ``$LIVEGATE_FIXTURES_DIR/<name>``, else the repo
    checkout this package lives in, else the current directory."""
    candidates = []
    env = os.environ.get("LIVEGATE_FIXTURES_DIR")
    if env:
        candidates.append(Path(env) / name)
    candidates.append(Path(__file__).resolve().parents[3] / "tests" / "fixtures" / name)
    candidates.append(Path.cwd() / "tests" / "fixtures" / name)
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"fixtures {name!r} not found (tried {', '.join(map(str, candidates))}); "
        "pass fixtures_dir explicitly"
    )
