-- Create a request record.
-- KEYS[1] record, KEYS[2] the shard's counts, KEYS[3] the shard's in-flight index, KEYS[4] the log
-- ARGV[1] record JSON (public fields plus _p), ARGV[2] ttl (s), ARGV[3] channel, ARGV[4] hash
-- Returns {'ok', public JSON} or {'exists'}.
--!include _generated.lua
--!include _prelude.lua
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local rec = decode(ARGV[1])
local p = private(rec)
local now = clock()
rec.created_at = iso(now)
rec.status = 'pending'
rec.seq = 0
p.created = now
recount(KEYS[2], nil, 'pending', slug_of(rec))
-- A queued request is looked at by the sweeper before its TTL could lapse (see keepalive).
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]) / 2, ARGV[4])
local _, pub = save(KEYS[1], rec, p, tonumber(ARGV[2]), ARGV[3], now, KEYS[4])
return {'ok', pub}
