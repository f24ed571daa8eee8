-- KEYS: meta, stream. ARGV: epoch candidate, after ("" = none), max_age_ms, meta_ttl_ms.
-- Returns {epoch, top, first_available, entries newest first}.
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
