-- Read what a reconnecting page missed: the record and its logged changes from a seq on, at once
-- (nothing can be written between the two reads).
-- KEYS[1] record, KEYS[2] the log (written by every save of the other scripts)
-- ARGV[1] since: the last seq the page has; '' for a page that has nothing yet
-- Returns {record JSON (private part included) | false, member, seq, member, seq, ...}: the
-- logged public records with a seq of `since` or above, oldest first (with '': the newest
-- one only). Whether they reach back to `since` without a gap is the caller's to judge
-- (server/live/resume.py).
local out = {redis.call('GET', KEYS[1])}
local entries
if ARGV[1] == '' then
  entries = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
else
  entries = redis.call('ZRANGE', KEYS[2], ARGV[1], '+inf', 'BYSCORE', 'WITHSCORES')
end
for i = 1, #entries do out[#out + 1] = entries[i] end
return out
