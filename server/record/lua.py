"""The Lua scripts: every change to a record is one of these, atomic, in one round trip.

Each script's header comment says what every ``KEYS[i]`` and ``ARGV[i]`` holds.
"""

from __future__ import annotations

from server.domain.status import lua_transition_table
from server.record.keys import ARCHIVE_STREAM_MAX, OTP_EXPIRY_GRACE

# ---------------------------------------------------------------------------
# Lua. Every script starts with _PRELUDE; all of them use Redis' clock (TIME) so
# that timestamps agree whichever machine calls them.

_PRELUDE = (
    """
local TERMINAL = {completed = true, failed = true, cancelled = true}
local RUNNING = {processing = true, waiting_otp = true}
local ALLOWED = """
    + lua_transition_table()
    + """
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end

-- epoch seconds -> ISO 8601 UTC (days-to-civil, H. Hinnant); Redis' Lua has no os.date.
local function iso(ts)
  local secs = math.floor(ts)
  local ms = math.floor((ts - secs) * 1000)
  local days = math.floor(secs / 86400)
  local rem = secs - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp + 3
  if mp >= 10 then m = mp - 9 end
  if m <= 2 then y = y + 1 end
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%03dZ', y, m, d,
    math.floor(rem / 3600), math.floor((rem % 3600) / 60), rem % 60, ms)
end

-- Redis' cjson decodes [] and {} alike and encodes both as {}. Empty arrays (a bot's
-- "fines": []) are swapped for a sentinel string before decoding and swapped back after
-- encoding; the scan skips JSON strings, so "[]" inside text is left alone.
local EMPTY = '\\1longrun:empty-array\\1'
local function protect(raw)
  if not string.find(raw, '%[%s*%]') then return raw end
  local out, pos = {}, 1
  while true do
    local s = string.find(raw, '["%[]', pos)
    if not s then break end
    if string.sub(raw, s, s) == '"' then
      local e = s + 1
      while true do
        local q = string.find(raw, '["\\\\]', e)
        if not q then e = #raw break end
        if string.sub(raw, q, q) == '\\\\' then e = q + 2 else e = q break end
      end
      out[#out + 1] = string.sub(raw, pos, e)
      pos = e + 1
    else
      local _, close = string.find(raw, '^%[%s*%]', s)
      if close then
        out[#out + 1] = string.sub(raw, pos, s - 1) .. '"' .. EMPTY .. '"'
        pos = close + 1
      else
        out[#out + 1] = string.sub(raw, pos, s)
        pos = s + 1
      end
    end
  end
  out[#out + 1] = string.sub(raw, pos)
  return table.concat(out)
end

local function encode(value)
  local text = cjson.encode(value)
  if string.find(text, 'longrun:empty-array', 1, true) then
    text = string.gsub(text, '"\\\\u0001longrun:empty%-array\\\\u0001"', '[]')
  end
  return text
end

local function decode(raw)
  local ok, v = pcall(cjson.decode, protect(raw))
  if ok and type(v) == 'table' then return v end
  return nil
end

local function private(rec)
  local p = rec._p
  if type(p) ~= 'table' then p = {} end
  rec._p = nil
  return p
end

local function public(rec)
  return encode(rec)
end

-- Old bots may leave odd statuses behind; treat anything unknown as running.
local function status_of(rec)
  local s = rec.status
  if type(s) ~= 'string' or ALLOWED[s] == nil then return 'processing' end
  return s
end

-- The record at `key` with its private part and status; nil when absent or unreadable.
local function load_record(key)
  local raw = redis.call('GET', key)
  if not raw then return nil end
  local rec = decode(raw)
  if not rec then return nil end
  local p = private(rec)
  return rec, p, status_of(rec)
end

-- Time spent waiting for the person does not count against the deadline or the ETA.
local function enter_wait(p, now)
  if not p.wait_since then p.wait_since = now end
  if p.deadline and not p.deadline_left then p.deadline_left = p.deadline - now end
end

local function leave_wait(p, now)
  if p.wait_since then
    p.waited = (tonumber(p.waited) or 0) + (now - p.wait_since)
    p.wait_since = nil
  end
  if p.deadline_left then
    p.deadline = now + p.deadline_left
    p.deadline_left = nil
  end
end

-- When the sweeper should look at a running request: the next heartbeat, the deadline,
-- or the OTP's expiry while waiting for the person.
local function due_at(p, status, now, default_window)
  if status == 'waiting_otp' then
    if p.otp_exp then return p.otp_exp + """
    + repr(OTP_EXPIRY_GRACE)
    + """ end
    return now + (tonumber(p.hbw) or default_window)
  end
  local due = (tonumber(p.hb) or now) + (tonumber(p.hbw) or default_window)
  if p.deadline and p.deadline < due then due = p.deadline end
  return due
end

-- Unfinished requests by status and service, for the dashboard: moved on every transition.
local function recount(key, old, new, slug)
  if old == new then return end
  if old and not TERMINAL[old] then redis.call('HINCRBY', key, old .. '|' .. slug, -1) end
  if new and not TERMINAL[new] then redis.call('HINCRBY', key, new .. '|' .. slug, 1) end
end

local function slug_of(rec)
  if type(rec.service_slug) == 'string' then return rec.service_slug end
  return '?'
end

-- What an old-style bot changes when it reports (GET, edit, SETEX, PUBLISH: no script runs,
-- so no heartbeat is counted): a short digest, kept in _p at every save of ours.
local function fingerprint(rec)
  local text = tostring(rec.progress) .. '|' .. tostring(rec.step) .. '|' .. tostring(rec.current_message)
  return string.sub(redis.sha1hex(text), 1, 10)
end

local function save(key, rec, p, ttl, channel, now)
  p.seen = fingerprint(rec)
  -- An old-style bot may rewrite the record without `seq`: it then goes on from the clock (ms),
  -- past every seq published before, so sockets and pages never take the next change as stale.
  local seq = tonumber(rec.seq)
  rec.seq = seq and seq + 1 or math.floor(now * 1000)
  rec.updated_at = iso(now)
  rec.expires_at = iso(now + ttl)
  local pub = public(rec)
  rec._p = p
  local full = encode(rec)
  rec._p = nil
  redis.call('SET', key, full, 'EX', ttl)
  redis.call('PUBLISH', channel, pub)
  -- In a Redis Cluster the hub listens on the request's shard channel (same slot as its
  -- keys); every script that saves passes it as its last ARGV ('' when not clustered).
  local shard_channel = ARGV[#ARGV]
  if shard_channel ~= '' then redis.call('SPUBLISH', shard_channel, pub) end
  return full, pub
end
"""
)

