"""The connection state machine of asyncapi.yaml's ``/v1/ws`` channel (sans-I/O).

States and transitions: :mod:`livegate.protocol.state` (the table, and the one place a
state changes: :func:`~livegate.protocol.state.advance`).

The I/O layer feeds frames and the clock in and carries the effects out; it owns every
timer (``next_deadline`` tells it when to call :meth:`Session.on_timer`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from livegate.errors import AuthError, ContractError
from livegate.protocol import codec, messages
from livegate.protocol.auth import Claims, TokenVerifier
from livegate.protocol.codes import CLOSE_CODES, FATAL_CLOSE
from livegate.protocol.jsonlimits import DEFAULT_MAX_DEPTH, nesting_error
from livegate.protocol.state import State, advance


@dataclass(frozen=True, slots=True)
class Send:
    message: Any  # a generated ServerMessage struct


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Authenticate:
    """Subscribe the connection to ``claims.sub``'s stream, then call :meth:`Session.accept`."""

    claims: Claims
    resume: messages.StreamPosition | None
    request_id: str | None
    #: ``auth.textDeltas``: streamed text as deltas; else the deprecated ``partialText``.
    text_deltas: bool = False


@dataclass(frozen=True, slots=True)
class CancelGeneration:
    """Cancel ``generation_id`` of ``user_id`` (asyncapi.yaml ``cancel``); answer
    :meth:`Session.cancel_answered` or :meth:`Session.cancel_refused` with ``request_id``."""

    user_id: str
    generation_id: str
    request_id: str


Effect = Send | Close | Authenticate | CancelGeneration


def to_datetime(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=UTC)


@dataclass(frozen=True)
class SessionLimits:
    auth_timeout: float = 5.0
    token_expiring_lead: float = 60.0
    token_grace: float = 5.0
    max_frame_bytes: int = 64 * 1024
    rate_per_second: float = 20.0
    rate_burst: int = 40
    heartbeat_interval_ms: int = 25_000
    max_json_depth: int = DEFAULT_MAX_DEPTH


