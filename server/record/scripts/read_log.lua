-- Read what a reconnecting page missed: the record and its logged changes from a seq on, at once
-- (nothing can be written between the two reads).
-- KEYS[1] record, KEYS[2] the log (a list of "<seq> <record JSON>", appended by every save)
-- ARGV[1] since: the last seq the page has; '' for a page that has nothing yet
-- Returns {record JSON (private part included) | false, entry, entry, ...}: the logged entries
-- with a seq of `since` or above, oldest first (with '': the newest one only). Whether they
-- reach back to `since` without a gap is the caller's to judge (server/live/resume.py).
local out = {redis.call('GET', KEYS[1])}
if ARGV[1] == '' then
  local newest = redis.call('LRANGE', KEYS[2], -1, -1)
  if newest[1] then out[2] = newest[1] end
  return out
end
local since = tonumber(ARGV[1])
local entries = redis.call('LRANGE', KEYS[2], 0, -1)
for i = 1, #entries do
  local e = entries[i]
  local seq = tonumber(string.sub(e, 1, (string.find(e, ' ', 1, true) or 1) - 1))
  if seq and seq >= since then out[#out + 1] = e end
end
return out
