-- Takes the lease if free, with a token above every earlier one — even after Redis lost its
-- data: `max(last token + 1, server time in µs)`.
-- KEYS: lease, token counter. ARGV: TTL in ms, the record without its token.
pcall(redis.replicate_commands) -- Redis < 5: allow writes after TIME (a no-op since 5)
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local token = (tonumber(redis.call('GET', KEYS[2]) or '0') or 0) + 1
if now_us > token then token = now_us end
local tok = string.format('%.0f', token)
redis.call('SET', KEYS[2], tok)
local value = tok .. ' ' .. ARGV[2]
redis.call('SET', KEYS[1], value, 'NX', 'PX', ARGV[1])
return {1, value}