CREATE_SCRIPT = (
    _PRELUDE
    + """
-- Create a request record.
-- KEYS[1] record, KEYS[2] the shard's counts, KEYS[3] the shard's in-flight index
-- ARGV[1] record JSON (public fields plus _p), ARGV[2] ttl (s), ARGV[3] channel, ARGV[4] hash
-- Returns {'ok', public JSON} or {'exists'}.
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local rec = decode(ARGV[1])
local p = private(rec)
local now = clock()
rec.created_at = iso(now)
rec.status = 'pending'
rec.seq = 0
p.created = now
recount(KEYS[2], nil, 'pending', slug_of(rec))
-- A queued request is looked at by the sweeper before its TTL could lapse (see keepalive).
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]) / 2, ARGV[4])
local _, pub = save(KEYS[1], rec, p, tonumber(ARGV[2]), ARGV[3], now)
return {'ok', pub}
"""
)

UPDATE_SCRIPT = (
    _PRELUDE
    + """
-- Merge a change into a record, enforcing the state machine, in one round trip.
-- KEYS[1] record, KEYS[2] archive stream, KEYS[3] in-flight index, KEYS[4] pending OTP code,
-- KEYS[5] the shard's counts, KEYS[6] the shard's OTP waits
-- ARGV[1] patch: JSON object of public fields (status, step, progress, current_message,
--         otp_data, result_data, error, estimated_duration, ...)
-- ARGV[2] control: JSON object
--         ttl        record TTL (s)
--         expect     list of statuses the record must be in, else 'conflict'
--         deadline   seconds from now until the service deadline (set once)
--         heartbeat  seconds the bot may stay silent
--         otp        {expires_in, resend_in, max_attempts, exhausted} for an OTP prompt;
--                    exhausted: the patch applied instead (a failure) when every code is used up
--         checking   message shown when an early code is checked at once
--         sweep      only apply if the request is overdue (the sweeper)
--         keepalive  a request still pending (queued): refresh its TTL, nothing else
--         private    fields merged into _p
-- ARGV[3] channel, ARGV[4] hash
-- Returns {'ok', public, otp_ready ('1'/'0'), previous status} | {'missing'} |
--         {'terminal', public} | {'conflict', public} | {'not_due', public}
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
if new == 'waiting_otp' or TERMINAL[new] then p.otp_inflight = nil end
rec.status = new

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
  enter_wait(p, now)
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
  leave_wait(p, now)
end

if patch.estimated_remaining_time == nil then
  if RUNNING[new] and p.started then
    local worked = now - p.started - (tonumber(p.waited) or 0)
    local est = tonumber(rec.estimated_duration) or 0
    rec.estimated_remaining_time = math.max(0, math.floor(est - worked + 0.5))
  elseif TERMINAL[new] then
    rec.estimated_remaining_time = 0
  end
end

recount(KEYS[5], cur, new, slug_of(rec))
if new == 'waiting_otp' then
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
  full, pub = save(KEYS[1], rec, p, ttl, ARGV[3], now)
  -- Bounded: should the archive stay away for a very long time, the oldest are dropped
  -- rather than Redis running out of memory.
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', '"""
    + str(ARCHIVE_STREAM_MAX)
    + """', '*', 'r', full)
else
  if RUNNING[new] then
    redis.call('ZADD', KEYS[3], due_at(p, new, now, default_window), ARGV[4])
  end
  full, pub = save(KEYS[1], rec, p, ttl, ARGV[3], now)
end
return {'ok', pub, otp_ready, cur}
"""
)

