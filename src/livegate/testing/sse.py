"""A test client of asyncapi.yaml's ``sseStream`` over httpx streaming (what ``fetch``
streaming does; ``EventSource``'s ticket flow too), for our tests and those of applications
built on livegate::

    async with SseClient(gw.http_url) as sse:
        await sse.open(gw.token("alice"))                  # a ticket, then GET /v1/sse
        welcome = await sse.next_message()
        await sse.post({"type": "ping", "id": "p1"}, gw.token("alice"))

The parser follows the HTML "event stream interpretation" rules (fields until a blank line,
``:`` comments, ``retry``, ``id``, one or more ``data`` lines). :func:`assert_framing`
checks an event against the ``x-sse`` mapping; :meth:`SseClient.next_message` checks the
JSON too (:func:`livegate.testing.spec_validation.assert_valid_message`, ``direction="sse"``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx

from livegate.testing.spec_validation import assert_valid_message

_STREAM_EVENTS = {"generationUpdate", "generationProgress", "notification"}


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None  # the event's own ``id`` field (None when it had none)


class SseRefused(Exception):
    """``GET /v1/sse`` (or the ticket) was answered with a problem instead of a stream."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"{status} {problem.get('code')}: {problem.get('detail')}")
        self.status, self.problem = status, problem


def assert_framing(event: SseEvent) -> dict[str, Any]:
    """``event:`` is the data's ``type``; stream events (and a welcome not recovered) carry
    ``id: <epoch>:<offset>``, nothing else does; the data is one JSON object."""
    message: dict[str, Any] = json.loads(event.data)
    assert event.event == message.get("type"), (event.event, event.data[:200])
    positioned = message.get("type") in _STREAM_EVENTS or (
        message.get("type") == "welcome" and message.get("recovered") is not True)
    expected = f"{message['epoch']}:{message['offset']}" if positioned else None
    assert event.id == expected, (event.id, expected, event.data[:200])
    return message


class SseClient:
    """One SSE connection (reusable after it ends: :meth:`open` again)."""

    def __init__(self, base_url: str, *, timeout: float = 10.0) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=timeout)
        self.response: httpx.Response | None = None
        self.connection_id: str | None = None
        self.last_event_id: str | None = None  # what EventSource would send as Last-Event-ID
        self.retry_ms: int | None = None
        self.comments = 0
        self.ended = False
        self._events: AsyncIterator[SseEvent] | None = None

    async def __aenter__(self) -> SseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def ticket(self, token: str) -> str:
        response = await self.http.post("/v1/sse/tickets", headers={"Authorization": f"Bearer {token}"})
        if response.status_code != 200:
            raise SseRefused(response.status_code, response.json())
        return str(response.json()["ticket"])

    async def open(self, token: str | None = None, *, ticket: str | None = None, bearer: bool = False,
                   last_event_id: str | None = None, in_query: bool = False,
                   headers: dict[str, str] | None = None, query: dict[str, str] | None = None) -> httpx.Response:
        """``GET /v1/sse`` with a new ticket for ``token`` (or ``ticket`` as given, or the
        token as ``Authorization: Bearer`` with ``bearer=True``), resuming after
        ``last_event_id`` (the ``Last-Event-ID`` header, or ``lastEventId`` with
        ``in_query=True``). Raises :class:`SseRefused` for a problem answer."""
        await self.close_stream()
        request_headers = dict(headers or {})
        params: dict[str, str] = dict(query or {})
        if bearer:
            request_headers["Authorization"] = f"Bearer {token}"
        elif ticket is not None or token is not None:
            params["ticket"] = ticket if ticket is not None else await self.ticket(str(token))
        if last_event_id is not None:
            if in_query:
                params["lastEventId"] = last_event_id
            else:
                request_headers["Last-Event-ID"] = last_event_id
        request = self.http.build_request("GET", "/v1/sse", params=params, headers=request_headers)
        response = await self.http.send(request, stream=True)
        if response.status_code != 200:
            await response.aread()
            await response.aclose()
            raise SseRefused(response.status_code, response.json())
        self.response, self.ended = response, False
        self.connection_id = response.headers.get("livegate-connection-id")
        self._events = self._parse(response.aiter_lines())
        return response

    async def next_event(self, timeout: float = 5.0) -> SseEvent:
        """The next event; raises :class:`EOFError` when the response ended."""
        if self._events is None:
            raise EOFError("no stream open")
        try:
            return await asyncio.wait_for(anext(self._events), timeout)
        except StopAsyncIteration:
            self.ended = True
            raise EOFError("the stream ended") from None

    async def next_message(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next event's data, its framing and its JSON checked (asyncapi.yaml)."""
        message = assert_framing(await self.next_event(timeout))
        return assert_valid_message(message, "sse")

    async def messages_until(self, kind: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Every message up to and including the first of type ``kind``."""
        out: list[dict[str, Any]] = []
        async with asyncio.timeout(timeout):
            while not out or out[-1]["type"] != kind:
                out.append(await self.next_message(timeout))
        return out

    async def post(self, message: dict[str, Any] | str | bytes, token: str,
                   connection_id: str | None = None) -> httpx.Response:
        """``POST /v1/sse/{connectionId}/messages`` (this stream's id unless given)."""
        content = json.dumps(message).encode() if isinstance(message, dict) else (
            message.encode() if isinstance(message, str) else message)
        return await self.http.post(f"/v1/sse/{connection_id or self.connection_id}/messages", content=content,
                                    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})

    async def close_stream(self) -> None:
        """Drop the stream (the client going away)."""
        response, self.response, self._events = self.response, None, None
        if response is not None:
            await response.aclose()

    async def aclose(self) -> None:
        await self.close_stream()
        await self.http.aclose()

    async def _parse(self, lines: AsyncIterator[str]) -> AsyncIterator[SseEvent]:
        kind, event_id = "", None
        data: list[str] = []
        async for line in lines:
            if not line:
                if data:
                    yield SseEvent(kind or "message", "\n".join(data), event_id)
                kind, data, event_id = "", [], None
                continue
            if line.startswith(":"):
                self.comments += 1
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
                self.last_event_id = value
            elif name == "retry" and value.isdigit():
                self.retry_ms = int(value)


__all__ = ["SseClient", "SseEvent", "SseRefused", "assert_framing"]
