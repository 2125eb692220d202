-- Merge a change into a record, enforcing the state machine, in one round trip.
-- KEYS[1] record, KEYS[2] archive stream, KEYS[3] in-flight index, KEYS[4] the person's pending
-- answer (a code, or {id, value}), KEYS[5] the shard's counts, KEYS[6] the shard's waits for the
-- person, KEYS[7] the log
-- ARGV[1] patch: JSON object of public fields (status, step, progress, current_message,
--         otp_data, result_data, error, estimated_duration, ...)
-- ARGV[2] control: JSON object
--         ttl        record TTL (s)
--         expect     list of statuses the record must be in, else 'conflict'
--         deadline   seconds from now until the service deadline (set once)
--         heartbeat  seconds the bot may stay silent
--         otp        {expires_in, resend_in, max_attempts, exhausted} for an OTP prompt;
--                    exhausted: the patch applied instead (a failure) when every code is used up
--         input      {id, expires_in, max_attempts, exhausted} for another prompt (patch.input_request);
--                    the answers are counted per prompt id, exhausted as for the code
--         checking   message shown when an early code is checked at once
--         sweep      only apply if the request is overdue (the sweeper)
--         keepalive  a request still pending (queued): refresh its TTL, nothing else
--         private    fields merged into _p
-- ARGV[3] channel, ARGV[4] hash
-- Returns {'ok', public, otp_ready ('1'/'0'), previous status} | {'missing'} |
--         {'terminal', public} | {'conflict', public} | {'not_due', public}
--!include _generated.lua
--!include _prelude.lua
local rec, p, cur = load_record(KEYS[1])
if not rec then return {'missing'} end
if TERMINAL[cur] then return {'terminal', public(rec)} end
local patch = decode(ARGV[1]) or {}
local ctl = cjson.decode(ARGV[2])
local ttl = tonumber(ctl.ttl)
local now = clock()
local default_window = tonumber(ctl.heartbeat) or 90

if type(ctl.expect) == 'table' then
  local found = false
  for _, s in ipairs(ctl.expect) do if s == cur then found = true end end
  if not found then return {'conflict', public(rec)} end
end
if ctl.sweep and RUNNING[cur] then
  -- Changed since our last save, and not past its deadline: an old-style bot is at work.
  -- That counts as its heartbeat (a silent one is failed one window later).
  local fp = fingerprint(rec)
  local past_deadline = tonumber(p.deadline) and tonumber(p.deadline) <= now
  if cur == 'processing' and p.seen and p.seen ~= fp and not past_deadline then
    p.hb = now
    p.seen = fp
    rec._p = p
    redis.call('SET', KEYS[1], encode(rec), 'KEEPTTL')
    rec._p = nil
    redis.call('ZADD', KEYS[3], due_at(p, cur, now, default_window), ARGV[4])
    return {'not_due', public(rec)}
  end
  if due_at(p, cur, now, default_window) > now then return {'not_due', public(rec)} end
end
if ctl.keepalive then
  -- Waiting in a long queue is not expiring: the record lives on until a worker takes it.
  if cur ~= 'pending' then return {'conflict', public(rec)} end
  redis.call('EXPIRE', KEYS[1], ttl)
  redis.call('EXPIRE', KEYS[7], ttl)
  redis.call('ZADD', KEYS[3], now + ttl / 2, ARGV[4])
  return {'ok', public(rec), '0', cur}
end

local new = patch.status
if type(new) ~= 'string' then new = cur end
if new ~= cur and not ALLOWED[cur][new] then return {'conflict', public(rec)} end

local old_progress = tonumber(rec.progress) or 0
for k, v in pairs(patch) do
  if k ~= '_p' and k ~= 'seq' and k ~= 'hash' and k ~= 'created_at' then rec[k] = v end
end
if type(ctl.private) == 'table' then
  for k, v in pairs(ctl.private) do p[k] = v end
end

-- A code the person typed before the bot asked for it is checked at once.
local otp_ready = '0'
if new == 'waiting_otp' and redis.call('EXISTS', KEYS[4]) == 1 then
  new = 'processing'
  rec.current_message = ctl.checking or rec.current_message
  rec.message_key = 'checking'
  otp_ready = '1'
end
-- Every code used up (and none waiting, above): no one may type another, so waiting would
-- only end in the sweeper's "not entered in time". Fail now, saying why.
if new == 'waiting_otp' and type(ctl.otp) == 'table' and type(ctl.otp.exhausted) == 'table'
    and (tonumber(p.otp_tries) or 0) >= (tonumber(ctl.otp.max_attempts) or math.huge) then
  new = 'failed'
  for k, v in pairs(ctl.otp.exhausted) do rec[k] = v end