SUBMIT_OTP_SCRIPT = (
    _PRELUDE
    + """
-- Accept a one-time code from the person; the code goes to its own short-lived key only.
-- KEYS[1] record, KEYS[2] pending OTP code, KEYS[3] in-flight index, KEYS[4] the shard's counts,
-- KEYS[5] the shard's OTP waits
-- ARGV[1] code, ARGV[2] code TTL (s), ARGV[3] max submissions per request, ARGV[4] channel,
-- ARGV[5] record TTL, ARGV[6] '1' if the service may ask for a code (an early one is kept),
-- ARGV[7] message while the code is checked, ARGV[8] hash, ARGV[9] heartbeat window
-- Returns {'accepted', public, n} (enqueue the check) | {'early', public} (kept for when the
-- bot asks) | {'busy', public} | {'exhausted', public} | {'conflict', public} | {'missing'}
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
  local _, pub = save(KEYS[1], rec, p, tonumber(ARGV[5]), ARGV[4], now)
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
local _, pub = save(KEYS[1], rec, p, tonumber(ARGV[5]), ARGV[4], now)
return {'accepted', pub, tostring(p.otp_tries)}
"""
)

RESEND_OTP_SCRIPT = (
    _PRELUDE
    + """
-- Ask for a new code, no sooner than the resend time and no more than max times.
-- KEYS[1] record
-- ARGV[1] channel, ARGV[2] record TTL, ARGV[3] seconds until the next resend,
-- ARGV[4] max resends, ARGV[5] message
-- Returns {'ok', public, n} | {'too_early', public, seconds} | {'exhausted', public} |
--         {'conflict', public} | {'missing'}
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
local _, pub = save(KEYS[1], rec, p, tonumber(ARGV[2]), ARGV[1], now)
return {'ok', pub, tostring(p.resends)}
"""
)

