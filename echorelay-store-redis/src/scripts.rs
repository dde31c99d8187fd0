//! The Lua scripts: one per queue operation, so each is atomic on the
//! server (Redis runs a script to its end before any other command).
//!
//! Shared conventions:
//!
//! - Times are integers of microseconds since the Unix epoch, passed as
//!   decimal strings and compared after `tonumber` (exact below 2^53).
//!   A zset score read back is passed on as the string Redis gave.
//! - Ids are the 32 lowercase hex digits of a [`JobId`](echorelay_core::queue::JobId);
//!   as zset members they sort like the ids' bytes.
//! - `jp` is the prefix of job hashes (`{tag}:j:`), `qp` that of queue keys
//!   (`{tag}:q:`); a queue's keys are `qp .. queue .. ':ready'` and so on.
//! - A job hash holds `q` (queue), `p` (payload), `a` (attempts), `m` (max
//!   attempts), `e` (enqueued at), `k` (de-duplication key, `''` for none),
//!   `n` (the lease's nonce, only while leased), `c` (the last error
//!   class), `d` (when it went dead).
//! - Nothing is ever `unpack`ed: every list is walked with one call per
//!   element, and no script looks at more than a small multiple of its
//!   batch (at most 1,000) of entries.
//! - A script that finds a record it cannot read returns
//!   `{'corrupt', id}` before it has written anything.

use std::sync::LazyLock;

use redis::Script;

/// Stores a batch of jobs, all or none.
///
/// KEYS: ready, dedup. ARGV: jp, queue, now, channel, count, then per job
/// id, payload, run_at, max attempts, dedup key (`''`: none).
///
/// Returns `{'dup', id}` (nothing stored) when a job's id is already
/// stored or repeated in the batch, else `{'ok', id, …}`: one id per job,
/// its own or that of the holder of its key (a job of this queue, or an
/// earlier job of the batch). Publishes on the channel when a stored job
/// is due.
pub(crate) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local jp, q, nowS, chan, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local now = tonumber(nowS)
local ids = {}
for i = 0, count - 1 do
  local id = ARGV[6 + i * 5]
  if ids[id] or redis.call('EXISTS', jp .. id) == 1 then return { 'dup', id } end
  ids[id] = true
end
local out, store, claimed = { 'ok' }, {}, {}
for i = 0, count - 1 do
  local b = 6 + i * 5
  local id, key = ARGV[b], ARGV[b + 4]
  local result = id
  if key ~= '' then
    local held = claimed[key]
    if not held then
      local other = redis.call('HGET', KEYS[2], key)
      if other and redis.call('EXISTS', jp .. other) == 1 then held = other end
    end
    if held then result = held else claimed[key] = id end
  end
  if result == id then store[#store + 1] = b end
  out[#out + 1] = result
end
local due = 0
for _, b in ipairs(store) do
  local id, key = ARGV[b], ARGV[b + 4]
  redis.call('HSET', jp .. id, 'q', q, 'p', ARGV[b + 1], 'a', '0', 'm', ARGV[b + 3], 'e', nowS, 'k', key)
  redis.call('ZADD', KEYS[1], ARGV[b + 2], id)
  if key ~= '' then redis.call('HSET', KEYS[2], key, id) end
  if tonumber(ARGV[b + 2]) <= now then due = due + 1 end
end
if due > 0 then redis.call('PUBLISH', chan, tostring(due)) end
return out
"#,
    )
});

/// Leases up to n due jobs.
///
/// KEYS: ready, leased, dead, dedup. ARGV: jp, now, n, nonce, lease_until,
/// the lease-expired class.
///
/// Due jobs are those of `ready` with a score at or before now, and those
/// of `leased` whose lease ended at or before now (they are waiting
/// again; their lease end is their due time). Both lists are read sorted
/// and bounded (n from ready, at most 4n expired leases), merged, and the
/// n earliest taken. An expired lease whose attempts reached the maximum
/// goes to `dead` instead. Every candidate is read and checked before the
/// first write.
///
/// Returns `{'ok', dead, dangling, id, payload, attempt, max, enqueued, …}`.
pub(crate) static RESERVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local jp, nowS, n, nonce, untilS, expired = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6]
local now = tonumber(nowS)
local function read(id)
  local f = redis.call('HMGET', jp .. id, 'p', 'a', 'm', 'e', 'k', 'q')
  if not f[1] and not f[2] and not f[3] and not f[6] then return nil end
  local a, m, e = tonumber(f[2]), tonumber(f[3]), tonumber(f[4])
  if not f[1] or not a or not m or not e then return false end
  return { p = f[1], a = a, m = m, e = f[4], k = f[5] or '' }
