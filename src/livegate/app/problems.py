"""RFC 9457 problem responses (openapi.yaml ``Problem``) and the exception handlers that
turn every error — ours and Litestar's — into one."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from livegate.errors import LivegateError
from livegate.protocol import http

log = logging.getLogger("livegate.http")
PROBLEM_MEDIA_TYPE = "application/problem+json"
_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    409: "illegal_transition",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "validation_failed",
    503: "bus_unavailable",
}
_TITLES = {
    "bad_request": "Bad request",
    "unauthorized": "Unauthorized",
    "not_found": "Not found",
    "method_not_allowed": "Method not allowed",
    "validation_failed": "Validation failed",
    "invalid_event": "Invalid event",
    "unknown_tool": "Unknown tool",
    "illegal_transition": "Illegal transition",
    "payload_too_large": "Payload too large",
    "unsupported_media_type": "Unsupported media type",
    "range_not_satisfiable": "Range not satisfiable",
    "dev_mode_disabled": "Dev mode disabled",
    "bus_unavailable": "Event bus unavailable",
    "database_unavailable": "Database unavailable",
    "too_many_queued": "Too many queued generations",
    "ticket_invalid": "Invalid ticket",
    "internal_error": "Internal server error",
}


class ProblemError(Exception):
    """Raise from a route to answer with a problem."""

    def __init__(self, status: int, code: str, detail: str | None = None, *,
                 errors: list[http.ProblemItem] | None = None, results: list[http.PublishResult] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or code)
        self.status, self.code, self.detail = status, code, detail
        self.errors, self.results, self.headers = errors, results, headers


def problem_response(status: int, code: str, detail: str | None = None, *, errors: Any = None,
                     results: Any = None, instance: str | None = None,
                     headers: dict[str, str] | None = None) -> Response[bytes]:
    body = http.Problem(
        type="about:blank",
        title=_TITLES.get(code, "Error"),
        status=status,
        code=code,  # type: ignore[arg-type]
        detail=detail if detail is not None else msgspec.UNSET,
        instance=instance if instance is not None else msgspec.UNSET,
        errors=errors if errors else msgspec.UNSET,
        results=results if results else msgspec.UNSET,
    )
    return Response(msgspec.json.encode(body), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def item_from_validation(exc: msgspec.ValidationError, prefix: str = "$", index: int | None = None) -> http.ProblemItem:
    text = str(exc)
    message, found, path = text.rpartition(" - at `")
    if found:
        path = prefix + path.rstrip("`")[1:]
    else:  # e.g. "Object missing required field `toolId`": the object itself is at fault
        message, path = text, prefix
    return http.ProblemItem(message=message, path=path, index=index if index is not None else msgspec.UNSET)


def _handle_problem(request: Request[Any, Any, Any], exc: ProblemError) -> Response[bytes]:
    return problem_response(exc.status, exc.code, exc.detail, errors=exc.errors, results=exc.results,
                            instance=request.url.path, headers=exc.headers)


def _handle_http(request: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    code = _STATUS_CODES.get(status, "internal_error" if status >= 500 else "bad_request")
    errors = None
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list):
        errors = [http.ProblemItem(message=str(e.get("message", e)), path="$." + str(e.get("key", "")).strip(".")
                                   if isinstance(e, dict) and e.get("key") else "$") for e in exc.extra]
    return problem_response(status, code, str(exc.detail), errors=errors, instance=request.url.path,
                            headers=getattr(exc, "headers", None))


def _handle_livegate(request: Request[Any, Any, Any], exc: LivegateError) -> Response[bytes]:
    status = {"not_found": 404, "illegal_transition": 409, "bus_unavailable": 503,
              "database_unavailable": 503, "too_many_queued": 429}.get(exc.code, 500)
    code = exc.code if exc.code in _TITLES else "internal_error"
    # a store outage is transient (the pool reconnects by itself): say when to retry
    headers = {"Retry-After": "1"} if code == "database_unavailable" else None
    detail = "The database is unavailable; retry shortly" if code == "database_unavailable" else exc.message
    return problem_response(status, code, detail, instance=request.url.path, headers=headers)


def _handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem_response(500, "internal_error", "Unexpected server error", instance=request.url.path)


EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    ProblemError: _handle_problem,
    HTTPException: _handle_http,
    LivegateError: _handle_livegate,
    Exception: _handle_unexpected,
}
