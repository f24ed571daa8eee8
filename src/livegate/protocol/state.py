"""The connection states of asyncapi.yaml's ``/v1/ws`` channel and their transition table.

Rules:

* :data:`TRANSITIONS` is the table; every state change of
  :class:`~livegate.protocol.session.Session` goes through :func:`advance`, which refuses
  (raises :class:`IllegalTransition`, leaving the state unchanged) a change the table does
  not list.
* Messages that a state does not accept are answered per the contract (an ``error``) and
  leave the state unchanged unless the answer is fatal: those rows go to ``CLOSED``.
* The diagram in docs/contract.md ("Connection states") is generated from this table by
  ``livegate contract generate`` (:func:`mermaid`); ``contract check`` fails on drift.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    AWAITING_AUTH = "awaiting_auth"
    AUTHENTICATING = "authenticating"
    OPEN = "open"
    CLOSED = "closed"


class IllegalTransition(RuntimeError):
    """A state change the table does not allow (a bug in the caller, not the peer)."""


@dataclass(frozen=True, slots=True)
class Transition:
    sources: tuple[State, ...]
    trigger: str
    target: State
    effects: str


_A, _U, _O, _C = State.AWAITING_AUTH, State.AUTHENTICATING, State.OPEN, State.CLOSED
_LIVE = (_A, _U, _O)

TRANSITIONS: tuple[Transition, ...] = (
    Transition((_A,), "auth (valid token)", _U, "Authenticate(claims, resume)"),
    Transition((_A,), "auth (refused token)", _C, "error(token_*) + Close(4401/4402)"),
    Transition((_A,), "anything else", _C, "error(not_authenticated) + Close(4400)"),
    Transition((_A,), "admit (SSE: credential checked with the request)", _U, "Authenticate(claims, resume)"),
    Transition((_A,), "timer past auth timeout", _C, "error(auth_timeout) + Close(4005)"),
    Transition((_U,), "accept(position)", _O, "welcome"),
    Transition((_O,), "ping", _O, "pong"),
    Transition((_O,), "refresh (same sub)", _O, "refreshed"),
    Transition((_O,), "refresh (other sub)", _C, "error(token_subject_mismatch) + Close(4401)"),
    Transition((_O,), "refresh (refused)", _C, "error(token_*) + Close(4401/4402)"),
    Transition((_O,), "auth", _O, "error(already_authenticated)"),
    Transition((_O,), "bad frame", _O, "error(bad_json|invalid_message|unknown_type|binary_frame)"),
    Transition((_O,), "timer: expiry - lead", _O, "tokenExpiring (once per token)"),
    Transition((_O,), "timer: expiry + grace", _C, "error(token_expired) + Close(4402)"),
    Transition((_O,), "rate exceeded", _O, "error(rate_limited)"),
    Transition((_O,), "rate exceeded, sustained", _C, "error(rate_limited) + Close(4004)"),
    Transition(_LIVE, "frame over the limit", _C, "error(frame_too_large) + Close(4400)"),
    Transition(_LIVE, "server-side failure", _C,
               "error(slow_consumer|server_restart|unavailable|origin_not_allowed|too_many_connections) + Close"),
)

ALLOWED: frozenset[tuple[State, State]] = frozenset(
    (source, t.target) for t in TRANSITIONS for source in t.sources
)


def advance(current: State, target: State) -> State:
    """``target`` if the table allows ``current -> target``, else raise."""
    if (current, target) not in ALLOWED:
        raise IllegalTransition(f"{current.name} -> {target.name} is not in the transition table")
    return target


def mermaid() -> str:
    """The table as a Mermaid state diagram (what docs/contract.md shows)."""
    lines = ["stateDiagram-v2", f"    [*] --> {_A.name}"]
    for t in TRANSITIONS:
        for source in t.sources:
            label = f"{t.trigger} / {t.effects}".replace(":", "#colon;")
            lines.append(f"    {source.name} --> {t.target.name}: {label}")
    lines.append(f"    {_C.name} --> [*]")
    return "\n".join(lines)


def markdown_table() -> str:
    rows = ["| state | input | next state | effects |", "| --- | --- | --- | --- |"]
    for t in TRANSITIONS:
        sources = "any" if t.sources == _LIVE else ", ".join(s.name for s in t.sources)
        rows.append(f"| {sources} | {t.trigger} | {t.target.name} | {t.effects.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)


__all__ = ["ALLOWED", "TRANSITIONS", "IllegalTransition", "State", "Transition", "advance", "markdown_table",
           "mermaid"]
