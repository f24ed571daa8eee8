"""Shared checks of the hardening tests (issue 14): every answer to hostile input is one the
specs document, and nothing is logged at error level for it."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from typing import Any

from livegate.testing.spec_validation import assert_valid_message, asyncapi_document, schema_errors

DOCUMENTED_CLOSE_CODES = frozenset(c["code"] for c in asyncapi_document()["channels"]["userStream"]["x-close-codes"])
#: What the ``error`` frame of a fatal code is followed by (``x-fatal``).
FATAL_CLOSE = dict(asyncapi_document()["components"]["schemas"]["ErrorCode"]["x-fatal"])


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def no_error_logs() -> Iterator[list[logging.LogRecord]]:
    """Fail if anything (livegate's loggers, Litestar's, uvicorn's) logs at error level inside."""
    handler = _Collect()
    loggers = [logging.getLogger(name) for name in ("", "livegate", "litestar", "uvicorn", "uvicorn.error")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
    shown = [f"{r.name}: {r.getMessage()}" for r in handler.records]
    assert not shown, f"error-level log lines for a client's bad input: {shown[:5]}"


def assert_problem(status: int, headers: Any, content: bytes, allowed: set[int]) -> dict[str, Any]:
    """An RFC 9457 problem body of openapi.yaml (``Problem``) with a documented status."""
    assert status in allowed, (status, content[:300])
    assert headers["content-type"] == "application/problem+json", headers.get("content-type")
    body: dict[str, Any] = json.loads(content)
    errors = schema_errors(body, "Problem")
    assert not errors, (errors, body)
    assert body["status"] == status
    return body


def assert_error_then_close(frames: list[Any], close_code: int | None) -> dict[str, Any]:
    """The last frame is a valid ``error``; a fatal one is followed by its documented close code."""
    assert frames, "no error frame before the close"
    error = assert_valid_message(frames[-1])
    assert error["type"] == "error", error
    if close_code is not None:
        assert close_code in DOCUMENTED_CLOSE_CODES, close_code
        assert error["fatal"] is True and FATAL_CLOSE[error["code"]] == close_code, (error, close_code)
    return error


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hs256_token(header: Any, claims: Any, secret: str, *, raw_header: bytes | None = None,
                raw_claims: bytes | None = None) -> str:
    """A token signed with ``secret`` whose header and claims are whatever JSON (or bytes) we
    like: PyJWT's own encoder refuses most hostile headers, so it cannot make them."""
    head = b64url(raw_header if raw_header is not None else json.dumps(header).encode())
    body = b64url(raw_claims if raw_claims is not None else json.dumps(claims).encode())
    signing_input = f"{head}.{body}".encode()
    return f"{head}.{body}.{b64url(hmac.new(secret.encode(), signing_input, hashlib.sha256).digest())}"
