//! The Lua scripts of the session store and the throttle counters: one per
//! conditional or multi-key operation, so each is atomic on the server.
//!
//! Shared conventions (see [`crate::sessions`] for the key layout):
//!
//! - `ARGV[1]` is always the key prefix with its hash tag, `{tag}:`; every
//!   key a script touches starts with it (one Redis Cluster slot).
//! - Times are integers of microseconds since the Unix epoch as decimal
//!   strings; TTLs are milliseconds, at least 1.
//! - A session hash holds `i` (id), `t` (token hash), `u` (user), `c`
//!   (created), `l` (last seen), `v` (verified), `x` (expires), `f` (IP
//!   family: `v4`, `v6`), `e` (credential epoch); ids and hashes as
//!   lowercase hex.
//! - A challenge hash holds `u`, `k` (kind: `second_factor`,
//!   `enrollment`), `x`, `f`, `e`.
//! - Every script reads what it will touch before its first write, so a
//!   key of the wrong type (an error) leaves everything as it was.

use std::sync::LazyLock;

use redis::Script;

/// Stores a session unless its id or token is taken.
///
/// ARGV: P, id, token, user, created, last seen, verified, expires,
/// family, epoch, ttl. Returns 1, or 0 (taken, nothing written).
pub(crate) static INSERT_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local P, id, tok, user = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call('EXISTS', P .. 's:' .. id) == 1 or redis.call('EXISTS', P .. 'st:' .. tok) == 1 then
  return 0
end
redis.call('HSET', P .. 's:' .. id, 'i', id, 't', tok, 'u', user, 'c', ARGV[5], 'l', ARGV[6],
  'v', ARGV[7], 'x', ARGV[8], 'f', ARGV[9], 'e', ARGV[10])
redis.call('PEXPIRE', P .. 's:' .. id, ARGV[11])
redis.call('SET', P .. 'st:' .. tok, id, 'PX', ARGV[11])
redis.call('ZADD', P .. 'su:' .. user, ARGV[5], id)
redis.call('ZADD', P .. 'sx', ARGV[8], id)
redis.call('ZADD', P .. 'sl', ARGV[6], id)
return 1
"#,
    )
});

/// The session a token names.
///
/// ARGV: P, token. Returns the session hash (`HGETALL`), empty when there
/// is none.
pub(crate) static SESSION_BY_TOKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local id = redis.call('GET', ARGV[1] .. 'st:' .. ARGV[2])
if not id then return {} end
return redis.call('HGETALL', ARGV[1] .. 's:' .. id)
"#,
    )
});

/// Records activity and re-sets the session's expiry.
///
/// ARGV: P, id, at, idle (µs), slack (ms). `last seen = max(last seen,
/// at)`; both keys of the session then expire `min(expires, last seen +
/// idle) - at` plus the slack from now (at least 1 ms). Returns 1, or 0
/// when the session is gone (nothing created).
pub(crate) static TOUCH_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local P, id = ARGV[1], ARGV[2]
local k = P .. 's:' .. id
local f = redis.call('HMGET', k, 't', 'l', 'x')
if not f[1] then return 0 end
local at, l, x = tonumber(ARGV[3]), tonumber(f[2]), tonumber(f[3])
if at > l then
  redis.call('HSET', k, 'l', ARGV[3])
  redis.call('ZADD', P .. 'sl', ARGV[3], id)
  l = at
end
local ttl = math.floor((math.min(x, l + tonumber(ARGV[4])) - at) / 1000) + tonumber(ARGV[5])
if ttl < 1 then ttl = 1 end
redis.call('PEXPIRE', k, ttl)
redis.call('PEXPIRE', P .. 'st:' .. f[1], ttl)
return 1
"#,
    )
});

