-- An operator retries a failed request: the one way out of a terminal state. The record goes
-- back to pending (progress kept, error and code prompt cleared) and the person's page
-- follows it live.
-- KEYS[1] record, KEYS[2] the shard's counts, KEYS[3] the shard's in-flight index, KEYS[4] the log
-- ARGV[1] channel, ARGV[2] record TTL, ARGV[3] message, ARGV[4] hash
-- Returns {'ok', public} | {'conflict', public} (not failed) | {'missing'}
--!include _generated.lua
--!include _prelude.lua
local rec, p, cur = load_record(KEYS[1])
if not rec then return {'missing'} end
if cur ~= 'failed' then return {'conflict', public(rec)} end
local now = clock()
rec.status = 'pending'
rec.error = cjson.null
rec.finished_at = cjson.null
rec.retrying = false
rec.current_message = ARGV[3]
rec.message_key = 'queued'
p.finished = nil
p.deadline = nil
p.deadline_left = nil
-- It starts over: a new code will be sent, with the person's attempts and resends back.
rec.otp_data = cjson.null
rec.requires_otp = false
rec.requires_input = false
rec.input_request = cjson.null
p.otp_tries, p.otp_inflight, p.resends, p.resend_at, p.otp_exp = nil, nil, nil, nil, nil
p.input_id, p.input_tries, p.input_exp = nil, nil, nil
p.revived = (tonumber(p.revived) or 0) + 1
recount(KEYS[2], 'failed', 'pending', slug_of(rec))
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]) / 2, ARGV[4])
local _, pub = save(KEYS[1], rec, p, tonumber(ARGV[2]), ARGV[1], now, KEYS[4])
return {'ok', pub}