end
-- Expired leases: at most 4n looked at, at most n kept as candidates.
local back, dead, dangling = {}, {}, {}
local exp = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', nowS, 'WITHSCORES', 'LIMIT', 0, 4 * n)
for i = 1, #exp, 2 do
  if #back >= n then break end
  local id = exp[i]
  local j = read(id)
  if j == nil then
    dangling[#dangling + 1] = { id = id, set = KEYS[2] }
  elseif j == false then
    return { 'corrupt', id }
  elseif j.a >= j.m then
    dead[#dead + 1] = { id = id, k = j.k }
  else
    back[#back + 1] = { id = id, s = tonumber(exp[i + 1]), j = j, set = KEYS[2] }
  end
end
-- Due jobs: the n earliest.
local ready = {}
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', nowS, 'WITHSCORES', 'LIMIT', 0, n)
for i = 1, #due, 2 do
  local id = due[i]
  local j = read(id)
  if j == nil then
    dangling[#dangling + 1] = { id = id, set = KEYS[1] }
  elseif j == false then
    return { 'corrupt', id }
  else
    ready[#ready + 1] = { id = id, s = tonumber(due[i + 1]), j = j, set = KEYS[1] }
  end
end
-- Merge the two sorted lists, n at most.
local take, x, y = {}, 1, 1
while #take < n and (x <= #back or y <= #ready) do
  if y > #ready or (x <= #back and back[x].s <= ready[y].s) then
    take[#take + 1] = back[x]; x = x + 1
  else
    take[#take + 1] = ready[y]; y = y + 1
  end
end
-- Writes.
for _, d in ipairs(dangling) do redis.call('ZREM', d.set, d.id) end
for _, d in ipairs(dead) do
  local jk = jp .. d.id
  redis.call('ZREM', KEYS[2], d.id)
  redis.call('ZADD', KEYS[3], 0, d.id)
  redis.call('HSET', jk, 'c', expired, 'd', nowS)
  redis.call('HDEL', jk, 'n')
  if d.k ~= '' and redis.call('HGET', KEYS[4], d.k) == d.id then redis.call('HDEL', KEYS[4], d.k) end
end
local out = { 'ok', #dead, #dangling }
for _, t in ipairs(take) do
  local jk = jp .. t.id
  if t.set ~= KEYS[2] then redis.call('ZREM', t.set, t.id) end
  local a = redis.call('HINCRBY', jk, 'a', 1)
  redis.call('HSET', jk, 'n', nonce)
  redis.call('ZADD', KEYS[2], untilS, t.id)
  out[#out + 1] = t.id
  out[#out + 1] = t.j.p
  out[#out + 1] = a
  out[#out + 1] = t.j.m
  out[#out + 1] = t.j.e
end
return out
"#,
    )
});

/// Acks a batch of tokens, each on its own.
///
/// KEYS: the jobs' hashes. ARGV: qp, now, then per key the id and the
/// nonce. Returns one integer per key: 1 acked (the job deleted, its
/// de-duplication key freed), 0 stale (nothing changed).
pub(crate) static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local qp, now = ARGV[1], tonumber(ARGV[2])
local out = {}
for i, jk in ipairs(KEYS) do
  local id, nonce = ARGV[1 + 2 * i], ARGV[2 + 2 * i]
  local f = redis.call('HMGET', jk, 'q', 'n', 'k')
  local ok = 0
  if f[1] and f[2] == nonce then
    local leased = qp .. f[1] .. ':leased'
    local le = redis.call('ZSCORE', leased, id)
    if le and tonumber(le) > now then
      redis.call('ZREM', leased, id)
      redis.call('DEL', jk)
      if f[3] and f[3] ~= '' then
        local dk = qp .. f[1] .. ':dedup'
        if redis.call('HGET', dk, f[3]) == id then redis.call('HDEL', dk, f[3]) end
      end
      ok = 1
    end
  end
  out[i] = ok
end
return out
"#,
    )
});

/// Releases a lease: delayed until the retry time, or dead.
///
/// KEYS: the job's hash. ARGV: qp, id, nonce, now, mode (`at` or
/// `never`), retry_at (µs; ignored for `never`), class, channel prefix.
/// Returns `{'stale'}`, `{'corrupt', id}`, `{'dead'}` or `{'retry'}`.
pub(crate) static NACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local qp, id, nonce, nowS, mode, retryS, class, cp = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local now = tonumber(nowS)
local jk = KEYS[1]
local f = redis.call('HMGET', jk, 'q', 'n', 'k', 'a', 'm')
if not f[1] or f[2] ~= nonce then return { 'stale' } end
local leased = qp .. f[1] .. ':leased'
local le = redis.call('ZSCORE', leased, id)
if not le or tonumber(le) <= now then return { 'stale' } end
local a, m = tonumber(f[4]), tonumber(f[5])
if not a or not m then return { 'corrupt', id } end
redis.call('ZREM', leased, id)
redis.call('HDEL', jk, 'n')
if mode == 'never' or a >= m then
  redis.call('ZADD', qp .. f[1] .. ':dead', 0, id)
  redis.call('HSET', jk, 'c', class, 'd', nowS)
  if f[3] and f[3] ~= '' then
    local dk = qp .. f[1] .. ':dedup'
    if redis.call('HGET', dk, f[3]) == id then redis.call('HDEL', dk, f[3]) end
  end
  return { 'dead' }
end
redis.call('ZADD', qp .. f[1] .. ':ready', retryS, id)
redis.call('HSET', jk, 'c', class)
if tonumber(retryS) <= now then redis.call('PUBLISH', cp .. f[1], '1') end
return { 'retry' }
"#,
    )
});

/// Moves a held lease's end.
///
/// KEYS: the job's hash. ARGV: qp, id, nonce, now, lease_until. Returns 1
/// (moved) or 0 (stale).
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local qp, id, nonce, now, untilS = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local f = redis.call('HMGET', KEYS[1], 'q', 'n')
if not f[1] or f[2] ~= nonce then return 0 end
local leased = qp .. f[1] .. ':leased'
local le = redis.call('ZSCORE', leased, id)
if not le or tonumber(le) <= now then return 0 end
redis.call('ZADD', leased, 'XX', untilS, id)
return 1
"#,
    )
});

/// A page of the dead-letter set, by id.
///
/// KEYS: dead. ARGV: jp, the lexicographic start (`-` or `(` + id),
/// limit. Returns `{id, payload, attempts, max, class, enqueued, died, …}`
/// (fields the job hash lacks are `false`, read as corrupt).
pub(crate) static DEAD_PAGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local jp = ARGV[1]
local ids = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], '+', 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', jp .. id, 'p', 'a', 'm', 'c', 'e', 'd')
  out[#out + 1] = id
  for k = 1, 6 do out[#out + 1] = f[k] end
end
return out
"#,
    )
});

