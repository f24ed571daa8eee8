-- KEYS: meta, stream, history. ARGV: epoch candidate, after ("" = none), max_age_ms,
-- meta_ttl_ms, the caller's witness (gen, rid, w), a generation candidate, the page bounds:
-- at most this many events (the oldest after `after`) and about this many bytes of frames
-- (0 = no bound; at least one event), and the epoch a resuming client claims ("" = none).
-- Returns {epoch, top, first_available, entries oldest first, gen, rid, w}.
-- (Loaded after history.lua.)
local meta, log = KEYS[1], KEYS[2]
local gen, rid, w = history_guard(KEYS[3], ARGV[5], ARGV[6], ARGV[7], ARGV[8], false)
local epoch, top = stream_epoch(meta, log, gen, ARGV[1])
if ARGV[11] ~= '' and ARGV[11] == epoch and ARGV[2] ~= '' and tonumber(ARGV[2]) > top then
  -- A client of this stream saw offsets the stream does not hold: it was rewound (a loss
  -- no witness saw). Its next offsets would repeat ones that client saw with other events,
  -- so the stream starts a new epoch (only this user's stream: its own claim).
  redis.call('DEL', log)
  redis.call('HSET', meta, 'epoch', ARGV[1], 'top', 0, 'g', gen)
  epoch, top = ARGV[1], 0
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
  local after = tonumber(ARGV[2])
  local wanted = math.min(top - after, tonumber(ARGV[9]))
  if wanted > 0 then
    -- Offsets are consecutive in the stream: the entries after `after` are the newest
    -- top - after ones; skip to the first of them and take a page, oldest first.
    local newer = redis.call('XREVRANGE', log, '+', horizon, 'COUNT', top - after)
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
end
return {epoch, top, first_available, entries, gen, rid, w}
