"""Operations, publishing and dev-token routes of openapi.yaml."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from importlib import resources
from typing import Any, cast

import msgspec
from litestar import Request, Response, asgi, get, post
from litestar.handlers import ASGIRouteHandler, HTTPRouteHandler
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, HTTPScope, Receive, Send
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from livegate.app.auth import check_service
from livegate.app.gateway import Gateway
from livegate.app.problems import ProblemError, item_from_validation
from livegate.errors import BusUnavailable, EventTooLarge
from livegate.protocol import http
from livegate.protocol.auth import mint_token
from livegate.protocol.jsonlimits import DEFAULT_MAX_DEPTH, nesting_error

#: The largest request body any route accepts (Litestar's ``request_max_body_size``, and
#: :func:`read_body` for the raw ASGI publish route).
MAX_BODY_BYTES = 16 * 1024 * 1024

_publish_decoder = msgspec.json.Decoder(dict[str, Any])
_publish_request_decoder = msgspec.json.Decoder(http.PublishRequest)
_dev_token_decoder = msgspec.json.Decoder(http.DevTokenRequest)


def _spec(name: str) -> bytes:
    return resources.files("livegate.specs").joinpath(name).read_bytes()


def _json(body: Any, status: int = 200) -> Response[bytes]:
    return Response(msgspec.json.encode(body), status_code=status, media_type="application/json")


def integral_floats_as_ints(value: Any) -> Any:
    """JSON Schema counts ``600.0`` as an ``integer``; msgspec's strict decoders do not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [integral_floats_as_ints(v) for v in value]
    return value


def convert(value: Any, type_: Any) -> Any:
    """``msgspec.convert``, accepting integral floats where the schema says ``integer``."""
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError:
        return msgspec.convert(integral_floats_as_ints(value), type_)


def check_readable(data: bytes, max_depth: int) -> None:
    """400 ``bad_request`` for a body no decoder should recurse into: nested deeper than
    ``LIVEGATE_MAX_JSON_DEPTH`` (counted from the body's root) or not UTF-8 (openapi.yaml,
    ``BadRequest``). Runs before any decoding."""
    too_deep = nesting_error(data, max_depth)
    if too_deep is not None:
        raise ProblemError(400, "bad_request", too_deep)
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProblemError(400, "bad_request", f"The body is not UTF-8 (byte {exc.start})") from None


