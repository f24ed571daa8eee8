-- KEYS: history, then meta_1, stream_1, ..., meta_k, stream_k (the streams of one call).
-- ARGV: max_events, max_age_ms, meta_ttl_ms, stream_ttl_ms, the caller's witness (gen, rid,
-- w; "" when it has none), a generation candidate, settle_ms, then per stream: epoch
-- candidate, channel, n, then n x (body, key) ("-" = no key, "+k" = key k).
-- Returns {gen, rid, w, epoch_1, first_offset_1, ..., epoch_k, first_offset_k}; a stream's n
-- offsets are first_offset .. first_offset + n - 1. While the data settles after a new server
-- run (history.lua) nothing is appended and the reply is {gen, rid, w, "settle", ms left}.
-- (Loaded after message.lua, history.lua.)
local gen, rid, w, left, now = history_guard(KEYS[1], ARGV[5], ARGV[6], ARGV[7], ARGV[8], true, ARGV[9])
if left > 0 then
  return {gen, rid, w, 'settle', left}
end
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local published = now[1] .. '.' .. string.format('%06d', tonumber(now[2]))
local horizon = tostring(now_ms - tonumber(ARGV[2]))
local result = {gen, rid, w}
local a = 10
for s = 2, #KEYS, 2 do
  local meta, log = KEYS[s], KEYS[s + 1]
  local epoch = stream_epoch(meta, log, gen, ARGV[a])
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
    redis.call('PUBLISH', channel, channel_message(epoch, offset, published, key, body))
  end
  redis.call('XTRIM', log, 'MAXLEN', '=', ARGV[1])
  redis.call('XTRIM', log, 'MINID', horizon)
  redis.call('PEXPIRE', meta, ARGV[3])
  redis.call('PEXPIRE', log, ARGV[4])
end
return result
