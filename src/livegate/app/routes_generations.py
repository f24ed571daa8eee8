"""Tools, generations and outputs routes of openapi.yaml."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable
from typing import Annotated, Any, Literal
from urllib.parse import quote

import msgspec
from litestar import Request, Response, get, post, route
from litestar.handlers import HTTPRouteHandler
from litestar.params import Parameter
from litestar.response import Stream

from livegate.app.auth import bearer, require_user
from livegate.app.gateway import Gateway
from livegate.app.problems import ProblemError
from livegate.app.routes_core import _json, decode_body
from livegate.errors import NotFound, StoreUnavailable
from livegate.protocol import http
from livegate.service.generations import GenerationService, InputsInvalid
from livegate.service.outputs import OUTPUT_ID
from livegate.service.webhooks import WebhookRefused, WebhooksDisabled

_create_decoder = msgspec.json.Decoder(http.CreateGenerationRequest)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$", re.ASCII)
_INTEGER = re.compile(r"-?\d+", re.ASCII)
PathStr = Annotated[str, Parameter()]
STATUSES = ("queued", "running", "completed", "failed", "cancelled")
#: Media types served ``inline``: passive ones a browser renders without running anything.
#: Everything else (HTML, SVG, XML, JavaScript, PDF, unknown types) is an ``attachment``, so
#: an upstream's hostile output cannot run script on the gateway's origin (issue 14).
PASSIVE_MEDIA_TYPES = frozenset({
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif",
    "audio/mpeg", "audio/wav", "audio/x-wav", "audio/ogg", "audio/webm", "audio/flac", "audio/aac", "audio/mp4",
    "video/mp4", "video/webm", "video/ogg",
    "text/plain", "application/json",
})


def is_passive(media_type: str) -> bool:
    return media_type.split(";", 1)[0].strip().lower() in PASSIVE_MEDIA_TYPES


def parse_range(header: str, size: int) -> tuple[int, int] | Literal["ignore"] | None:
    """One ``bytes=a-b`` range as inclusive ``(start, end)``; ``None``: unsatisfiable (416);
    ``"ignore"``: not a byte range we understand, so RFC 9110 (14.2) has us ignore it and
    send the whole output. Several ranges are answered with the first (allowed by RFC 9110)."""
    match = _RANGE.match(header.split(",")[0].strip())
    if not match or (not match.group(1) and not match.group(2)):
        return "ignore"
    if not match.group(1):  # suffix: the last N bytes
        length = int(match.group(2))
        if length == 0 or size == 0:
            return None
        return max(0, size - length), size - 1
    start = int(match.group(1))
    if match.group(2) and int(match.group(2)) < start:
        return "ignore"  # syntactically invalid (RFC 9110 14.1.1): ignored, not refused
    if start >= size:
        return None
    end = int(match.group(2)) if match.group(2) else size - 1
    return start, min(end, size - 1)


def content_disposition(filename: str, disposition: str = "inline") -> str:
    """``inline`` (or ``attachment``) with an ASCII ``filename`` and, when needed, the exact
    UTF-8 ``filename*`` (RFC 6266): upstream file names may hold any character, headers may not."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename) or "output"
    value = f'{disposition}; filename="{ascii_name}"'
    if ascii_name != filename:
        value += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return value


