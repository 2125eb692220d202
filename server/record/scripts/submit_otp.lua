-- Accept a one-time code from the person; the code goes to its own short-lived key only.
-- KEYS[1] record, KEYS[2] pending OTP code, KEYS[3] in-flight index, KEYS[4] the shard's counts,
-- KEYS[5] the shard's OTP waits, KEYS[6] the log
-- ARGV[1] code, ARGV[2] code TTL (s), ARGV[3] max submissions per request, ARGV[4] channel,
-- ARGV[5] record TTL, ARGV[6] '1' if the service may ask for a code (an early one is kept),
-- ARGV[7] message while the code is checked, ARGV[8] hash, ARGV[9] heartbeat window
-- Returns {'accepted', public, n} (enqueue the check) | {'early', public} (kept for when the
-- bot asks) | {'busy', public} | {'exhausted', public} | {'conflict', public} | {'missing'}
--!include _generated.lua
--!include _prelude.lua
local rec, p, cur = load_record(KEYS[1])
if not rec then return {'missing'} end
-- The cap answers first: once every code is used up the request has failed for that very
-- reason, and "too many attempts" (429) is the true answer, not "not waiting" (409).
local tries = tonumber(p.otp_tries) or 0
local max = tonumber(ARGV[3])
if tries >= max then return {'exhausted', public(rec)} end
if TERMINAL[cur] then return {'conflict', public(rec)} end
if p.otp_inflight or redis.call('EXISTS', KEYS[2]) == 1 then return {'busy', public(rec)} end
local now = clock()
local early = cur == 'processing' and ARGV[6] == '1'
if cur ~= 'waiting_otp' and not early then return {'conflict', public(rec)} end

redis.call('SET', KEYS[2], ARGV[1], 'EX', tonumber(ARGV[2]))
p.otp_tries = tries + 1
p.otp_inflight = 1
local od = rec.otp_data
if type(od) ~= 'table' then od = {} end
local left = max - p.otp_tries
local bots = tonumber(od.attempts_left)
if bots ~= nil and bots - 1 < left then left = bots - 1 end
od.attempts_left = math.max(0, left)
od.error = nil
rec.otp_data = od
if early then
  local _, pub = save(KEYS[1], rec, p, tonumber(ARGV[5]), ARGV[4], now, KEYS[6])
  return {'early', pub}
end
rec.status = 'processing'
rec.requires_otp = false
rec.current_message = ARGV[7]
rec.message_key = 'checking'
recount(KEYS[4], 'waiting_otp', 'processing', slug_of(rec))
redis.call('ZREM', KEYS[5], ARGV[8])
leave_wait(p, now)
p.hb = now
redis.call('ZADD', KEYS[3], due_at(p, 'processing', now, tonumber(ARGV[9])), ARGV[8])
local _, pub = save(KEYS[1], rec, p, tonumber(ARGV[5]), ARGV[4], now, KEYS[6])
return {'accepted', pub, tostring(p.otp_tries)}
