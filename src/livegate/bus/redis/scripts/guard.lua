-- KEYS: history. ARGV: the caller's witness (gen, rid, w), a generation candidate, settle_ms.
-- Returns {gen, rid, w, ms left to settle}. Sent by each subscriber right after it
-- (re)connects, so that every live process shows its witness as soon as Redis is back.
-- (Loaded after history.lua.)
local gen, rid, w, left = history_guard(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], false, ARGV[5])
return {gen, rid, w, left}
