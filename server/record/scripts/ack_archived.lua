-- Forget archived entries: acknowledge them and delete them from the stream in one step, so
-- that what is left in a stream is exactly the archive's backlog (a crash between a separate
-- XACK and XDEL would leave acknowledged entries counted as waiting forever).
-- KEYS[1] archive stream
-- ARGV[1] consumer group, ARGV[2..] entry ids (at most a few thousand: Lua's unpack limit)
-- Returns the number of entries acknowledged.
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
return n