/// A request's lookup: the session a token names and, while it is live at
/// `at` (`x > at` and `l + idle > at`), the touch of [`TOUCH_SESSION`], in
/// one step.
///
/// ARGV: P, token, at, idle (µs), slack (ms). Returns `{}` when there is
/// no session, else `{record, touched}`: the `HGETALL` array as it was
/// before the touch, and 1 or 0.
pub(crate) static SESSION_FOR_REQUEST: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local P = ARGV[1]
local id = redis.call('GET', P .. 'st:' .. ARGV[2])
if not id then return {} end
local k = P .. 's:' .. id
local rec = redis.call('HGETALL', k)
if #rec == 0 then return {} end
local f = redis.call('HMGET', k, 'l', 'x')
local at, idle = tonumber(ARGV[3]), tonumber(ARGV[4])
local l, x = tonumber(f[1]), tonumber(f[2])
if not l or not x or x <= at or l + idle <= at then return { rec, 0 } end
if at > l then
  redis.call('HSET', k, 'l', ARGV[3])
  redis.call('ZADD', P .. 'sl', ARGV[3], id)
  l = at
end
local ttl = math.floor((math.min(x, l + idle) - at) / 1000) + tonumber(ARGV[5])
if ttl < 1 then ttl = 1 end
redis.call('PEXPIRE', k, ttl)
redis.call('PEXPIRE', P .. 'st:' .. ARGV[2], ttl)
return { rec, 1 }
"#,
    )
});

/// Records a step-up: `verified = max(verified, at)`.
///
/// ARGV: P, id, at. Returns 1, or 0 when the session is gone.
pub(crate) static MARK_VERIFIED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local k = ARGV[1] .. 's:' .. ARGV[2]
local v = redis.call('HGET', k, 'v')
if not v then return 0 end
if tonumber(ARGV[3]) > tonumber(v) then redis.call('HSET', k, 'v', ARGV[3]) end
return 1
"#,
    )
});

/// Deletes the session `id` and its token key; returns 1 if it existed.
/// ARGV: P, id. (Shared by [`DELETE_SESSION`] and [`REPLACE_SESSION`].)
const DELETE_ONE: &str = r#"
local function delete_one(P, id)
  local k = P .. 's:' .. id
  local f = redis.call('HMGET', k, 't', 'u')
  redis.call('ZREM', P .. 'sx', id)
  redis.call('ZREM', P .. 'sl', id)
  if not f[1] then return 0 end
  redis.call('DEL', k, P .. 'st:' .. f[1])
  redis.call('ZREM', P .. 'su:' .. f[2], id)
  return 1
end
"#;

/// Deletes a session. ARGV: P, id. Returns 1 if it existed, else 0.
pub(crate) static DELETE_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{DELETE_ONE}\nreturn delete_one(ARGV[1], ARGV[2])\n"
    ))
});

/// Replaces session `old` by a new one in one step.
///
/// ARGV: P, old id, then the new session as [`INSERT_SESSION`]'s ARGV[2..].
/// Returns 1; 0 when `old` is gone (nothing written); -1 when the new id
/// or token is taken (nothing written).
pub(crate) static REPLACE_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{DELETE_ONE}
local P, old = ARGV[1], ARGV[2]
local id, tok, user = ARGV[3], ARGV[4], ARGV[5]
if redis.call('EXISTS', P .. 's:' .. old) == 0 then return 0 end
if redis.call('EXISTS', P .. 's:' .. id) == 1 or redis.call('EXISTS', P .. 'st:' .. tok) == 1 then
  return -1
end
delete_one(P, old)
redis.call('HSET', P .. 's:' .. id, 'i', id, 't', tok, 'u', user, 'c', ARGV[6], 'l', ARGV[7],
  'v', ARGV[8], 'x', ARGV[9], 'f', ARGV[10], 'e', ARGV[11])
redis.call('PEXPIRE', P .. 's:' .. id, ARGV[12])
redis.call('SET', P .. 'st:' .. tok, id, 'PX', ARGV[12])
redis.call('ZADD', P .. 'su:' .. user, ARGV[6], id)
redis.call('ZADD', P .. 'sx', ARGV[9], id)
redis.call('ZADD', P .. 'sl', ARGV[7], id)
return 1
"#
    ))
});

/// An account's sessions, by creation time, ties by id; members of the
/// account's index whose session has expired are removed on the way.
///
/// ARGV: P, user. Returns one `HGETALL` array per live session.
pub(crate) static SESSIONS_OF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local P = ARGV[1]
local idx = P .. 'su:' .. ARGV[2]
local out, gone = {}, {}
for _, id in ipairs(redis.call('ZRANGE', idx, 0, -1)) do
  local rec = redis.call('HGETALL', P .. 's:' .. id)
  if #rec == 0 then gone[#gone + 1] = id else out[#out + 1] = rec end
