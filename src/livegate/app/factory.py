"""Build the Litestar application for one :class:`Gateway`."""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path
from typing import Any, cast

from litestar import Litestar, Request, WebSocket, get, websocket
from litestar.response import File
from litestar.static_files import create_static_files_router
from litestar.types import ExceptionHandlersMap

from livegate.app.gateway import Gateway
from livegate.app.problems import EXCEPTION_HANDLERS
from livegate.app.routes_core import MAX_BODY_BYTES, core_routes
from livegate.app.routes_generations import generation_routes
from livegate.app.security import security_headers_hook
from livegate.app.sse import sse_routes
from livegate.app.ws import Connection
from livegate.config import Config
from livegate.logs import configure_logging
from livegate.transport.asgi import serve_asgi


def web_dir() -> Path:
    """The sandbox (``web/``): ``LIVEGATE_WEB_DIR``, else the repository's ``web/``."""
    override = os.environ.get("LIVEGATE_WEB_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3] / "web"


def docs_dir() -> Path:
    """The docs (``docs/``, whose ``reference/`` holds the generated spec pages):
    ``LIVEGATE_DOCS_DIR``, else the repository's ``docs/``."""
    override = os.environ.get("LIVEGATE_DOCS_DIR")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3] / "docs"


# What of web/ the gateway serves: its top-level files and these folders. web/tools holds
# dev-time build scripts (and maybe node_modules) that must not be public.
SANDBOX_FOLDERS = ("app", "generated")


def sandbox_routes(web: Path) -> list[Any]:
    """The sandbox at ``/``: ``index.html``, the other top-level files of ``web/`` and
    :data:`SANDBOX_FOLDERS`."""
    files = {f"/{f.name}": f for f in sorted(web.iterdir()) if f.is_file() and not f.name.startswith(".")}
    if "/index.html" in files:
        files["/"] = files["/index.html"]

    @get(list(files), include_in_schema=False, sync_to_thread=False, name="sandbox")
    def sandbox_file(request: Request[Any, Any, Any]) -> File:
        path = files[request.url.path]
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return File(path, media_type=media_type, content_disposition_type="inline")

    routes: list[Any] = [sandbox_file] if files else []
    for folder in SANDBOX_FOLDERS:
        if (web / folder).is_dir():
            routes.append(create_static_files_router(path=f"/{folder}", directories=[web / folder],
                                                     name=f"sandbox-{folder}", include_in_schema=False))
    return routes


def create_app(config: Config | None = None, *, gateway: Gateway | None = None) -> Litestar:
    gw = gateway or Gateway(config or Config.from_env())
    configure_logging(gw.config.log_level)

    @websocket("/v1/ws")
    async def ws_endpoint(socket: WebSocket[Any, Any, Any]) -> None:
        """asyncapi.yaml channel ``userStream``, through the ASGI wire (any ASGI server, test
        clients); ``livegate serve`` serves it with the native wire (livegate.server)."""
        await serve_asgi(socket, lambda wire: Connection(wire, gw, origin=socket.headers.get("origin")))

    handlers: list[Any] = [ws_endpoint, *core_routes(gw), *sse_routes(gw), *generation_routes(gw)]
    web = web_dir()
    docs = docs_dir()
    if (docs / "reference").is_dir():
        # /docs/ shows docs/index.html: the reference pages, offline (no CDN).
        handlers.append(create_static_files_router(path="/docs", directories=[docs], html_mode=True,
                                                   name="docs", include_in_schema=False))
    if web.is_dir():
        handlers.extend(sandbox_routes(web))
    app = Litestar(
        route_handlers=handlers,
        on_startup=[gw.start],
        on_shutdown=[gw.stop],
        exception_handlers=cast("ExceptionHandlersMap", EXCEPTION_HANDLERS),
        openapi_config=None,  # openapi.yaml is hand-written and served as is
        request_max_body_size=MAX_BODY_BYTES,
        before_send=[security_headers_hook(docs)],  # CSP, nosniff, no framing, no Referer (security.py)
    )
    app.state.gateway = gw
    return app
