"""The user stream over Server-Sent Events: openapi.yaml's ``createSseTicket``,
``openSseStream`` and ``sendSseMessage`` (asyncapi.yaml channel ``sseStream``).

The stream is the WebSocket's endpoint (:class:`livegate.app.ws.Connection`) on one more
wire (:class:`livegate.transport.sse.SseWire`): auth, resume, delivery, limits and closing
are the endpoint's, unchanged. What differs lives here:

* **Credentials come with the request.** A ticket (single use, <= 30 s, bound to the JWT's
  ``sub`` and expiry; kept in :mod:`livegate.bus.tickets`, so any process takes it once) or
  a Bearer JWT is checked before the response starts (a refusal is a 401 problem), and the
  connection is *admitted* with those claims and the ``Last-Event-ID`` position, as if an
  ``auth`` frame had carried them (``Session.admit``).
* **Client messages arrive by POST**, on any process. The connection id names the process
  holding the stream (``s-<node>-<random>``); another process forwards the message over
  :mod:`livegate.bus.relay` (Centrifugo's bidirectional emulation does the same over its
  broker) and answers with the owner's verdict: 202 (handed to the connection as a text
  frame, so every answer, ``error`` included, is the WebSocket's and arrives on the stream)
  or 404 (no such connection of this user: unknown, closed or another user's alike).
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import msgspec
from litestar import Request, Response, asgi, post
from litestar.handlers import ASGIRouteHandler, HTTPRouteHandler
from litestar.types import HTTPScope, Receive, Send

from livegate.app.auth import require_claims
from livegate.app.problems import ProblemError
from livegate.app.routes_core import header
from livegate.app.routes_generations import PathStr
from livegate.app.ws import Connection
from livegate.errors import BusUnavailable, ContractError
from livegate.protocol import http, messages
from livegate.protocol.auth import Claims
from livegate.protocol.sse import parse_event_id
from livegate.transport.sse import SseWire

if TYPE_CHECKING:
    from livegate.app.gateway import Gateway

#: A ticket's longest life (the issue: "valid at most 30 s").
TICKET_TTL_SECONDS = 30.0
#: How long a process waits for the owner of a connection to take a relayed message.
RELAY_TIMEOUT_SECONDS = 5.0
_CONNECTION_ID = re.compile(r"s-([0-9a-f]{8})-[0-9a-f]{12}")
_ACCEPTED, _NOT_FOUND = b"202", b"404"


class _TicketValue(msgspec.Struct, frozen=True):
    sub: str
    exp: float


class _Relayed(msgspec.Struct, frozen=True):
    connection: str
    user: str
    text: str


_ticket_decoder = msgspec.json.Decoder(_TicketValue)
_relayed_decoder = msgspec.json.Decoder(_Relayed)


class SseConnections:
    """This process's SSE connections by id, and the routing of client messages to the
    process that holds a connection."""

    def __init__(self, gateway: Gateway) -> None:
        self.gw = gateway
        self.by_id: dict[str, Connection] = {}

    def new_id(self) -> str:
        return f"s-{self.gw.node}-{secrets.token_hex(6)}"

    def deliver(self, connection_id: str, user: str, text: str) -> bool:
        """Hand ``text`` to the connection as a received frame, if it is ``user``'s."""
        connection = self.by_id.get(connection_id)
        if connection is None or connection.session.user_id != user:
            return False
        connection.text_received(text)
        return True

    def on_relayed(self, payload: bytes) -> bytes:
        """The relay's handler: a message another process received for one of ours."""
        try:
            message = _relayed_decoder.decode(payload)
        except msgspec.DecodeError:
            return _NOT_FOUND
        return _ACCEPTED if self.deliver(message.connection, message.user, message.text) else _NOT_FOUND

    async def route(self, connection_id: str, user: str, text: str) -> bool:
        """Deliver on whichever process holds the connection; ``False`` when none does (for
        this user). Raises :class:`BusUnavailable` when the owner cannot be reached."""
        match = _CONNECTION_ID.fullmatch(connection_id)
        if match is None:
            return False
        node = match.group(1)
        if node == self.gw.node:
            return self.deliver(connection_id, user, text)
        payload = msgspec.json.encode(_Relayed(connection=connection_id, user=user, text=text))
        return await self.gw.relay.call(node, payload, RELAY_TIMEOUT_SECONDS) == _ACCEPTED


def _flag(query: dict[str, list[str]], name: str) -> bool:
    """A boolean query parameter: ``true`` or ``false`` (absent: false); else a 400 problem."""
    values = query.get(name, ["false"])
    if values[0] not in ("true", "false"):
        raise ProblemError(400, "validation_failed", f"{name} must be true or false", errors=[
            http.ProblemItem(message=f"{name} must be true or false", path=f"$.query.{name}")])
    return values[0] == "true"


