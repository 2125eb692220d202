-- GCRA: allow `burst` calls at once, refilling one every `interval` seconds.
-- KEYS[1] limiter state (theoretical arrival time, epoch seconds)
-- ARGV[1] interval (s), ARGV[2] burst, ARGV[3] cost (calls counted at once; default 1)
-- Returns {1, 0} when allowed, {0, milliseconds until allowed} when not.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval * (tonumber(ARGV[3]) or 1)
local allow_at = new_tat - burst * interval
if allow_at > now then return {0, math.ceil((allow_at - now) * 1000)} end
-- at least 1 ms: a generous limit (say 10^8 per second) has a sub-ms interval, and PX 0 is an error
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) * 1000)))
return {1, 0}
