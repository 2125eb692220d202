-- The helpers every record script shares (not a script by itself: no KEYS, no ARGV).
-- Included after _generated.lua, whose TERMINAL, RUNNING, WAITING, ALLOWED, OTP_EXPIRY_GRACE, LOG_MAX
-- and LOG_SLACK it uses.
-- All of them use Redis' clock (TIME) so that timestamps agree whichever machine calls them.
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
local EMPTY = '\1longrun:empty-array\1'
local function protect(raw)
  if not string.find(raw, '%[%s*%]') then return raw end
  local out, pos = {}, 1
  while true do
    local s = string.find(raw, '["%[]', pos)
    if not s then break end
    if string.sub(raw, s, s) == '"' then
      local e = s + 1
      while true do
        local q = string.find(raw, '["\\]', e)
        if not q then e = #raw break end
        if string.sub(raw, q, q) == '\\' then e = q + 2 else e = q break end
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
    text = string.gsub(text, '"\\u0001longrun:empty%-array\\u0001"', '[]')
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
-- or the prompt's expiry (the code's or another's) while waiting for the person.
-- When the bot stops waiting for the person's answer (the code's life, or the prompt's), if it said.
local function prompt_exp(p, status)
  if status == 'waiting_input' then return tonumber(p.input_exp) end
  return tonumber(p.otp_exp)
end

local function due_at(p, status, now, default_window)
  if WAITING[status] then
    local exp = prompt_exp(p, status)
    if exp then return exp + OTP_EXPIRY_GRACE end
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

-- The name a status is counted under: people waiting for an answer are counted per kind of
-- prompt ("waiting_input:captcha"), for the dashboard. The name last used is kept in p.counted
-- while it differs from the status, so that the count it went into is the one taken from.
local function counted_as(status, rec)
  local ir = rec.input_request
  if status == 'waiting_input' and type(ir) == 'table' and type(ir.kind) == 'string' then
    return 'waiting_input:' .. ir.kind
  end
  return status
end

-- A captcha's picture is published while the person looks at it, and no longer (every later
-- change would carry its tens of KiB to every watcher): set aside in _p, where a job asking
-- again finds it, and dropped when the request ends.
local function set_picture_aside(rec, p, status)
  local ir = rec.input_request
  if TERMINAL[status] then
    p.input_image = nil
    if type(ir) == 'table' then ir.image = nil end
  elseif status == 'waiting_input' then
    p.input_image = nil
  elseif type(ir) == 'table' and type(ir.image) == 'string' then
    p.input_image = ir.image
    ir.image = nil
  end
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

-- `log`: the request's log key (KEYS of the calling script), a list: every published record is
-- appended as published (its seq inside), at least the newest LOG_MAX kept (trimmed back to
-- them once LOG_SLACK more have come), with the record's TTL, so a page that reconnects resumes
-- from it without a gap (read by read_log.lua). A list of the very string published, trimmed
-- now and then: of the ways measured (a sorted set, a seq prefix, a trim per update), the one
-- that costs the update the least (bench/redis_costs.py). A script that passes no log leaves a
-- gap in it, which a resume detects (seqs not contiguous) and answers with a fresh snapshot.
local function save(key, rec, p, ttl, channel, now, log)
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
  if log then
    if redis.call('RPUSH', log, pub) > LOG_MAX + LOG_SLACK then redis.call('LTRIM', log, -LOG_MAX, -1) end
    redis.call('EXPIRE', log, ttl)
  end
  -- In a Redis Cluster the hub listens on the request's shard channel (same slot as its
  -- keys); every script that saves passes it as its last ARGV ('' when not clustered).
  local shard_channel = ARGV[#ARGV]
  if shard_channel ~= '' then redis.call('SPUBLISH', shard_channel, pub) end
  return full, pub
end