end
-- A new prompt starts its own count of answers; the same one asked again goes on counting.
if new == 'waiting_input' and type(ctl.input) == 'table' then
  if p.input_id ~= ctl.input.id then
    p.input_id = ctl.input.id
    p.input_tries = 0
  end
  if type(ctl.input.exhausted) == 'table'
      and (tonumber(p.input_tries) or 0) >= (tonumber(ctl.input.max_attempts) or math.huge) then
    new = 'failed'
    for k, v in pairs(ctl.input.exhausted) do rec[k] = v end
  end
end
if WAITING[new] or TERMINAL[new] then p.otp_inflight = nil end
rec.status = new
set_picture_aside(rec, p, new)

if RUNNING[new] then
  local np = math.floor(tonumber(rec.progress) or old_progress)
  if np > 100 then np = 100 end
  if np < old_progress then np = old_progress end
  rec.progress = np
  if not p.started then
    p.started = now
    rec.started_at = iso(now)
  end
  if ctl.deadline and not p.deadline and not p.deadline_left then p.deadline = now + tonumber(ctl.deadline) end
  if ctl.heartbeat then p.hbw = tonumber(ctl.heartbeat) end
  p.hb = now
elseif new == 'completed' then
  rec.progress = 100
else
  local np = math.floor(tonumber(rec.progress) or 0)
  if np < 0 then np = 0 elseif np > 100 then np = 100 end
  rec.progress = np
end

if type(p.steps) ~= 'table' then p.steps = {} end
-- A step is timed from the first update that shows it while running.
if type(rec.step) == 'string' and rec.step ~= '' and RUNNING[new] and not p.steps[rec.step] then
  p.steps[rec.step] = now
  if type(rec.steps) ~= 'table' then rec.steps = {} end
  rec.steps[rec.step] = math.floor((now - (p.started or now)) * 10 + 0.5) / 10
end

if new == 'waiting_otp' then
  rec.requires_otp = true
  if type(ctl.otp) == 'table' then
    local od = rec.otp_data
    if type(od) ~= 'table' then od = {} end
    if ctl.otp.expires_in then
      p.otp_exp = now + tonumber(ctl.otp.expires_in)
      od.expires_at = iso(p.otp_exp)
    end
    if ctl.otp.resend_in then
      p.resend_at = now + tonumber(ctl.otp.resend_in)
      od.resend_available_at = iso(p.resend_at)
    end
    if ctl.otp.max_attempts then
      local ours = tonumber(ctl.otp.max_attempts) - (tonumber(p.otp_tries) or 0)
      local bots = tonumber(od.attempts_left)
      if bots == nil or ours < bots then od.attempts_left = math.max(0, ours) end
    end
    rec.otp_data = od
  end
else
  rec.requires_otp = false
end
if new == 'waiting_input' then
  rec.requires_input = true
  local ir = rec.input_request
  if type(ctl.input) == 'table' and type(ir) == 'table' then
    p.input_exp = now + (tonumber(ctl.input.expires_in) or 120)
    ir.expires_at = iso(p.input_exp)
    local ours = (tonumber(ctl.input.max_attempts) or 3) - (tonumber(p.input_tries) or 0)
    local bots = tonumber(ir.attempts_left)
    if bots == nil or ours < bots then ir.attempts_left = math.max(0, ours) end
  end
else
  rec.requires_input = false
end
if WAITING[new] then enter_wait(p, now) else leave_wait(p, now) end

if patch.estimated_remaining_time == nil then
  if RUNNING[new] and p.started then
    local worked = now - p.started - (tonumber(p.waited) or 0)
    local est = tonumber(rec.estimated_duration) or 0
    rec.estimated_remaining_time = math.max(0, math.floor(est - worked + 0.5))
  elseif TERMINAL[new] then
    rec.estimated_remaining_time = 0
  end
end

local now_as = counted_as(new, rec)
recount(KEYS[5], p.counted or cur, now_as, slug_of(rec))
if now_as ~= new then p.counted = now_as else p.counted = nil end
if WAITING[new] then
  redis.call('ZADD', KEYS[6], 'NX', p.wait_since or now, ARGV[4])
else
  redis.call('ZREM', KEYS[6], ARGV[4])
end

local full, pub
if TERMINAL[new] then
  rec.finished_at = iso(now)
  rec.estimated_remaining_time = 0
  p.finished = now
  redis.call('ZREM', KEYS[3], ARGV[4])
  redis.call('DEL', KEYS[4])
  full, pub = save(KEYS[1], rec, p, ttl, ARGV[3], now, KEYS[7])
  -- Bounded: should the archive stay away for a very long time, the oldest are dropped
  -- rather than Redis running out of memory.
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARCHIVE_STREAM_MAX, '*', 'r', full)
else
  if RUNNING[new] then
    redis.call('ZADD', KEYS[3], due_at(p, new, now, default_window), ARGV[4])
  end
  full, pub = save(KEYS[1], rec, p, ttl, ARGV[3], now, KEYS[7])
end
return {'ok', pub, otp_ready, cur}