/// Redrives dead jobs: waiting at now, attempts 0, class cleared. A job
/// takes its de-duplication key back only if no live job holds it.
///
/// KEYS: dead, ready, dedup. ARGV: jp, now, channel, mode (`one` or
/// `first`), the id (`one`) or the limit (`first`). Returns the number
/// redriven (`one`: 0 means not dead).
pub(crate) static REDRIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local jp, nowS, chan, mode = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local ids
if mode == 'one' then
  if not redis.call('ZSCORE', KEYS[1], ARGV[5]) then return 0 end
  ids = { ARGV[5] }
else
  ids = redis.call('ZRANGEBYLEX', KEYS[1], '-', '+', 'LIMIT', 0, tonumber(ARGV[5]))
end
local done = 0
for _, id in ipairs(ids) do
  local jk = jp .. id
  redis.call('ZREM', KEYS[1], id)
  if redis.call('EXISTS', jk) == 1 then
    redis.call('HSET', jk, 'a', '0')
    redis.call('HDEL', jk, 'c', 'd', 'n')
    redis.call('ZADD', KEYS[2], nowS, id)
    local k = redis.call('HGET', jk, 'k')
    if k and k ~= '' then
      local holder = redis.call('HGET', KEYS[3], k)
      if not holder or holder == id or redis.call('EXISTS', jp .. holder) == 0 then
        redis.call('HSET', KEYS[3], k, id)
      else
        redis.call('HSET', jk, 'k', '')
      end
    end
    done = done + 1
  end
end
if done > 0 then redis.call('PUBLISH', chan, tostring(done)) end
return done
"#,
    )
});

/// Deletes the first `limit` dead jobs (by id).
///
/// KEYS: dead. ARGV: jp, limit. Returns how many.
pub(crate) static PURGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ids = redis.call('ZRANGEBYLEX', KEYS[1], '-', '+', 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('DEL', ARGV[1] .. id)
end
return #ids
"#,
    )
});

/// A queue's counts at now.
///
/// KEYS: ready, leased, dead. ARGV: now. Returns waiting (due, plus
/// expired leases), delayed, in flight, dead.
pub(crate) static STATS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local now = ARGV[1]
local later = '(' .. now
return {
  redis.call('ZCOUNT', KEYS[1], '-inf', now) + redis.call('ZCOUNT', KEYS[2], '-inf', now),
  redis.call('ZCOUNT', KEYS[1], later, '+inf'),
  redis.call('ZCOUNT', KEYS[2], later, '+inf'),
  redis.call('ZCARD', KEYS[3]),
}
"#,
    )
});
