"""What goes over the wire to Redis: the Lua scripts (package files in ``scripts/``, the one
place that defines the key layout and the channel message format), the RESP packing the bus
does by hand on its hot path, and the parsing of what comes back.

Private to ``livegate.bus.redis``.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import Any

from livegate.bus.base import StreamEvent, splice_position


def script_source(name: str) -> str:
    """A Lua file of ``livegate/bus/redis/scripts``."""
    return (resources.files("livegate.bus.redis") / "scripts" / name).read_text(encoding="utf-8")


class Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


#: message.lua defines channel_message(), history.lua the history guard and the stream epoch
#: check; publish.lua and read.lua call them.
PUBLISH_SCRIPT = Script(script_source("message.lua") + script_source("history.lua") + script_source("publish.lua"))
READ_SCRIPT = Script(script_source("history.lua") + script_source("read.lua"))
GUARD_SCRIPT = Script(script_source("history.lua") + script_source("guard.lua"))
# Items per publish script call: big enough to amortise the call, small enough that one
# call blocks Redis for about a millisecond.
ITEMS_PER_CALL = 200


def arg(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return b"%d" % value


def pack_command(*parts: bytes | str | int) -> bytes:
    """One command in RESP (an array of bulk strings)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in map(arg, parts):
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def pack_evalsha(sha: str, keys: list[str], args: list[Any]) -> bytes:
    """``EVALSHA sha numkeys keys... args...`` in RESP."""
    return pack_command(b"EVALSHA", sha, len(keys), *keys, *args)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_read(result: list[Any]) -> tuple[str, int, int, list[Any]]:
    """read.lua's reply: ``(epoch, top, first_available, rows oldest first)`` (the history
    view, ``result[4:7]``, goes to :meth:`~livegate.bus.redis.history.Witness.saw`)."""
    epoch, top, first, rows = result[:4]
    return text(epoch), int(top), int(first), rows


def event_from_row(row: list[Any], epoch: str) -> StreamEvent:
    # row = [id, [b"o", offset, b"d", body, b"k", key, b"t", published_at]]
    fields = row[1]
    offset = int(fields[1])
    key = fields[5]
    return StreamEvent(
        offset,
        splice_position(fields[3], epoch, offset),
        key[1:].decode() if key[:1] == b"+" else None,
        float(fields[7]),
    )


_STAMP = b'{"timestamp":"'


def body_timestamp(body: bytes) -> str | None:
    """The ``timestamp`` an event body starts with (service/publisher.py writes it first),
    or None: what scripts/read.lua compares with the event the stream holds."""
    if not body.startswith(_STAMP):
        return None
    end = body.find(b'"', len(_STAMP))
    return body[len(_STAMP):end].decode() if end > 0 else None


def parse_message(data: bytes) -> tuple[str, int, float, str | None, bytes]:
    """A channel message (scripts/message.lua): ``(epoch, offset, published_at, key, body)``."""
    head, _, rest = data.partition(b"\n")
    epoch, offset, published_at, key_length = head.split(b" ")
    n = int(key_length)
    key = rest[:n]
    return (epoch.decode(), int(offset), float(published_at),
            key[1:].decode() if key[:1] == b"+" else None, rest[n:])