def _resume(scope: HTTPScope, query: dict[str, list[str]]) -> messages.StreamPosition | None:
    """``Last-Event-ID`` (the header wins) or ``lastEventId``, with ``lastEventTimestamp``;
    either id present and not an event id is 400 ``validation_failed``."""
    positions = []
    given = [(value.decode("latin-1"), "$.headers.Last-Event-ID") for key, value in scope["headers"]
             if key == b"last-event-id"][:1]
    given += [(value, "$.query.lastEventId") for value in query.get("lastEventId", [])[:1]]
    for value, where in given:  # present, even empty: it must be an event id
        try:
            positions.append(parse_event_id(value, where))
        except ContractError as exc:
            raise ProblemError(400, "validation_failed", exc.message, errors=[
                http.ProblemItem(message="expected <epoch>:<offset>, e.g. 9f2c4e1a7b3d:41", path=where)]) from None
    if not positions:
        return None
    stamps = query.get("lastEventTimestamp", [])[:1]
    if not stamps:
        return positions[0]
    if not 0 < len(stamps[0]) <= 40:
        raise ProblemError(400, "validation_failed", "lastEventTimestamp must be 1 to 40 characters", errors=[
            http.ProblemItem(message="the timestamp of the event named by the resume position",
                             path="$.query.lastEventTimestamp")])
    return messages.StreamPosition(epoch=positions[0].epoch, offset=positions[0].offset, timestamp=stamps[0])


async def _redeem(gw: Gateway, ticket: str) -> Claims:
    refused = ProblemError(401, "ticket_invalid", "The ticket was already used, expired or is unknown; get a new one")
    if not 0 < len(ticket) <= 128:
        raise refused
    try:
        value = await gw.tickets.take(ticket)
    except BusUnavailable as exc:
        raise ProblemError(503, "bus_unavailable", f"Cannot check the ticket now: {exc.message}",
                           headers={"Retry-After": "1"}) from None
    if value is None:
        raise refused
    claims = _ticket_decoder.decode(value)
    if claims.exp <= time.time():
        raise ProblemError(401, "ticket_invalid", "The token the ticket was issued for has expired")
    return Claims(sub=claims.sub, exp=claims.exp)


def sse_routes(gw: Gateway) -> list[HTTPRouteHandler | ASGIRouteHandler]:
    @post("/v1/sse/tickets", status_code=200)
    async def create_ticket(request: Request[Any, Any, Any]) -> Response[bytes]:
        """openapi.yaml ``createSseTicket``."""
        claims = require_claims(request.headers.get("authorization", ""), gw.verifier)
        now = time.time()
        ttl = max(0.001, min(TICKET_TTL_SECONDS, claims.exp - now))
        ticket = "tk_" + secrets.token_urlsafe(24)
        try:
            await gw.tickets.put(ticket, msgspec.json.encode(_TicketValue(sub=claims.sub, exp=claims.exp)), ttl)
        except BusUnavailable as exc:
            raise ProblemError(503, "bus_unavailable", f"Cannot issue a ticket now: {exc.message}",
                               headers={"Retry-After": "1"}) from None
        body = http.SseTicket(ticket=ticket, expires_at=datetime.fromtimestamp(now + ttl, UTC))
        return Response(msgspec.json.encode(body), media_type="application/json",
                        headers={"Cache-Control": "no-store"})

    @asgi("/v1/sse", copy_scope=False)
    async def open_stream(scope: HTTPScope, receive: Receive, send: Send) -> None:
        """openapi.yaml ``openSseStream``: asyncapi.yaml ``sseStream`` on the SSE wire."""
        if scope["method"] != "GET":
            raise ProblemError(405, "method_not_allowed", f"Method {scope['method']} not allowed; use GET",
                               headers={"Allow": "GET"})
        query = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        resume = _resume(scope, query)
        text_deltas = _flag(query, "textDeltas")
        if "ticket" in query:  # a ticket, even empty, is the credential (the Bearer is not looked at)
            claims = await _redeem(gw, query["ticket"][0])
        else:
            claims = require_claims(header(scope, b"authorization"), gw.verifier)
        connection_id = gw.sse.new_id()
        headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
                   (b"x-accel-buffering", b"no"), (b"livegate-connection-id", connection_id.encode())]
        wire = SseWire(send, receive, retry_ms=gw.config.sse_retry_ms,
                       keepalive_interval=gw.config.heartbeat_interval_seconds)

        def endpoint(wire: SseWire) -> Connection:
            connection = Connection(wire, gw, origin=header(scope, b"origin") or None,
                                    connection_id=connection_id, admit=(claims, resume, text_deltas))
            gw.sse.by_id[connection_id] = connection
            return connection

        try:
            await wire.run(headers, endpoint)
        finally:
            gw.sse.by_id.pop(connection_id, None)

    @post("/v1/sse/{connection_id:str}/messages", status_code=202)
    async def send_message(request: Request[Any, Any, Any], connection_id: PathStr) -> Response[bytes]:
        """openapi.yaml ``sendSseMessage``: the body is handed to the connection as a text
        frame (a body over the frame limit still is over it: ``frame_too_large``)."""
        claims = require_claims(request.headers.get("authorization", ""), gw.verifier)
        body = await request.body()
        text = body[: gw.config.max_frame_bytes + 1].decode("utf-8", errors="replace")
        try:
            delivered = await gw.sse.route(connection_id, claims.sub, text)
        except BusUnavailable as exc:
            raise ProblemError(503, "bus_unavailable", f"Cannot reach the connection now: {exc.message}",
                               headers={"Retry-After": "1"}) from None
        if not delivered:
            raise ProblemError(404, "not_found", "No open SSE connection with this id")
        return Response(b"", status_code=202)

    return [create_ticket, open_stream, send_message]


__all__ = ["RELAY_TIMEOUT_SECONDS", "TICKET_TTL_SECONDS", "SseConnections", "sse_routes"]
