-- The history guard (docs/scaling.md, "Rewinds"): a rewind of the data (a replica that missed
-- writes promoted, a restart from an older AOF/RDB) must start new epochs, never reuse offsets.
--
-- The key `h` (a hash) holds the data's generation `gen`, the replication id `rid` of the
-- server run that last touched it, a count `w` of publish calls, and the count the data held
-- when that run first touched it (`w0`). Redis's replication id (INFO replication,
-- master_replid) is new on every start (RDB or AOF) and on every promotion (REPLICAOF NO
-- ONE), and no AOF or RDB brings it back as current, so `rid ~= replid` means "this data came
-- through a restart or a failover". Whether it lost writes on the way only a witness can
-- tell: every gateway passes the (gen, rid, w) it last saw. `w` only grows along one history,
-- so a witness of an earlier run that saw more calls than the data held when this run began
-- (w > w0), or one of this run that saw more than the data holds (w > w), proves a rewind,
-- and a new `gen` voids every stream's epoch (each stream gets a new epoch the next time a
-- script touches it: meta field `g`).
--
-- Settling: a witness can only prove a rewind once it has shown its view, and right after a
-- restart or failover the first call may come from a process that saw nothing (it would append
-- at the lost offsets until a witness calls in). So when the data comes through a new server
-- run, `settle` is set `settle_ms` ahead, and publish.lua appends nothing until then: every
-- live process's subscriber shows its witness right after it reconnects (scripts/guard.lua).
-- A proof ends the wait at once (every stream is void anyway).
-- Returns gen, rid, w (what the caller now knows), and the ms left to settle (0 when settled).
local function history_guard(h, seen_gen, seen_rid, seen_w, candidate, count_write, settle_ms)
  local info = redis.call('INFO', 'replication')
  local replid = string.match(info, 'master_replid:(%x+)')
  local state = redis.call('HMGET', h, 'gen', 'rid', 'w', 'w0', 'settle')
  local gen, rid, w, w0 = state[1], state[2], tonumber(state[3] or '0'), tonumber(state[4] or '0')
  local settle = tonumber(state[5] or '0')
  local now = redis.call('TIME')
  local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  if not gen then
    gen, rid, w, w0 = candidate, replid, 0, 0
    redis.call('HSET', h, 'gen', gen, 'rid', rid, 'w', 0, 'w0', 0)
  elseif rid ~= replid then
    w0, rid = w, replid
    settle = now_ms + (tonumber(settle_ms) or 0)
    redis.call('HSET', h, 'rid', rid, 'w0', w0, 'settle', settle)
  end
  seen_w = tonumber(seen_w) or 0
  if seen_gen == gen and ((seen_rid == rid and seen_w > w) or (seen_rid ~= rid and seen_w > w0)) then
    -- proven: every stream starts a new epoch, so no other witness is waited for
    gen, settle = candidate, 0
    redis.call('HSET', h, 'gen', gen, 'settle', 0)
  end
  local left = math.max(0, settle - now_ms)
  if count_write and left == 0 then
    w = redis.call('HINCRBY', h, 'w', 1)
  end
  return gen, rid, w, left, now
end

-- The stream's epoch under generation `gen`; a missing meta hash, or one of another
-- generation, starts a new epoch (and drops any stream left without it): history lost or
-- void always means a new epoch. Returns epoch, top.
local function stream_epoch(meta, log, gen, candidate)
  local state = redis.call('HMGET', meta, 'epoch', 'top', 'g')
  local epoch, top, g = state[1], state[2], state[3]
  if epoch and g == gen then
    return epoch, tonumber(top)
  end
  if epoch and not g then
    -- written before the guard existed: adopt it into this generation
    redis.call('HSET', meta, 'g', gen)
    return epoch, tonumber(top)
  end
  redis.call('DEL', log)
  redis.call('HSET', meta, 'epoch', candidate, 'top', 0, 'g', gen)
  return candidate, 0
end
