"""The Redis side of :class:`livegate.bus.redis.RedisBus`: its Lua scripts (the one place
that defines the key layout and the channel message format, see that module's docstring)
and the RESP packing and parsing the bus does by hand on its hot path.

Kept apart from the bus's connection and subscription logic so each reads on its own; both
are private to ``livegate.bus``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from livegate.bus.base import StreamEvent, splice_position

# KEYS: meta_1, stream_1, ..., meta_k, stream_k (the streams of one call).
# ARGV: max_events, max_age_ms, meta_ttl_ms, stream_ttl_ms, then per stream: epoch
# candidate, channel, n, then n x (body, key) ("-" = no key, "+k" = key k).
# Returns {epoch_1, first_offset_1, ..., epoch_k, first_offset_k}; a stream's n offsets
# are first_offset .. first_offset + n - 1.
PUBLISH = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local published = now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
local horizon = tostring(now_ms - tonumber(ARGV[2]))
local result = {}
local a = 5
for s = 1, #KEYS, 2 do
  local meta, log = KEYS[s], KEYS[s + 1]
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = ARGV[a]
    redis.call('DEL', log)
    redis.call('HSET', meta, 'epoch', epoch, 'top', 0)
  end
  local channel, n = ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  local offset = redis.call('HINCRBY', meta, 'top', n) - n
  result[#result + 1] = epoch
  result[#result + 1] = offset + 1
  for i = 1, n do
    offset = offset + 1
    local body, key = ARGV[a], ARGV[a + 1]
    a = a + 2
    redis.call('XADD', log, '*', 'o', offset, 'd', body, 'k', key, 't', published)
    redis.call('PUBLISH', channel, epoch .. ' ' .. offset .. ' ' .. published .. ' ' .. #key .. '\\n' .. key .. body)
  end
  redis.call('XTRIM', log, 'MAXLEN', '=', ARGV[1])
  redis.call('XTRIM', log, 'MINID', horizon)
  redis.call('PEXPIRE', meta, ARGV[3])
  redis.call('PEXPIRE', log, ARGV[4])
end
return result
"""

# KEYS: meta, stream. ARGV: epoch candidate, after ("" = none), max_age_ms, meta_ttl_ms.
# Returns {epoch, top, first_available, entries newest first}.
READ = """
local meta, log = KEYS[1], KEYS[2]
local epoch = redis.call('HGET', meta, 'epoch')
local top = 0
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', log)
  redis.call('HSET', meta, 'epoch', epoch, 'top', 0)
else
  top = tonumber(redis.call('HGET', meta, 'top'))
end
redis.call('PEXPIRE', meta, ARGV[4])
local now = redis.call('TIME')
local horizon = tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[3]))
local first_available = top + 1
local oldest = redis.call('XRANGE', log, horizon, '+', 'COUNT', 1)
if #oldest > 0 then
  first_available = tonumber(oldest[1][2][2])
end
local entries = {}
if ARGV[2] ~= '' then
  local wanted = top - tonumber(ARGV[2])
  if wanted > 0 then
    entries = redis.call('XREVRANGE', log, '+', horizon, 'COUNT', wanted)
  end
end
return {epoch, top, first_available, entries}
"""


class Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()


PUBLISH_SCRIPT = Script(PUBLISH)
# Items per publish script call: big enough to amortise the call, small enough that one
# call blocks Redis for about a millisecond.
ITEMS_PER_CALL = 200
READ_SCRIPT = Script(READ)


def arg(value: bytes | str | int) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    return b"%d" % value


def pack_evalsha(sha: str, keys: list[str], args: list[Any]) -> bytes:
    """``EVALSHA sha numkeys keys... args...`` in RESP."""
    parts = [b"EVALSHA", sha.encode(), b"%d" % len(keys), *map(arg, keys), *map(arg, args)]
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def parse_read(result: list[Any]) -> tuple[str, int, int, list[Any]]:
    epoch, top, first, rows = result
    return text(epoch), int(top), int(first), rows[::-1]


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


def parse_message(data: bytes) -> tuple[str, int, float, str | None, bytes]:
    head, _, rest = data.partition(b"\n")
    epoch, offset, published_at, key_length = head.split(b" ")
    n = int(key_length)
    key = rest[:n]
    return (epoch.decode(), int(offset), float(published_at),
            key[1:].decode() if key[:1] == b"+" else None, rest[n:])