end
for _, id in ipairs(gone) do
  redis.call('ZREM', idx, id)
  redis.call('ZREM', P .. 'sx', id)
  redis.call('ZREM', P .. 'sl', id)
end
return out
"#,
    )
});

/// Deletes an account's sessions except one, all in one step.
///
/// ARGV: P, user, the id to keep (`''`: none). Returns how many existed
/// and were deleted. Reads every session's token before the first write.
pub(crate) static DELETE_SESSIONS_OF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local P, keep = ARGV[1], ARGV[3]
local idx = P .. 'su:' .. ARGV[2]
local ids, toks = {}, {}
for _, id in ipairs(redis.call('ZRANGE', idx, 0, -1)) do
  if id ~= keep then
    ids[#ids + 1] = id
    toks[#ids] = redis.call('HGET', P .. 's:' .. id, 't')
  end
end
local n = 0
for i, id in ipairs(ids) do
  if toks[i] then
    redis.call('DEL', P .. 's:' .. id, P .. 'st:' .. toks[i])
    n = n + 1
  end
  redis.call('ZREM', idx, id)
  redis.call('ZREM', P .. 'sx', id)
  redis.call('ZREM', P .. 'sl', id)
end
return n
"#,
    )
});

/// Stores a challenge unless its token is taken.
///
/// ARGV: P, token, user, kind, expires, family, epoch, ttl. Returns 1, or
/// 0 (taken, nothing written).
pub(crate) static INSERT_CHALLENGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local P, tok = ARGV[1], ARGV[2]
local k = P .. 'c:' .. tok
if redis.call('EXISTS', k) == 1 then return 0 end
redis.call('HSET', k, 'u', ARGV[3], 'k', ARGV[4], 'x', ARGV[5], 'f', ARGV[6], 'e', ARGV[7])
redis.call('PEXPIRE', k, ARGV[8])
redis.call('ZADD', P .. 'cx', ARGV[5], tok)
return 1
"#,
    )
});

/// Removes and returns a challenge: of racing callers, one gets it.
///
/// ARGV: P, token. Returns its `HGETALL` array, empty when there is none.
pub(crate) static TAKE_CHALLENGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local k = ARGV[1] .. 'c:' .. ARGV[2]
local rec = redis.call('HGETALL', k)
if #rec > 0 then
  redis.call('DEL', k)
  redis.call('ZREM', ARGV[1] .. 'cx', ARGV[2])
end
return rec
"#,
    )
});

/// Deletes up to `limit` each of: sessions with `expires <= now`, sessions
/// with `last seen <= cutoff`, challenges with `expires <= now`.
///
/// ARGV: P, now, cutoff, limit. Returns `{deleted, looked at}`: records
/// that still existed and were deleted, and index entries examined (a
/// caller repeats while that reaches the limit in any index).
pub(crate) static PURGE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{DELETE_ONE}
local P, now, cutoff, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local a = redis.call('ZRANGEBYSCORE', P .. 'sx', '-inf', now, 'LIMIT', 0, limit)
local b = redis.call('ZRANGEBYSCORE', P .. 'sl', '-inf', cutoff, 'LIMIT', 0, limit)
local c = redis.call('ZRANGEBYSCORE', P .. 'cx', '-inf', now, 'LIMIT', 0, limit)
local n = 0
for _, list in ipairs({{ a, b }}) do
  for _, id in ipairs(list) do n = n + delete_one(P, id) end
end
for _, tok in ipairs(c) do
  n = n + redis.call('DEL', P .. 'c:' .. tok)
  redis.call('ZREM', P .. 'cx', tok)
end
return {{ n, math.max(#a, #b, #c) }}
"#
    ))
});

/// Reserves an attempt: drops attempts at or before `since`, then records
/// one at `at` if fewer than `max` remain.
///
/// KEYS: the scope's key. ARGV: at, since, max, member, ttl. Returns 1
/// (recorded) or 0.
pub(crate) static RESERVE_ATTEMPT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
"#,
    )
});
