-- Extends the lease if it still holds exactly this term's value.
-- KEYS: lease. ARGV: the term's value, TTL in ms.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, ''}
end
return {0, cur or ''}
