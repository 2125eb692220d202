-- Claim a bot event's id for one request, so that it is applied once, and to that request only
-- (a signed body names no request: the id is bound to the first one it was sent for).
-- KEYS[1] the event id's key
-- ARGV[1] the request's hash, ARGV[2] TTL (s, the signature's window and more)
-- The key holds "<hash> <state>": claimed (being applied or applied: never again) or free
-- (refused: the same request may retry it).
-- Returns 'claimed' | 'replayed' (applied, or being applied) | 'other' (bound to another request)
local held = redis.call('GET', KEYS[1])
if held then
  local bound, state = string.match(held, '^(%S+) (%a+)$')
  if bound ~= ARGV[1] then return 'other' end
  if state ~= 'free' then return 'replayed' end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' claimed', 'EX', tonumber(ARGV[2]))
return 'claimed'
