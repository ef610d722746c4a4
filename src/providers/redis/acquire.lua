-- Takes the lease if free, with a token above every earlier one — even after Redis lost its
-- data: `max(last token + 1, server time in µs)`.
-- KEYS: lease, token counter. ARGV: TTL in ms, the record without its token, and '1' if the
-- caller has seen this group's history (then a missing counter means Redis lost its data, and
-- the script answers {2, '', 0} without taking the lease: the caller waits one TTL first).
-- Answers {0, holder, ms the holder's lease has left} or {1, new record, TTL in ms}.
pcall(redis.replicate_commands) -- Redis < 5: allow writes after TIME (a no-op since 5)
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur, redis.call('PTTL', KEYS[1])} end
local last = redis.call('GET', KEYS[2])
if not last and ARGV[3] == '1' then return {2, '', 0} end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local token = (tonumber(last or '0') or 0) + 1
if now_us > token then token = now_us end
local tok = string.format('%.0f', token)
redis.call('SET', KEYS[2], tok)
local value = tok .. ' ' .. ARGV[2]
redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[1])
return {1, value, tonumber(ARGV[1])}
