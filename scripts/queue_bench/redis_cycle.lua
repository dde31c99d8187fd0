-- Issue 17 Redis ceiling: `count` full queue cycles in one EVALSHA:
-- enqueue count jobs, reserve the count earliest due jobs, ack them.
-- The minimal form of echorelay-store-redis's scripts (src/scripts.rs):
-- job hashes `jp .. id` with the same fields, a `ready` zset scored by
-- due time and a `leased` zset scored by lease end, all keys under one
-- hash tag; times in microseconds from the server's TIME. What is left
-- out: de-duplication keys, the notification PUBLISH, expired-lease
-- recovery and the dead-letter path, the checks for corrupt records.
--
-- KEYS: ready, leased. ARGV: jp (job key prefix), id base (unique per
-- call: redis-benchmark's __rand_int__), count, payload, nonce.
-- Returns the number of jobs acked (count, unless something is wrong).
local ready, leased = KEYS[1], KEYS[2]
local jp, base, count, payload, nonce = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5]
local t = redis.call('TIME')
local nowS = t[1] .. string.format('%06d', tonumber(t[2]))
local now = tonumber(nowS)
local untilS = string.format('%d', now + 60000000)
-- enqueue
for i = 1, count do
  local id = base .. '-' .. i
  redis.call('HSET', jp .. id, 'q', 'bench', 'p', payload, 'a', '0', 'm', '5', 'e', nowS, 'k', '')
  redis.call('ZADD', ready, nowS, id)
end
-- reserve
local due = redis.call('ZRANGEBYSCORE', ready, '-inf', nowS, 'LIMIT', 0, count)
for _, id in ipairs(due) do
  local jk = jp .. id
  redis.call('HMGET', jk, 'p', 'a', 'm', 'e', 'k', 'q')
  redis.call('ZREM', ready, id)
  redis.call('HINCRBY', jk, 'a', 1)
  redis.call('HSET', jk, 'n', nonce)
  redis.call('ZADD', leased, untilS, id)
end
-- ack
local acked = 0
for _, id in ipairs(due) do
  local jk = jp .. id
  local f = redis.call('HMGET', jk, 'q', 'n', 'k')
  if f[1] and f[2] == nonce then
    local le = redis.call('ZSCORE', leased, id)
    if le and tonumber(le) > now then
      redis.call('ZREM', leased, id)
      redis.call('DEL', jk)
      acked = acked + 1
    end
  end
end
return acked
