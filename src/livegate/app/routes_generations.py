"""Tools, generations and outputs routes of openapi.yaml."""

from __future__ import annotations

import re
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter

from livegate.app.auth import bearer, require_user
from livegate.app.gateway import Gateway
from livegate.app.problems import ProblemError
from livegate.app.routes_core import _json, decode_body
from livegate.errors import AuthError, NotFound
from livegate.protocol import http
from livegate.service.generations import GenerationService, InputsInvalid

_create_decoder = msgspec.json.Decoder(http.CreateGenerationRequest)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
PathStr = Annotated[str, Parameter()]
STATUSES = ("queued", "running", "completed", "failed", "cancelled")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=a-b`` range as inclusive ``(start, end)``; ``None`` = unsatisfiable.
    Several ranges are answered with the first (allowed by RFC 9110)."""
    match = _RANGE.match(header.split(",")[0].strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    if not match.group(1):  # suffix: the last N bytes
        length = int(match.group(2))
        if length == 0:
            return None
        return max(0, size - length), size - 1
    start = int(match.group(1))
    end = int(match.group(2)) if match.group(2) else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


def generation_routes(gw: Gateway) -> list[HTTPRouteHandler]:
    def service() -> GenerationService:
        if gw.generations is None:
            raise ProblemError(503, "internal_error", "The generation service is starting")
        return gw.generations

    def user(request: Request[Any, Any, Any]) -> str:
        return require_user(request, gw.verifier)

    def not_found(exc: NotFound) -> ProblemError:
        return ProblemError(404, exc.code if exc.code == "unknown_tool" else "not_found", exc.message)

    @get("/v1/tools")
    async def list_tools(request: Request[Any, Any, Any]) -> Response[bytes]:
        """openapi.yaml ``listTools``."""
        user(request)
        return _json(http.ToolList(tools=service().tool_infos()))

    @post("/v1/generations")
    async def create_generation(request: Request[Any, Any, Any]) -> Response[bytes]:
        """openapi.yaml ``createGeneration``."""
        user_id = user(request)
        body = decode_body(await request.body(), _create_decoder)
        try:
            generation = await service().create(user_id, body.tool_id, body.inputs)
        except NotFound as exc:
            raise not_found(exc) from None
        except InputsInvalid as exc:
            raise ProblemError(422, "validation_failed", "The inputs do not match the tool's input schema",
                               errors=exc.errors) from None
        return _json(generation, 202)

    @get("/v1/generations")
    async def list_generations(request: Request[Any, Any, Any]) -> Response[bytes]:
        """openapi.yaml ``listGenerations``."""
        user_id = user(request)
        params = request.query_params
        try:
            limit = int(params.get("limit", "20"))
        except ValueError:
            limit = 0
        status = params.get("status")
        if not 1 <= limit <= 100 or (status is not None and status not in STATUSES):
            raise ProblemError(422, "validation_failed", "limit must be 1..100 and status a GenerationStatus",
                               errors=[http.ProblemItem(message="invalid query parameter", path="$.query")])
        try:
            page = await service().list(user_id, limit=limit, cursor=params.get("cursor"), status=status)
        except (ValueError, TypeError, UnicodeDecodeError):
            raise ProblemError(422, "validation_failed", "Unknown cursor",
                               errors=[http.ProblemItem(message="not a cursor of this API", path="$.cursor")]) from None
        return _json(page)

    @get("/v1/generations/{generation_id:str}")
    async def get_generation(request: Request[Any, Any, Any], generation_id: PathStr) -> Response[bytes]:
        """openapi.yaml ``getGeneration``."""
        user_id = user(request)
        try:
            return _json(await service().get(user_id, generation_id))
        except NotFound as exc:
            raise not_found(exc) from None

    @post("/v1/generations/{generation_id:str}/cancel")
    async def cancel_generation(request: Request[Any, Any, Any], generation_id: PathStr) -> Response[bytes]:
        """openapi.yaml ``cancelGeneration``."""
        user_id = user(request)
        try:
            return _json(await service().cancel(user_id, generation_id))
        except NotFound as exc:
            raise not_found(exc) from None

    @get("/v1/outputs/{output_id:str}")
    async def get_output(request: Request[Any, Any, Any], output_id: PathStr) -> Response[bytes]:
        """openapi.yaml ``getOutput``: the owner's Bearer token or a valid signature."""
        svc = service()
        row = await svc.store.output(output_id) if len(output_id) <= 64 else None
        missing = ProblemError(404, "not_found", "No such output")
        if row is None:
            if bearer(request) is None and "sig" not in request.query_params:
                raise ProblemError(401, "unauthorized", "A user token or a signed URL is required",
                                   headers={"WWW-Authenticate": 'Bearer realm="livegate"'})
            raise missing
        params = request.query_params
        if "sig" in params:
            try:
                expires = int(params.get("exp", ""))
            except ValueError:
                expires = 0
            if not svc.outputs.signature_valid(row, expires, params["sig"]):
                raise ProblemError(401, "unauthorized", "The signed URL is invalid or expired")
        else:
            if bearer(request) is None:
                raise ProblemError(401, "unauthorized", "A user token or a signed URL is required",
                                   headers={"WWW-Authenticate": 'Bearer realm="livegate"'})
            try:
                owner = require_user(request, gw.verifier)
            except AuthError:
                raise ProblemError(401, "unauthorized", "Invalid token") from None
            if owner != row.user_id:
                raise missing
        try:
            data = svc.outputs.path_for(row.id).read_bytes()
        except OSError:
            raise missing from None
        headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600",
                   "X-Content-Type-Options": "nosniff"}
        if row.filename:
            headers["Content-Disposition"] = f'inline; filename="{row.filename.replace(chr(34), "")}"'
        range_header = request.headers.get("range")
        if range_header:
            span = parse_range(range_header, len(data))
            if span is None:
                raise ProblemError(416, "range_not_satisfiable", f"The output has {len(data)} bytes",
                                   headers={"Content-Range": f"bytes */{len(data)}"})
            start, end = span
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return Response(data[start:end + 1], status_code=206, media_type=row.media_type, headers=headers)
        return Response(data, media_type=row.media_type, headers=headers)

    return [list_tools, create_generation, list_generations, get_generation, cancel_generation, get_output]