class Session:
    """One connection's protocol state. Pure: no I/O, no clock of its own."""

    def __init__(self, verifier: TokenVerifier, limits: SessionLimits, connection_id: str, now: float):
        self.verifier = verifier
        self.limits = limits
        self.connection_id = connection_id
        self.state = State.AWAITING_AUTH
        self.auth_deadline = now + limits.auth_timeout
        self.claims: Claims | None = None
        self._warned_for_exp: float | None = None
        self._tokens = float(limits.rate_burst)
        self._refilled_at = now
        self._violations = 0

    @property
    def user_id(self) -> str | None:
        return self.claims.sub if self.claims else None

    # -- inputs -------------------------------------------------------------------------

    def receive_text(self, data: str | bytes, now: float) -> list[Effect]:
        if self.state is State.CLOSED:
            return []
        if len(data) > self.limits.max_frame_bytes:
            return self._fatal("frame_too_large", f"Frames are limited to {self.limits.max_frame_bytes} bytes")
        too_deep = nesting_error(data, self.limits.max_json_depth)
        if too_deep is not None:
            # Checked before anything decodes the frame (request_id_of too): the decoders
            # recurse per level. Answered like any other frame that is not JSON we read.
            if self.state is State.AWAITING_AUTH:
                return self._fatal("not_authenticated", f"The first frame must be `auth` ({too_deep})")
            if not self._take_token(now):
                return self._rate_limited(None)
            return [Send(self._error("bad_json", too_deep))]
        if self.state is State.OPEN and not self._take_token(now):
            return self._rate_limited(codec.request_id_of(data))
        try:
            message = codec.decode_client(data)
        except ContractError as exc:
            rid = codec.request_id_of(data)
            if self.state is State.AWAITING_AUTH:
                return self._fatal("not_authenticated", f"The first frame must be `auth` ({exc.message})",
                                   request_id=rid, path=exc.path)
            return [Send(self._error(exc.code, exc.message, request_id=rid, path=exc.path))]
        return self.receive(message, now)

    def receive_binary(self, size: int, now: float) -> list[Effect]:
        if self.state is State.CLOSED:
            return []
        if size > self.limits.max_frame_bytes:
            return self._fatal("frame_too_large", f"Frames are limited to {self.limits.max_frame_bytes} bytes")
        if self.state is State.AWAITING_AUTH:
            return self._fatal("not_authenticated", "The first frame must be an `auth` text frame")
        if not self._take_token(now):
            return self._rate_limited(None)
        return [Send(self._error("binary_frame", "Only text frames carrying JSON are accepted"))]

    def receive(self, message: codec.ClientMessage, now: float) -> list[Effect]:
        match self.state, message:
            case State.AWAITING_AUTH, messages.Auth():
                return self._authenticate(message, now)
            case State.AWAITING_AUTH, _:
                return self._fatal("not_authenticated", "The first frame must be `auth`", request_id=_rid(message))
            case State.OPEN, messages.Ping():
                return [Send(messages.Pong(id=message.id, server_time=to_datetime(now)))]
            case State.OPEN, messages.Refresh():
                return self._refresh(message, now)
            case State.OPEN, messages.Cancel():
                assert self.claims is not None
                return [CancelGeneration(self.claims.sub, message.generation_id, message.id)]
            case State.OPEN, messages.Auth():
                return [Send(self._error("already_authenticated", "Already authenticated; use `refresh`",
                                         request_id=_rid(message)))]
        return []

    def admit(self, claims: Claims, resume: messages.StreamPosition | None, *,
              text_deltas: bool = False) -> list[Effect]:
        """A transport that authenticates with the request itself (asyncapi.yaml
        ``sseStream``: a ticket or a Bearer JWT checked before the stream starts) skips the
        ``auth`` frame: the same ``Authenticate`` effect, as if ``auth`` had carried
        ``claims``, ``resume`` and ``textDeltas``."""
        self.state = advance(self.state, State.AUTHENTICATING)
        self.claims = claims
        return [Authenticate(claims=claims, resume=resume, request_id=None, text_deltas=text_deltas)]

    def accept(self, *, epoch: str, offset: int, recovered: bool | None, request_id: str | None) -> list[Effect]:
        """The I/O layer subscribed the connection: send ``welcome`` and go live."""
        if self.state is not State.AUTHENTICATING or self.claims is None:
            raise RuntimeError(f"accept() in state {self.state}")
        self.state = advance(self.state, State.OPEN)
        welcome = messages.Welcome(
            id=_unset(request_id),
            connection_id=self.connection_id,
            user_id=self.claims.sub,
            expires_at=to_datetime(self.claims.exp),
            heartbeat_interval_ms=self.limits.heartbeat_interval_ms,
            epoch=epoch,
            offset=offset,
            recovered=_unset(recovered),
        )
        return [Send(welcome)]

    def cancel_answered(self, request_id: str, generation_id: str, status: str) -> list[Effect]:
        """The I/O layer carried out a ``cancel``: its ``cancelResult``."""
        if self.state is not State.OPEN:
            return []
        return [Send(messages.CancelResult(id=request_id, generation_id=generation_id, status=status))]  # type: ignore[arg-type]

    def cancel_refused(self, request_id: str, code: str, message: str) -> list[Effect]:
        """A ``cancel`` that could not be carried out (``not_found``, ``illegal_transition``,
        ``database_unavailable``, ``internal_error``): a non-fatal ``error``."""
        if self.state is not State.OPEN:
            return []
        return [Send(self._error(code, message, request_id=request_id))]

    def fail(self, code: str, message: str) -> list[Effect]:
        """A server-side condition ends the connection (slow consumer, shutdown, ...)."""
        return self._fatal(code, message)

    # -- timers -------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        if self.state is State.AWAITING_AUTH:
            return self.auth_deadline
        if self.state is State.OPEN and self.claims is not None:
            exp = self.claims.exp
            warn_at = exp - self.limits.token_expiring_lead
            if self._warned_for_exp != exp:
                return warn_at
            return exp + self.limits.token_grace
        return None

    def on_timer(self, now: float) -> list[Effect]:
        if self.state is State.AWAITING_AUTH and now >= self.auth_deadline:
            return self._fatal("auth_timeout", f"No `auth` within {self.limits.auth_timeout:g} s")
        if self.state is not State.OPEN or self.claims is None:
            return []
        exp = self.claims.exp
        if now >= exp + self.limits.token_grace:
            return self._fatal("token_expired", "The token expired and was not refreshed")
        if self._warned_for_exp != exp and now >= exp - self.limits.token_expiring_lead:
            self._warned_for_exp = exp
            return [Send(messages.TokenExpiring(expires_at=to_datetime(exp), seconds_left=max(0.0, exp - now)))]
        return []

    # -- helpers ------------------------------------------------------------------------

    def _authenticate(self, message: messages.Auth, now: float) -> list[Effect]:
        try:
            claims = self.verifier.verify(message.token, now)
        except AuthError as exc:
            return self._fatal(exc.code, exc.message, request_id=_rid(message))
        self.claims = claims
        self.state = advance(self.state, State.AUTHENTICATING)
        resume = message.resume if isinstance(message.resume, messages.StreamPosition) else None
        return [Authenticate(claims=claims, resume=resume, request_id=_rid(message),
                             text_deltas=message.text_deltas is True)]

    def _refresh(self, message: messages.Refresh, now: float) -> list[Effect]:
        assert self.claims is not None
        try:
            claims = self.verifier.verify(message.token, now)
        except AuthError as exc:
            return self._fatal(exc.code, f"Refresh refused: {exc.message}", request_id=_rid(message))
        if claims.sub != self.claims.sub:
            return self._fatal("token_subject_mismatch", "The new token is for another user",
                               request_id=_rid(message))
        self.claims = claims
        return [Send(messages.Refreshed(id=message.id, expires_at=to_datetime(claims.exp)))]

    def _take_token(self, now: float) -> bool:
        elapsed = max(0.0, now - self._refilled_at)
        self._refilled_at = now
        self._tokens = min(float(self.limits.rate_burst), self._tokens + elapsed * self.limits.rate_per_second)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self._violations = 0
            return True
        return False

    def _rate_limited(self, request_id: str | None) -> list[Effect]:
        self._violations += 1
        if self._violations > self.limits.rate_burst:
            self.state = advance(self.state, State.CLOSED)
            return [
                Send(self._error("rate_limited", "Sustained message rate over the limit", request_id=request_id,
                                 fatal=True)),
                Close(CLOSE_CODES["rate_limited"], "rate limited"),
            ]
        return [Send(self._error("rate_limited", "Too many messages; this one was dropped", request_id=request_id))]

    def _error(self, code: str, message: str, *, request_id: str | None = None, path: str | None = None,
               fatal: bool = False) -> messages.Error:
        return messages.Error(code=code, message=message, id=_unset(request_id), path=_unset(path),  # type: ignore[arg-type]
                              fatal=fatal)

    def _fatal(self, code: str, message: str, *, request_id: str | None = None, path: str | None = None) -> list[Effect]:
        self.state = advance(self.state, State.CLOSED)
        close_code = FATAL_CLOSE[code]
        return [
            Send(self._error(code, message, request_id=request_id, path=path, fatal=True)),
            Close(close_code, code),
        ]


def _rid(message: Any) -> str | None:
    rid = getattr(message, "id", None)
    return rid if isinstance(rid, str) else None


def _unset(value: Any) -> Any:
    return msgspec.UNSET if value is None else value