ACK_ARCHIVED_SCRIPT = """
-- Forget archived entries: acknowledge them and delete them from the stream in one step, so
-- that what is left in a stream is exactly the archive's backlog (a crash between a separate
-- XACK and XDEL would leave acknowledged entries counted as waiting forever).
-- KEYS[1] archive stream
-- ARGV[1] consumer group, ARGV[2..] entry ids (at most a few thousand: Lua's unpack limit)
-- Returns the number of entries acknowledged.
local n = redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, 2))
redis.call('XDEL', KEYS[1], unpack(ARGV, 2))
return n
"""

ADOPT_TERMINAL_SCRIPT = (
    _PRELUDE
    + """
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
if redis.call('ZSCORE', KEYS[6], ARGV[1]) then was = 'waiting_otp' elseif p.started then was = 'processing' end
recount(KEYS[5], was, cur, slug_of(rec))
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('DEL', KEYS[4])
leave_wait(p, now)
p.otp_inflight = nil
-- The bot's own finish time when it wrote one; else now, when the sweeper found the request
-- (late by at most the time it took to become due).
local finished = rec.finished_at
if type(finished) ~= 'string' or not string.find(finished, '^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d') then
  rec.finished_at = iso(now)
  p.finished = now
end
rec.estimated_remaining_time = 0
rec._p = p
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '"""
    + str(ARCHIVE_STREAM_MAX)
    + """', '*', 'r', encode(rec))
return {'adopted', cur}
"""
)

REVIVE_SCRIPT = (
    _PRELUDE
    + """
-- An operator retries a failed request: the one way out of a terminal state. The record goes
-- back to pending (progress kept, error and code prompt cleared) and the person's page
-- follows it live.
-- KEYS[1] record, KEYS[2] the shard's counts, KEYS[3] the shard's in-flight index
-- ARGV[1] channel, ARGV[2] record TTL, ARGV[3] message, ARGV[4] hash
-- Returns {'ok', public} | {'conflict', public} (not failed) | {'missing'}
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
p.otp_tries, p.otp_inflight, p.resends, p.resend_at, p.otp_exp = nil, nil, nil, nil, nil
p.revived = (tonumber(p.revived) or 0) + 1
recount(KEYS[2], 'failed', 'pending', slug_of(rec))
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]) / 2, ARGV[4])
local _, pub = save(KEYS[1], rec, p, tonumber(ARGV[2]), ARGV[1], now)
return {'ok', pub}
"""
)

RELEASE_LOCK_SCRIPT = """
-- Release a lock only if we still hold it (it may have expired and been taken by another).
-- KEYS[1] lock, ARGV[1] the holder's token. Returns 1 if released.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

RATE_LIMIT_SCRIPT = """
-- GCRA: allow `burst` calls at once, refilling one every `interval` seconds.
-- KEYS[1] limiter state (theoretical arrival time, epoch seconds)
-- ARGV[1] interval (s), ARGV[2] burst, ARGV[3] cost (calls counted at once; default 1)
-- Returns {1, 0} when allowed, {0, milliseconds until allowed} when not.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval * (tonumber(ARGV[3]) or 1)
local allow_at = new_tat - burst * interval
if allow_at > now then return {0, math.ceil((allow_at - now) * 1000)} end
-- at least 1 ms: a generous limit (say 10^8 per second) has a sub-ms interval, and PX 0 is an error
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', math.max(1, math.ceil((new_tat - now) * 1000)))
return {1, 0}
"""
