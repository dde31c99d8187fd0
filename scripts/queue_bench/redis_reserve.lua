-- Issue 17 Redis ceiling, reserve only: the reserve part of
-- redis_cycle.lua (lease the count earliest due jobs for 60 s).
-- KEYS: ready, leased. ARGV: jp, count, nonce. Returns the number leased.
local ready, leased = KEYS[1], KEYS[2]
local jp, count, nonce = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local t = redis.call('TIME')
local nowS = t[1] .. string.format('%06d', tonumber(t[2]))
local untilS = string.format('%d', tonumber(nowS) + 60000000)
local due = redis.call('ZRANGEBYSCORE', ready, '-inf', nowS, 'LIMIT', 0, count)
for _, id in ipairs(due) do
  local jk = jp .. id
  redis.call('HMGET', jk, 'p', 'a', 'm', 'e', 'k', 'q')
  redis.call('ZREM', ready, id)
  redis.call('HINCRBY', jk, 'a', 1)
  redis.call('HSET', jk, 'n', nonce)
  redis.call('ZADD', leased, untilS, id)
end
return #due
