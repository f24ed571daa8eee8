"""HTTP credentials: user JWTs (Bearer) and the service token, checked at the route edge."""

from __future__ import annotations

import hmac
import time
from typing import Any

from litestar import Request

from livegate.app.problems import ProblemError
from livegate.errors import AuthError
from livegate.protocol.auth import Claims, TokenVerifier


def bearer(request: Request[Any, Any, Any]) -> str | None:
    return bearer_token(request.headers.get("authorization", ""))


def bearer_token(header: str) -> str | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def require_user(request: Request[Any, Any, Any], verifier: TokenVerifier) -> str:
    """The user id (JWT ``sub``) of a request carrying a valid user token, or 401."""
    return require_claims(request.headers.get("authorization", ""), verifier).sub


def require_claims(authorization: str, verifier: TokenVerifier) -> Claims:
    """The claims of the user token in an ``Authorization`` header value, or 401."""
    token = bearer_token(authorization)
    if token is None:
        raise ProblemError(401, "unauthorized", "A user token is required (Authorization: Bearer <JWT>)",
                           headers={"WWW-Authenticate": 'Bearer realm="livegate"'})
    try:
        return verifier.verify(token, time.time())
    except AuthError as exc:
        raise ProblemError(401, "unauthorized", f"{exc.code}: {exc.message}",
                           headers={"WWW-Authenticate": 'Bearer realm="livegate", error="invalid_token"'}) from None


def check_service(authorization: str, service_token: str | None) -> None:
    token = bearer_token(authorization)
    if not service_token or token is None or not hmac.compare_digest(token.encode(), service_token.encode()):
        raise ProblemError(401, "unauthorized", "The service credential is required (LIVEGATE_SERVICE_TOKEN)",
                           headers={"WWW-Authenticate": 'Bearer realm="livegate-service"'})