async def _prefixed(first: bytes, rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    if first:
        yield first
    async for piece in rest:
        yield piece


def _query_problems(params: Any, headers: Any) -> list[http.ProblemItem]:
    """openapi.yaml ``getOutput`` parameters: ``exp`` an integer, ``sig`` and ``Range`` at
    most 200 characters."""
    problems = []
    exp = params.get("exp")
    if exp is not None and not _INTEGER.fullmatch(exp):
        problems.append(http.ProblemItem(message="exp must be an integer (Unix time)", path="$.query.exp"))
    if len(params.get("sig") or "") > 200:
        problems.append(http.ProblemItem(message="sig is longer than 200 characters", path="$.query.sig"))
    if len(headers.get("range") or "") > 200:
        problems.append(http.ProblemItem(message="Range is longer than 200 characters", path="$.headers.Range"))
    return problems


def _opt(value: Any) -> Any:
    return None if value is msgspec.UNSET else value


def generation_routes(gw: Gateway) -> list[HTTPRouteHandler]:
    def service() -> GenerationService:
        if gw.generations is None:
            raise ProblemError(503, "internal_error", "The generation service is starting")
        return gw.generations

    def user(request: Request[Any, Any, Any]) -> str:
        return require_user(request, gw.verifier)

    def unavailable(exc: StoreUnavailable) -> ProblemError:
        return ProblemError(503, "database_unavailable", "The database is unavailable; retry shortly",
                            headers={"Retry-After": "1"})

    def not_found(exc: NotFound) -> ProblemError:
        return ProblemError(404, exc.code if exc.code == "unknown_tool" else "not_found", exc.message)

    async def owned(answer: Awaitable[Any]) -> Response[bytes]:
        """The answer about one generation of the caller (``NotFound``: 404)."""
        try:
            return _json(await answer)
        except NotFound as exc:
            raise not_found(exc) from None

    @get("/v1/tools")
    async def list_tools(request: Request[Any, Any, Any]) -> Response[bytes]:
        """openapi.yaml ``listTools``."""
        user(request)
        return _json(http.ToolList(tools=service().tool_infos()))

    async def create_generation(request: Request[Any, Any, Any]) -> Response[bytes]:
        """openapi.yaml ``createGeneration``."""
        user_id = user(request)
        body = decode_body(await request.body(), _create_decoder, gw.config.max_json_depth)
        try:
            webhook_url = body.webhook_url if isinstance(body.webhook_url, str) else None
            webhook_events = body.webhook_events if isinstance(body.webhook_events, list) else None
            if webhook_events is not None and len(set(webhook_events)) != len(webhook_events):
                raise ProblemError(422, "validation_failed", "The body does not match the schema", errors=[
                    http.ProblemItem(message="webhookEvents has repeated statuses", path="$.webhookEvents")])
            generation = await service().create(user_id, body.tool_id, body.inputs, webhook_url=webhook_url,
                                                webhook_events=webhook_events,
                                                cancel_after=_opt(body.cancel_after_seconds))
        except NotFound as exc:
            raise not_found(exc) from None
        except (WebhooksDisabled, WebhookRefused) as exc:
            raise ProblemError(422, exc.code, exc.message, errors=[
                http.ProblemItem(message=exc.message, path="$.webhookUrl")]) from None
        except InputsInvalid as exc:
            raise ProblemError(422, "validation_failed", exc.message, errors=exc.errors) from None
        return _json(generation, 202)

    async def list_generations(request: Request[Any, Any, Any]) -> Response[bytes]:
        """openapi.yaml ``listGenerations``."""
        user_id = user(request)
        params = request.query_params
        problems = []
        raw_limit = params.get("limit", "20")
        limit = int(raw_limit) if _INTEGER.fullmatch(raw_limit) else 0
        if not 1 <= limit <= 100:
            problems.append(http.ProblemItem(message="limit must be an integer from 1 to 100", path="$.query.limit"))
        status = params.get("status")
        if status is not None and status not in STATUSES:
            problems.append(http.ProblemItem(message=f"status must be one of {', '.join(STATUSES)}",
                                             path="$.query.status"))
        cursor = params.get("cursor")
        if cursor is not None and len(cursor) > 200:
            problems.append(http.ProblemItem(message="cursor is longer than 200 characters", path="$.query.cursor"))
        if problems:
            raise ProblemError(422, "validation_failed", "Invalid query parameters", errors=problems)
        try:
            page = await service().list(user_id, limit=limit, cursor=cursor, status=status)
        except (ValueError, TypeError, UnicodeDecodeError):
            raise ProblemError(422, "validation_failed", "Unknown cursor", errors=[
                http.ProblemItem(message="not a cursor of this API", path="$.query.cursor")]) from None
        return _json(page)

    # One handler for both methods: Litestar's automatic OPTIONS answer (``Allow``) lists
    # only the methods of the first handler registered on a path.
    @route("/v1/generations", http_method=["GET", "POST"])
    async def generations(request: Request[Any, Any, Any]) -> Response[bytes]:
        if request.method == "POST":
            return await create_generation(request)
        return await list_generations(request)

    @get("/v1/generations/{generation_id:str}")
    async def get_generation(request: Request[Any, Any, Any], generation_id: PathStr) -> Response[bytes]:
        """openapi.yaml ``getGeneration``."""
        return await owned(service().get(user(request), generation_id))

    @get("/v1/generations/{generation_id:str}/webhooks")
    async def list_generation_webhooks(request: Request[Any, Any, Any], generation_id: PathStr) -> Response[bytes]:
        """openapi.yaml ``listGenerationWebhooks``."""
        return await owned(service().webhook_deliveries(user(request), generation_id))

    @post("/v1/generations/{generation_id:str}/cancel")
    async def cancel_generation(request: Request[Any, Any, Any], generation_id: PathStr) -> Response[bytes]:
        """openapi.yaml ``cancelGeneration``."""
        return await owned(service().cancel(user(request), generation_id))

    @get("/v1/outputs/{output_id:str}")
    async def get_output(request: Request[Any, Any, Any], output_id: PathStr) -> Response[Any]:
        """openapi.yaml ``getOutput``: the owner's Bearer token or a valid signature.

        No credential, a bad token or a bad/expired signature: 401. Another user's output
        is the same 404 as a missing one, so ids of others' outputs cannot be probed."""
        svc = service()
        params = request.query_params
        problems = _query_problems(params, request.headers)
        if problems:
            raise ProblemError(422, "validation_failed", "Invalid parameters", errors=problems)
        signed = "sig" in params
        if not signed and bearer(request) is None:
            raise ProblemError(401, "unauthorized", "A user token or a signed URL is required",
                               headers={"WWW-Authenticate": 'Bearer realm="livegate"'})
        row = await svc.store.output(output_id) if OUTPUT_ID.fullmatch(output_id) else None
        missing = ProblemError(404, "not_found", "No such output")
        if signed:
            expires = int(params.get("exp") or 0)
            if row is None or not svc.outputs.signature_valid(row, expires, params["sig"]):
                raise ProblemError(401, "unauthorized", "The signed URL is invalid or expired")
        else:
            owner = require_user(request, gw.verifier)  # 401 for a bad token
            if row is None or owner != row.user_id:
                raise missing
        assert row is not None
        size = row.size_bytes
        # the stored media type as is (Litestar would append a second charset to text/*)
        headers = {"content-type": row.media_type, "Accept-Ranges": "bytes",
                   "Cache-Control": "private, max-age=3600", "X-Content-Type-Options": "nosniff"}
        if not is_passive(row.media_type):  # active content (HTML, SVG, ...): download, never render
            headers["Content-Disposition"] = content_disposition(row.filename or row.id, "attachment")
        elif row.filename:
            headers["Content-Disposition"] = content_disposition(row.filename)
        span: tuple[int, int] | str | None = "ignore"
        range_header = request.headers.get("range")
        if range_header:
            span = parse_range(range_header, size)
            if span is None:
                raise ProblemError(416, "range_not_satisfiable", f"The output has {size} bytes",
                                   headers={"Content-Range": f"bytes */{size}"})
        start, end = span if isinstance(span, tuple) else (0, size - 1)
        # Streamed from the store chunk by chunk (never the whole output in memory). The
        # first piece is read before answering, so a database outage is a clean 503, not
        # a 200 cut short.
        pieces = svc.store.read_output(row.id, start, end + 1)
        try:
            first = await anext(pieces, b"")
        except StoreUnavailable as exc:
            raise unavailable(exc) from None
        headers["Content-Length"] = str(end - start + 1)
        status = 200
        if isinstance(span, tuple):
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            status = 206
        return Stream(_prefixed(first, pieces), status_code=status, media_type=row.media_type, headers=headers)

    return [list_tools, generations, get_generation, list_generation_webhooks, cancel_generation, get_output]
