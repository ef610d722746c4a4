-- Deletes the lease if it still holds this term's value, and announces it.
-- KEYS: lease. ARGV: the term's value, the events channel, the group.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
