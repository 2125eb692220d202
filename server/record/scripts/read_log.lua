-- Read what a reconnecting page missed: the record and its logged changes from a seq on, at once
-- (nothing can be written between the two reads).
-- KEYS[1] record, KEYS[2] the log (a list of published records, oldest first, appended by every save)
-- ARGV[1] since: the last seq the page has; '' for a page that has nothing yet
-- Returns {record JSON (private part included) | false, entry, entry, ...}: with '', the newest
-- entry; else the newest entries from the one that should hold seq `since` on, counted back from
-- the newest one's seq (each save bumps seq by one). Whether they do reach back to `since`
-- without a gap is the caller's to judge (server/live/resume.py).
local out = {redis.call('GET', KEYS[1])}
local newest = redis.call('LINDEX', KEYS[2], -1)
if not newest then return out end
if ARGV[1] == '' then
  out[2] = newest
  return out
end
local ok, rec = pcall(cjson.decode, newest)
local last = ok and type(rec) == 'table' and tonumber(rec.seq)
if not last then return out end
local n = last - tonumber(ARGV[1]) + 1
if n <= 0 then return out end
local entries = redis.call('LRANGE', KEYS[2], -n, -1)
for i = 1, #entries do out[#out + 1] = entries[i] end
return out
