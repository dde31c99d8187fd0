-- Issue 17 Redis ceiling, ack only: the ack part of redis_cycle.lua for
-- the count leased jobs whose leases end first. redis-benchmark cannot
-- carry tokens from a reserve call to an ack call, so this reads each
-- job's nonce back as its token: the ack work (HMGET, the nonce and lease
-- checks, ZREM, DEL) plus one ZRANGE that a real ack does not do.
-- KEYS: leased. ARGV: jp, count. Returns the number acked.
local leased = KEYS[1]
local jp, count = ARGV[1], tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1] .. string.format('%06d', tonumber(t[2])))
local ids = redis.call('ZRANGE', leased, 0, count - 1)
local acked = 0
for _, id in ipairs(ids) do
  local jk = jp .. id
  local token = redis.call('HGET', jk, 'n')
  local f = redis.call('HMGET', jk, 'q', 'n', 'k')
  if f[1] and f[2] == token then
    local le = redis.call('ZSCORE', leased, id)
    if le and tonumber(le) > now then
      redis.call('ZREM', leased, id)
      redis.call('DEL', jk)
      acked = acked + 1
    end
  end
end
return acked
