-- The channel message of one event (bus/redis/wire.py parse_message reads it; the shared
-- test vector tests/bus/vectors/channel_messages.json pins the format on both sides):
--   "<epoch> <offset> <published_at> <key length>\n<key><body>"
-- key is "-" (no conflation key) or "+<key>".
local function channel_message(epoch, offset, published, key, body)
  return epoch .. ' ' .. offset .. ' ' .. published .. ' ' .. #key .. '\n' .. key .. body
end
