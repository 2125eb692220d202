-- Accept the person's answer, the one-time code or the answer to another prompt (captcha,
-- choice, ...); the answer goes to its own short-lived key only, never into the record.
-- KEYS[1] record, KEYS[2] the pending answer, KEYS[3] in-flight index, KEYS[4] the shard's counts,
-- KEYS[5] the shard's waits for the person, KEYS[6] the log
-- ARGV[1] the answer (the code; for another prompt the JSON {id, value}), ARGV[2] its TTL (s),
-- ARGV[3] max submissions (per request for the code, per prompt for the others), ARGV[4] channel,
-- ARGV[5] record TTL, ARGV[6] '1' if the service may ask for a code (an early one is kept),
-- ARGV[7] message while the answer is checked, ARGV[8] hash, ARGV[9] heartbeat window,
-- ARGV[10] the prompt's id ('' for the code), ARGV[11] shard channel
-- Returns {'accepted', public, n} (enqueue the check) | {'early', public} (kept for when the
-- bot asks) | {'busy', public} | {'exhausted', public} | {'conflict', public} | {'expired', public}
-- (the prompt's time is up) | {'missing'}
--!include _generated.lua
--!include _prelude.lua
local rec, p, cur = load_record(KEYS[1])
if not rec then return {'missing'} end
local prompt_id = ARGV[10]
local asking = prompt_id ~= ''
local waiting, field, counter = 'waiting_otp', 'otp_data', 'otp_tries'
if asking then waiting, field, counter = 'waiting_input', 'input_request', 'input_tries' end
-- The cap answers first: once every code is used up the request has failed for that very
-- reason, and "too many attempts" (429) is the true answer, not "not waiting" (409).
local tries = tonumber(p[counter]) or 0
if asking and p.input_id ~= prompt_id then tries = 0 end
local max = tonumber(ARGV[3])
if tries >= max then return {'exhausted', public(rec)} end
if TERMINAL[cur] then return {'conflict', public(rec)} end
if p.otp_inflight or redis.call('EXISTS', KEYS[2]) == 1 then return {'busy', public(rec)} end
local now = clock()
-- Only a code can come early: the person may get the text before we hear that it was sent.
local early = not asking and cur == 'processing' and ARGV[6] == '1'
if cur ~= waiting and not early then return {'conflict', public(rec)} end
local od = rec[field]
if type(od) ~= 'table' then od = {} end
if asking and od.id ~= prompt_id then return {'conflict', public(rec)} end
-- The bot said until when it waits (the code's life, or the prompt's): an answer after it
-- would come too late to the bot, and be counted as an attempt. The sweeper fails the request
-- a grace later.
if not early then
  local exp = prompt_exp(p, waiting)
  if exp and now > exp then return {'expired', public(rec)} end
end

redis.call('SET', KEYS[2], ARGV[1], 'EX', tonumber(ARGV[2]))
p[counter] = tries + 1
p.otp_inflight = 1
local left = max - p[counter]
local bots = tonumber(od.attempts_left)
if bots ~= nil and bots - 1 < left then left = bots - 1 end
od.attempts_left = math.max(0, left)
od.error = nil
rec[field] = od
if early then
  local _, pub = save(KEYS[1], rec, p, tonumber(ARGV[5]), ARGV[4], now, KEYS[6])
  return {'early', pub}
end
rec.status = 'processing'
set_picture_aside(rec, p, 'processing')
rec.requires_otp = false
rec.requires_input = false
rec.current_message = ARGV[7]
rec.message_key = asking and 'checking_input' or 'checking'
recount(KEYS[4], p.counted or waiting, 'processing', slug_of(rec))
p.counted = nil
redis.call('ZREM', KEYS[5], ARGV[8])
leave_wait(p, now)
p.hb = now
redis.call('ZADD', KEYS[3], due_at(p, 'processing', now, tonumber(ARGV[9])), ARGV[8])
local _, pub = save(KEYS[1], rec, p, tonumber(ARGV[5]), ARGV[4], now, KEYS[6])
return {'accepted', pub, tostring(p[counter])}
