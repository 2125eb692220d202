-- Release a lock only if we still hold it (it may have expired and been taken by another).
-- KEYS[1] lock
-- ARGV[1] the holder's token
-- Returns 1 if released, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