def decode_body(data: bytes, decoder: msgspec.json.Decoder[Any], max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    check_readable(data, max_depth)
    try:
        try:
            return decoder.decode(data)
        except msgspec.ValidationError:
            return convert(msgspec.json.decode(data), decoder.type)
    except msgspec.ValidationError as exc:
        raise ProblemError(422, "validation_failed", "The body does not match the schema",
                           errors=[item_from_validation(exc)]) from None
    except msgspec.DecodeError:
        raise ProblemError(400, "bad_request", "The body is not valid JSON") from None


def header(scope: HTTPScope, name: bytes) -> str:
    """The first value of header ``name`` (lower case) of an ASGI scope, or ``""``."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


async def read_body(scope: HTTPScope, receive: Receive, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, or a 413 problem past ``limit`` (what Litestar's ``request_max_body_size``
    answers for the other routes)."""
    too_large = ProblemError(413, "payload_too_large", f"The body is larger than {limit} bytes")
    declared = header(scope, b"content-length")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ProblemError(400, "bad_request", "The client went away before sending the whole body")
        chunk = cast("bytes", message.get("body", b""))
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_publish_request(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> list[http.PublishItem]:
    """Validate the whole batch first; report *every* bad item (nothing half-applied)."""
    check_readable(data, max_depth)
    try:  # the common case in one typed decode; the slow path below is for reporting errors
        return list(_publish_request_decoder.decode(data).events)
    except (msgspec.ValidationError, msgspec.DecodeError):
        pass
    raw = decode_body(data, _publish_decoder, max_depth)
    events = raw.get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= 1000:
        raise ProblemError(422, "validation_failed", "`events` must be an array of 1 to 1000 items",
                           errors=[http.ProblemItem(message="Expected an array of 1..1000 items", path="$.events")])
    items: list[http.PublishItem] = []
    errors: list[http.ProblemItem] = []
    for index, item in enumerate(events):
        try:
            items.append(convert(item, http.PublishItem))
        except msgspec.ValidationError as exc:
            errors.append(item_from_validation(exc, prefix=f"$.events[{index}]", index=index))
    if errors:
        raise ProblemError(422, "invalid_event", f"{len(errors)} of {len(events)} events are invalid; "
                           "nothing was published", errors=errors)
    return items


def core_routes(gw: Gateway) -> list[HTTPRouteHandler | ASGIRouteHandler]:
    @get("/healthz", sync_to_thread=False)
    def healthz() -> Response[bytes]:
        """openapi.yaml ``getHealth``."""
        return _json(http.Health(status="ok"))

    @get("/readyz")
    async def readyz() -> Response[bytes]:
        """openapi.yaml ``getReadiness``."""
        checks = await gw.readiness()
        ok = all(checks.values())
        return _json(http.Health(status="ok" if ok else "unavailable", checks=checks), 200 if ok else 503)

    @get("/metrics", sync_to_thread=False)
    def metrics() -> Response[bytes]:
        """openapi.yaml ``getMetrics``."""
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST.split(";")[0])

    @get("/asyncapi.yaml", sync_to_thread=False)
    def asyncapi_spec() -> Response[bytes]:
        """openapi.yaml ``getAsyncApiSpec``."""
        return Response(_spec("asyncapi.yaml"), media_type="application/yaml")

    @get("/openapi.yaml", sync_to_thread=False)
    def openapi_spec() -> Response[bytes]:
        """openapi.yaml ``getOpenApiSpec``."""
        return Response(_spec("openapi.yaml"), media_type="application/yaml")

    @asgi("/v1/events", copy_scope=False)
    async def publish_events(scope: HTTPScope, receive: Receive, send: Send) -> None:
        """openapi.yaml ``publishEvents``.

        A Litestar ``@asgi`` handler, not ``@post``: this is the fan-out's entry, and Litestar's
        per-request layers (signature model, kwargs, response handler) cost ~50 us of its
        ~140 us per request (bench/README.md). Errors still raise :class:`ProblemError` into
        the app's exception handlers, so every answer is the same problem body as elsewhere."""
        if scope["method"] != "POST":
            raise ProblemError(405, "method_not_allowed", f"Method {scope['method']} not allowed; use POST",
                               headers={"Allow": "POST"})
        check_service(header(scope, b"authorization"), gw.config.service_token)
        items = parse_publish_request(await read_body(scope, receive), gw.config.max_json_depth)
        try:
            positions = await gw.publisher.publish([(item.user_id, item.event) for item in items])
        except BusUnavailable as exc:
            done = [http.PublishResult(user_id=items[i].user_id, epoch=p.epoch, offset=p.offset)
                    for i, p in enumerate(exc.published)]
            raise ProblemError(503, "bus_unavailable", f"The event bus is unavailable: {exc.message}. "
                               f"{len(done)} of {len(items)} events were published (see results).",
                               results=done, headers={"Retry-After": "1"}) from None
        except EventTooLarge as exc:
            raise ProblemError(413, "payload_too_large", exc.message, errors=[
                http.ProblemItem(message=f"The event is {size} bytes encoded; the limit is {exc.limit}",
                                 path=f"$.events[{index}].event", index=index)
                for index, size in sorted(exc.sizes.items())]) from None
        results = [http.PublishResult(user_id=item.user_id, epoch=p.epoch, offset=p.offset)
                   for item, p in zip(items, positions, strict=True)]
        payload = msgspec.json.encode(http.PublishResponse(results=results))
        start: HTTPResponseStartEvent = {"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]}
        body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": payload, "more_body": False}
        await send(start)
        await send(body)

    @post("/v1/dev/token")
    async def dev_token(request: Request[Any, Any, Any]) -> Response[bytes]:
        """openapi.yaml ``mintDevToken`` (dev mode only)."""
        if not gw.config.dev:
            raise ProblemError(404, "dev_mode_disabled", "Dev tokens exist only with LIVEGATE_DEV=1")
        body = decode_body(await request.body(), _dev_token_decoder, gw.config.max_json_depth)
        ttl = body.ttl_seconds if isinstance(body.ttl_seconds, int) else 600
        now = time.time()
        token = mint_token(gw.config.jwt_secret, body.user_id, ttl_seconds=ttl, issuer=gw.config.jwt_issuer,
                           audience=gw.config.jwt_audience, now=now)
        return _json(http.DevTokenResponse(token=token, expires_at=datetime.fromtimestamp(now + ttl, UTC)))

    return [healthz, readyz, metrics, asyncapi_spec, openapi_spec, publish_events, dev_token]
