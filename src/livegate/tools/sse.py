"""A sans-I/O Server-Sent Events decoder with the rules OpenAI's SDK applies.

Feed it bytes as they arrive (cut anywhere, even inside a UTF-8 sequence or between
``\\r`` and ``\\n``); it returns the complete events. Rules (WHATWG "event stream
interpretation", as the SDK implements them): lines end in ``\\n``, ``\\r\\n`` or ``\\r``;
a blank line dispatches the event; several ``data:`` lines are joined with ``\\n``; one
space after the colon is stripped; lines starting with ``:`` are comments; ``id:`` and
``retry:`` are parsed and otherwise ignored; unknown fields are ignored. An event with no
``data`` line is not dispatched.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSEEvent"]


@dataclass(frozen=True, slots=True)
class SSEEvent:
    data: str
    event: str | None = None
    id: str | None = None
    retry: int | None = None


class SSEDecoder:
    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None
        self._retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Decode ``chunk``; return the events it completed, in order."""
        self._buffer += self._text.decode(chunk)
        return self._drain(final=False)

    def close(self) -> list[SSEEvent]:
        """End of stream: a last line without terminator still counts; an event without
        its blank line is dropped (the SDK does the same)."""
        self._buffer += self._text.decode(b"", final=True)
        events = self._drain(final=True)
        if self._buffer:
            self._line(self._buffer)
            self._buffer = ""
        return events

    def _drain(self, final: bool) -> list[SSEEvent]:
        events: list[SSEEvent] = []
        start = 0
        buffer = self._buffer
        while True:
            cr, lf = buffer.find("\r", start), buffer.find("\n", start)
            ends = [i for i in (cr, lf) if i >= 0]
            if not ends:
                break
            end = min(ends)
            if buffer[end] == "\r":
                if end + 1 == len(buffer) and not final:
                    break  # a "\n" may follow in the next chunk
                width = 2 if buffer.startswith("\r\n", end) else 1
            else:
                width = 1
            event = self._line(buffer[start:end])
            if event is not None:
                events.append(event)
            start = end + width
        self._buffer = buffer[start:]
        return events

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:  # an id with NUL is ignored (WHATWG)
            self._id = value
        elif name == "retry" and value.isdigit():  # a non-digit retry is ignored (WHATWG)
            self._retry = int(value)
        return None

    def _dispatch(self) -> SSEEvent | None:
        data, event = self._data, self._event
        self._data, self._event = [], None
        if not data:
            return None
        return SSEEvent(data="\n".join(data), event=event, id=self._id, retry=self._retry)
