-- Issue 17 Redis ceiling, enqueue only: the enqueue part of
-- redis_cycle.lua (count jobs, due now). KEYS: ready. ARGV: jp, id base,
-- count, payload. Returns count.
local ready = KEYS[1]
local jp, base, count, payload = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local t = redis.call('TIME')
local nowS = t[1] .. string.format('%06d', tonumber(t[2]))
for i = 1, count do
  local id = base .. '-' .. i
  redis.call('HSET', jp .. id, 'q', 'bench', 'p', payload, 'a', '0', 'm', '5', 'e', nowS, 'k', '')
  redis.call('ZADD', ready, nowS, id)
end
return count
