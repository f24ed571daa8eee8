-- KEYS: meta, stream, history. ARGV: epoch candidate, after ("" = none), max_age_ms,
-- meta_ttl_ms, the caller's witness (gen, rid, w), a generation candidate, the page bounds:
-- at most this many events (the oldest after `after`) and about this many bytes of frames
-- (0 = no bound; at least one event), the epoch a resuming client claims ("" = none), the
-- timestamp of the event it holds at `after` ("" = none), settle_ms.
-- Returns {epoch, top, first_available, entries oldest first, gen, rid, w}.
-- (Loaded after history.lua.)
local meta, log = KEYS[1], KEYS[2]
local gen, rid, w, _left, now = history_guard(KEYS[3], ARGV[5], ARGV[6], ARGV[7], ARGV[8], false, ARGV[13])
local epoch, top = stream_epoch(meta, log, gen, ARGV[1])
local horizon = tostring(tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) - tonumber(ARGV[3]))
local after = nil
if ARGV[2] ~= '' then
  after = tonumber(ARGV[2])
end
-- A client's claim about this epoch: it saw offsets up to `after`, and (with a timestamp) the
-- event it holds at `after`.
local claimed = after ~= nil and ARGV[11] ~= '' and ARGV[11] == epoch
local stamp = ''
if claimed and after > 0 then
  stamp = ARGV[12]
end
local rewound = claimed and after > top
local newer = {}
if after ~= nil and not rewound then
  -- Offsets are consecutive in the stream: the entries after `after` are the newest
  -- top - after ones (one more, the event at `after`, when the claim is to be checked).
  local count = top - after
  if stamp ~= '' then
    count = count + 1
  end
  if count > 0 then
    newer = redis.call('XREVRANGE', log, '+', horizon, 'COUNT', count)
    if stamp ~= '' and #newer == count then
      local at = table.remove(newer)  -- the event at `after` (not part of the page)
      if tonumber(at[2][2]) == after then
        local held = string.match(at[2][4], '^{"timestamp":"([^"]*)"')
        rewound = held ~= nil and held ~= stamp
      end
    end
  end
end
if rewound then
  -- The client saw offsets this stream does not hold, or another event at its offset: the
  -- stream was rewound behind its back (a loss no witness saw, then maybe written again).
  -- Its next offsets would repeat ones that client saw with other events, so the stream
  -- starts a new epoch (only this user's stream: its own claim).
  redis.call('DEL', log)
  redis.call('HSET', meta, 'epoch', ARGV[1], 'top', 0, 'g', gen)
  epoch, top, newer = ARGV[1], 0, {}
end
redis.call('PEXPIRE', meta, ARGV[4])
local first_available = top + 1
local oldest = redis.call('XRANGE', log, horizon, '+', 'COUNT', 1)
if #oldest > 0 then
  first_available = tonumber(oldest[1][2][2])
end
local entries = {}
if after ~= nil then
  local wanted = math.min(top - after, tonumber(ARGV[9]))
  local budget, size = tonumber(ARGV[10]), 0
  for i = #newer, math.max(1, #newer - wanted + 1), -1 do
    -- a frame is its body plus the spliced '{"epoch":"<16 hex>","offset":<n>,' (~40 bytes)
    size = size + #newer[i][2][4] + 40
    if budget > 0 and #entries > 0 and size > budget then
      break
    end
    entries[#entries + 1] = newer[i]
  end
end
return {epoch, top, first_available, entries, gen, rid, w}
