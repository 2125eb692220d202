-- Ask for a new code, no sooner than the resend time and no more than max times.
-- KEYS[1] record, KEYS[2] the log
-- ARGV[1] channel, ARGV[2] record TTL, ARGV[3] seconds until the next resend,
-- ARGV[4] max resends, ARGV[5] message
-- Returns {'ok', public, n} | {'too_early', public, seconds} | {'exhausted', public} |
--         {'conflict', public} | {'missing'}
--!include _generated.lua
--!include _prelude.lua
local rec, p, cur = load_record(KEYS[1])
if not rec then return {'missing'} end
if cur ~= 'waiting_otp' or p.otp_inflight then return {'conflict', public(rec)} end
local now = clock()
if p.resend_at and now < tonumber(p.resend_at) then
  return {'too_early', public(rec), tostring(math.ceil(tonumber(p.resend_at) - now))}
end
local n = tonumber(p.resends) or 0
if n >= tonumber(ARGV[4]) then return {'exhausted', public(rec)} end
p.resends = n + 1
p.resend_at = now + tonumber(ARGV[3])
local od = rec.otp_data
if type(od) ~= 'table' then od = {} end
od.resend_available_at = iso(p.resend_at)
od.error = nil
rec.otp_data = od
rec.current_message = ARGV[5]
rec.message_key = 'resending'
local _, pub = save(KEYS[1], rec, p, tonumber(ARGV[2]), ARGV[1], now, KEYS[2])
return {'ok', pub, tostring(p.resends)}
