"""Server-Sent Events framing of asyncapi.yaml's ``sseStream`` channel (sans-I/O).

The mapping (the channel's ``x-sse`` extension, docs/clients.md "SSE"):

* every server message (the same JSON text the WebSocket sends) is one event:
  ``event: <type>``, ``id: <epoch>:<offset>`` for stream events (and for a ``welcome``
  without ``recovered: true``: the position a reconnect resumes from when nothing else
  arrived), then one ``data:`` line — our JSON never holds a raw newline (msgspec and the
  bus escape them), so one line is always enough;
* the stream starts with ``retry: <ms>`` and ends with ``event: close`` (:class:`SseClose`);
* a comment line keeps proxies and clients from timing the stream out.

``Last-Event-ID`` (or the ``lastEventId`` query parameter) is parsed by
:func:`parse_event_id` into the same ``StreamPosition`` an ``auth.resume`` carries.
"""

from __future__ import annotations

import msgspec

from livegate.errors import ContractError
from livegate.protocol import messages

#: What a keepalive looks like on the wire (an SSE comment; EventSource ignores it).
KEEPALIVE = b": keepalive\n\n"
#: Longest ``Last-Event-ID`` we read (openapi.yaml ``SseEventId``).
MAX_EVENT_ID_CHARS = 96
_STREAM_EVENTS = frozenset({"generationUpdate", "generationProgress", "notification"})


class _Head(msgspec.Struct, gc=False):
    """The fields of a server frame the SSE framing needs (msgspec skips the rest)."""

    type: str = ""
    epoch: str | None = None
    offset: int | None = None
    recovered: bool | None = None


_head = msgspec.json.Decoder(_Head)


def preamble(retry_ms: int) -> bytes:
    """The first bytes of every stream: the reconnection delay EventSource should use."""
    return f"retry: {int(retry_ms)}\n\n".encode()


#: The last frame framed and its event: a fan-out hands the same ``str`` to every
#: connection of a user in a row, so it is framed once per event, not once per connection.
_last: tuple[str | None, bytes] = (None, b"")


def event(frame: str) -> bytes:
    """One server frame (a JSON object text, as the WebSocket sends it) as one SSE event."""
    global _last
    if frame is _last[0]:
        return _last[1]
    framed = _frame(frame)
    _last = (frame, framed)
    return framed


def _frame(frame: str) -> bytes:
    head = _head.decode(frame)
    kind = head.type
    if head.epoch is not None and head.offset is not None and (
            kind in _STREAM_EVENTS or (kind == "welcome" and head.recovered is not True)):
        return f"event: {kind}\nid: {head.epoch}:{head.offset}\ndata: {frame}\n\n".encode()
    return f"event: {kind}\ndata: {frame}\n\n".encode()


def close_event(code: int, reason: str) -> bytes:
    """The last event of a stream (asyncapi.yaml ``sseClose``): the WebSocket's close frame."""
    data = msgspec.json.encode(messages.SseClose(type="close", code=code, reason=reason[:123])).decode()
    return f"event: close\ndata: {data}\n\n".encode()


def parse_event_id(value: str, where: str) -> messages.StreamPosition:
    """``<epoch>:<offset>`` (the last ``:`` separates them) as a stream position; anything
    else raises :class:`ContractError` (``validation_failed`` at ``where``)."""
    epoch, sep, offset = value.strip().rpartition(":")
    if (not sep or not epoch or len(value) > MAX_EVENT_ID_CHARS or len(epoch) > 64
            or not offset.isascii() or not offset.isdigit() or len(offset) > 18):
        raise ContractError(f"{where} must be <epoch>:<offset> (an event id of the stream), got {value[:100]!r}",
                            code="validation_failed", path=where)
    return messages.StreamPosition(epoch=epoch, offset=int(offset))


__all__ = ["KEEPALIVE", "close_event", "event", "parse_event_id", "preamble"]
