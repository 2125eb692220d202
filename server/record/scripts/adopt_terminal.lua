-- Adopt a request an old-style bot finished by itself (GET, edit, SETEX: the update script never
-- saw its terminal status, so nothing archived it or took it out of the in-flight index and the
-- counts). Does what the update script does on a terminal transition, except rewriting the
-- record, which stays as the bot wrote it: hands it to the archive stream, takes it out of the
-- in-flight index, the OTP waits and the counts, and drops a pending code. The index membership
-- is the guard: adopted once, it is a no-op after.
-- KEYS[1] record, KEYS[2] archive stream, KEYS[3] in-flight index, KEYS[4] pending OTP code,
-- KEYS[5] the shard's counts, KEYS[6] the shard's OTP waits
-- ARGV[1] hash
-- Returns {'adopted', status} | {'not_inflight'} | {'not_terminal'} | {'missing'}
--!include _generated.lua
--!include _prelude.lua
if not redis.call('ZSCORE', KEYS[3], ARGV[1]) then return {'not_inflight'} end
local rec, p, cur = load_record(KEYS[1])
if not rec then return {'missing'} end
if not TERMINAL[cur] then return {'not_terminal'} end
local now = clock()
-- The status the counts last saw: the scripts keep a request in the OTP waits exactly while
-- it waits for the person; otherwise it was running once it had started, else queued. (A
-- request an operator revived and a stale old-style bot then finished before a worker took it
-- again is the one case this takes for running rather than queued.)
local was = 'pending'
if redis.call('ZSCORE', KEYS[6], ARGV[1]) then
  -- The bot's rewrite keeps the flag the scripts last set: which prompt it waited on.
  was = p.counted or (rec.requires_input == true and 'waiting_input' or 'waiting_otp')
elseif p.started then was = 'processing' end
recount(KEYS[5], was, cur, slug_of(rec))
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('DEL', KEYS[4])
leave_wait(p, now)
p.otp_inflight = nil
p.counted = nil
-- The bot's own finish time when it wrote one; else now, when the sweeper found the request
-- (late by at most the time it took to become due).
local finished = rec.finished_at
if type(finished) ~= 'string' or not string.find(finished, '^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d') then
  rec.finished_at = iso(now)
  p.finished = now
end
rec.estimated_remaining_time = 0
rec._p = p
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARCHIVE_STREAM_MAX, '*', 'r', encode(rec))
return {'adopted', cur}
