//! Sessions, login challenges and throttle counters on Redis:
//! [`RedisSessions`] implements core's [`SessionStore`] and
//! [`ThrottleStore`] ports (`echorelay_core::ports`, whose docs are the
//! contract).
//!
//! ## Key layout
//!
//! Every key starts with the hash tag `{prefix}` ([`RedisOptions::prefix`]),
//! like the queue's; a session store and a queue may share a prefix (their
//! key names differ).
//!
//! | key | type | holds | expires |
//! |---|---|---|---|
//! | `{prefix}:s:<session id>` | hash | one session (fields below) | by itself, see "Expiry" |
//! | `{prefix}:st:<token hash>` | string | the session id its cookie token names | with its session |
//! | `{prefix}:su:<user id>` | zset | the account's session ids, scored by creation time | never; members of expired sessions are removed by the next read or purge |
//! | `{prefix}:sx`, `{prefix}:sl` | zset | every session id, scored by its absolute end and by its last activity (for `purge_expired`) | never; cleaned by purge |
//! | `{prefix}:c:<token hash>` | hash | one login challenge | by itself |
//! | `{prefix}:cx` | zset | challenge token hashes, scored by their end | never; cleaned by purge |
//! | `{prefix}:t:<scope>` | zset | a throttle's attempts, scored by time (members: time and a random suffix) | a window after the last attempt |
//!
//! A session hash holds `i` (id), `t` (token hash), `u` (user), `c`
//! (created), `l` (last seen), `v` (verified), `x` (expires), `f` (`v4` or
//! `v6`), `e` (credential epoch); a challenge hash `u`, `k`
//! (`second_factor` or `enrollment`), `x`, `f`, `e`. Ids and hashes are
//! lowercase hex, times microseconds since the Unix epoch, `<scope>` is
//! [`AttemptScope::key`]. docs/FORMATS.md has the same table.
//!
//! ## Expiry
//!
//! Redis deletes a session by itself at `min(expires_at, last_seen_at +
//! idle)` plus a slack ([`SessionTtl`]), counted from the call that set it
//! (insert, replace, and every [`SessionStore::touch_session`], which
//! re-sets it), and a challenge at the challenge lifetime plus the slack
//! after it was stored. The slack (60 s by default) keeps a record a
//! little longer than its end, never shorter: processes' clocks differ a
//! little from one another and from Redis's, and an ended record is
//! harmless because core checks every session's and challenge's times on
//! every read. The TTLs follow the account policy's durations, which the
//! store is given ([`SessionTtl::from_policy`]; `EchoRelay`'s builder does
//! it): a store given a shorter idle timeout than the policy's would end
//! sessions early, never late.
//!
//! [`SessionStore::purge_expired`] still deletes by the records' own times,
//! exactly as the contract says, and cleans the indexes.
//!
//! ## Atomicity and errors
//!
//! Every write is one Lua script (the reads that must see a whole session
//! are scripts too): `insert_session`, `replace_session`, `take_challenge`,
//! `delete_sessions_of` and `reserve_attempt` decide and write in one
//! step. A script reads what it touches before it writes, so a key of the
//! wrong type fails it before any change ([`StoreError::Corrupt`]). A
//! script missing from the server (a restart, `SCRIPT FLUSH`) is loaded
//! again and run by the `redis` crate by itself. A connection failure or
//! timeout is [`StoreError::Backend`], which core turns into
//! `Unavailable` for every login and authentication: never a success,
//! never an unthrottled attempt.
//!
//! ## Durability
//!
//! A Redis restart without persistence loses every session, challenge and
//! throttle counter: every user signs in again, and throttles start from
//! zero (a restart resets counters; an attacker who can restart the
//! operator's Redis has more than guesses). Nothing becomes more
//! permissive: a lost session is not found, so it is refused.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use echorelay_core::account::{
    AccountPolicy, AttemptScope, ChallengeKind, ChallengeRecord, IpFamily, SessionRecord,
};
use echorelay_core::error::StoreError;
use echorelay_core::ids::{SessionId, UserId};
use echorelay_core::ports::{SessionStore, StoreResult, ThrottleStore};
use rand::RngCore;
use redis::Value;
use redis::aio::ConnectionManager;

use crate::session_scripts as scripts;
use crate::{Open, RedisOptions, open, testing};

/// How long Redis keeps sessions and challenges: the account policy's
/// idle timeout and challenge lifetime, plus a slack (see the module
/// docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTtl {
    /// The policy's `session_idle`.
    pub idle: chrono::Duration,
    /// The policy's `challenge_lifetime`.
    pub challenge: chrono::Duration,
    /// Added to every TTL (default 60 s), never negative.
    pub slack: chrono::Duration,
}

impl SessionTtl {
    /// The TTLs for `policy`, with the default slack.
    pub fn from_policy(policy: &AccountPolicy) -> Self {
        Self {
            idle: policy.session_idle,
            challenge: policy.challenge_lifetime,
            slack: chrono::Duration::seconds(60),
        }
    }
}

impl SessionTtl {
    /// The same TTLs with a negative slack taken as none: a TTL is never
    /// shorter than the contract's deadline.
    fn clamped(self) -> Self {
        Self {
            slack: self.slack.max(chrono::Duration::zero()),
            ..self
        }
    }
}

impl Default for SessionTtl {
    fn default() -> Self {
        Self::from_policy(&AccountPolicy::default())
    }
}

struct Inner {
    conn: ConnectionManager,
    /// `{prefix}:`
    p: String,
    prefix: String,
    url: String,
    ttl: SessionTtl,
    racy: bool,
}

/// Sessions, login challenges and throttle counters on Redis: see the
/// module docs. Clones share the connection.
#[derive(Clone)]
pub struct RedisSessions {
    inner: Arc<Inner>,
    /// Deletes a test prefix's keys when the last clone goes.
    pub(crate) _cleanup: Option<Arc<testing::PrefixGuard>>,
}

impl fmt::Debug for RedisSessions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSessions")
            .field("url", &self.inner.url)
            .field("prefix", &self.inner.prefix)
            .field("ttl", &self.inner.ttl)
            .finish_non_exhaustive()
    }
}

fn backend(e: redis::RedisError) -> StoreError {
    if e.code() == Some("WRONGTYPE") {
        StoreError::Corrupt {
            table: "redis",
            id: "session store".to_owned(),
            problem: "a key holds a value of the wrong type".to_owned(),
        }
    } else {
        StoreError::backend(e)
    }
}

fn corrupt(table: &'static str, problem: &str) -> StoreError {
    StoreError::Corrupt {
        table,
        id: "-".to_owned(),
        problem: problem.to_owned(),
    }
}

/// A setup error: the URL or prefix is malformed, or the server cannot be
/// reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The prefix is not 1 to 64 characters of `A-Z a-z 0-9 . _ : -`.
    #[error("malformed redis key prefix")]
    Prefix,
    /// The URL does not parse.
    #[error("malformed redis url")]
    Url,
    /// The server cannot be reached.
    #[error("redis unreachable: {0}")]
    Unreachable(#[source] redis::RedisError),
}

fn micros(t: DateTime<Utc>) -> StoreResult<i64> {
    crate::reply::micros(t).map_err(|_| StoreError::Conflict {
        reason: "a time out of the range Redis stores exactly",
    })
}

/// Milliseconds of `d`, at least 1.
fn ms(d: chrono::Duration) -> i64 {
    d.num_milliseconds().max(1)
}

fn family(f: IpFamily) -> &'static str {
    match f {
        IpFamily::V4 => "v4",
        IpFamily::V6 => "v6",
    }
}

fn kind(k: ChallengeKind) -> &'static str {
    match k {
        ChallengeKind::SecondFactor => "second_factor",
        ChallengeKind::Enrollment => "enrollment",
    }
}

/// The fields of an `HGETALL` reply (RESP2 array or RESP3 map).
fn fields(v: Value, table: &'static str) -> StoreResult<Vec<(String, String)>> {
    // HGETALL answers bulk strings only; anything else is not a record.
    let text = |v: Value| match v {
        Value::BulkString(b) => String::from_utf8(b).map_err(|_| corrupt(table, "not UTF-8")),
        _ => Err(corrupt(table, "a field that is not a string")),
    };
    match v {
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| Ok((text(k)?, text(v)?)))
            .collect(),
        Value::Array(items) => {
            if items.len() % 2 != 0 {
                return Err(corrupt(table, "an odd number of fields"));
            }
            let mut out = Vec::with_capacity(items.len() / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((text(k)?, text(v)?));
            }
            Ok(out)
        }
        _ => Err(corrupt(table, "a record that is not a hash")),
    }
}

/// Reads named fields of one record, each exactly once.
struct Record {
    table: &'static str,
    fields: Vec<(String, String)>,
}

impl Record {
    fn get(&self, name: &str) -> StoreResult<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| corrupt(self.table, "a missing field"))
    }

    fn hex<const N: usize>(&self, name: &str) -> StoreResult<[u8; N]> {
        let s = self.get(name)?;
        let mut b = [0u8; N];
        if s.len() != 2 * N || s.bytes().any(|c| c.is_ascii_uppercase()) {
            return Err(corrupt(self.table, "a malformed id or hash"));
        }
        hex::decode_to_slice(s, &mut b)
            .map_err(|_| corrupt(self.table, "a malformed id or hash"))?;
        Ok(b)
    }

    fn time(&self, name: &str) -> StoreResult<DateTime<Utc>> {
        self.get(name)?
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_micros)
            .ok_or_else(|| corrupt(self.table, "a malformed time"))
    }

    fn family(&self) -> StoreResult<IpFamily> {
        match self.get("f")? {
            "v4" => Ok(IpFamily::V4),
            "v6" => Ok(IpFamily::V6),
            _ => Err(corrupt(self.table, "an unknown IP family")),
        }
    }

    fn epoch(&self) -> StoreResult<u64> {
        self.get("e")?
            .parse()
            .map_err(|_| corrupt(self.table, "a malformed epoch"))
    }

    fn session(&self) -> StoreResult<SessionRecord> {
        Ok(SessionRecord {
            id: SessionId::from_bytes(self.hex("i")?),
            token_hash: self.hex("t")?,
            user: UserId::from_bytes(self.hex("u")?),
            created_at: self.time("c")?,
            last_seen_at: self.time("l")?,
            verified_at: self.time("v")?,
            expires_at: self.time("x")?,
            ip_family: self.family()?,
            epoch: self.epoch()?,
        })
    }

    fn challenge(&self, token_hash: [u8; 32]) -> StoreResult<ChallengeRecord> {
        let kind = match self.get("k")? {
            "second_factor" => ChallengeKind::SecondFactor,
            "enrollment" => ChallengeKind::Enrollment,
            _ => return Err(corrupt(self.table, "an unknown challenge kind")),
        };
        Ok(ChallengeRecord {
            token_hash,
            user: UserId::from_bytes(self.hex("u")?),
            kind,
            expires_at: self.time("x")?,
            ip_family: self.family()?,
            epoch: self.epoch()?,
        })
    }
}

fn session_of(v: Value) -> StoreResult<Option<SessionRecord>> {
    let fields = fields(v, "sessions")?;
    if fields.is_empty() {
        return Ok(None);
    }
    Record {
        table: "sessions",
        fields,
    }
    .session()
    .map(Some)
}

fn challenge_of(v: Value, token_hash: &[u8; 32]) -> StoreResult<Option<ChallengeRecord>> {
    let fields = fields(v, "challenges")?;
    if fields.is_empty() {
        return Ok(None);
    }
    Record {
        table: "challenges",
        fields,
    }
    .challenge(*token_hash)
    .map(Some)
}

fn int(v: Value) -> StoreResult<i64> {
    match v {
        Value::Int(i) => Ok(i),
        _ => Err(corrupt("redis", "a script reply that is not an integer")),
    }
}

impl RedisSessions {
    /// Connects to `url` with the default prefix, timeouts and TTLs.
    ///
    /// # Errors
    /// As [`RedisSessions::connect_with`].
    pub async fn connect(url: &str) -> Result<Self, ConnectError> {
        Self::connect_with(RedisOptions::new(url), SessionTtl::default()).await
    }

    /// Connects with `options` (URL, prefix, timeouts) and `ttl`.
    ///
    /// # Errors
    /// [`ConnectError`] for a malformed URL or prefix, or a server that
    /// cannot be reached.
    pub async fn connect_with(
        options: RedisOptions,
        ttl: SessionTtl,
    ) -> Result<Self, ConnectError> {
        let (_, conn) = open(&options).await.map_err(|e| match e {
            Open::Prefix => ConnectError::Prefix,
            Open::Url => ConnectError::Url,
            Open::Redis(e) => ConnectError::Unreachable(e),
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                conn,
                p: format!("{{{}}}:", options.prefix),
                prefix: options.prefix.clone(),
                url: options.redacted_url(),
                ttl: ttl.clamped(),
                racy: false,
            }),
            _cleanup: None,
        })
    }

    /// A deliberately broken copy for the suite's self-test (feature
    /// `racy`): `replace_session`, `take_challenge` and `reserve_attempt`
    /// check with one command and write with another, as a store without
    /// scripts would, so racing callers can all win.
    #[cfg(feature = "racy")]
    pub fn racy(&self) -> Self {
        let mut copy = self.with_ttl(self.inner.ttl);
        if let Some(inner) = Arc::get_mut(&mut copy.inner) {
            inner.racy = true;
        }
        copy
    }

    /// The same store (sharing its connection) setting `ttl` from now on.
    pub fn with_ttl(&self, ttl: SessionTtl) -> Self {
        let i = &self.inner;
        Self {
            inner: Arc::new(Inner {
                conn: i.conn.clone(),
                p: i.p.clone(),
                prefix: i.prefix.clone(),
                url: i.url.clone(),
                ttl: ttl.clamped(),
                racy: i.racy,
            }),
            _cleanup: self._cleanup.clone(),
        }
    }

    /// The key prefix (the hash tag of every key).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// The TTLs this store sets.
    pub fn ttl(&self) -> SessionTtl {
        self.inner.ttl
    }

    /// A handle on the connection, for health checks.
    pub fn connection(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }

    async fn run(&self, inv: &redis::ScriptInvocation<'_>) -> StoreResult<Value> {
        let mut conn = self.inner.conn.clone();
        inv.invoke_async(&mut conn).await.map_err(backend)
    }

    /// A session's TTL (ms) from the moment its `last_seen_at` was set.
    fn session_ttl(&self, s: &SessionRecord) -> i64 {
        let ttl = self.inner.ttl;
        let live = (s.expires_at - s.last_seen_at).min(ttl.idle);
        ms(live + ttl.slack)
    }

    /// Pushes a session's fields in [`scripts::INSERT_SESSION`]'s order
    /// (from its ARGV[2]).
    fn session_args(
        &self,
        inv: &mut redis::ScriptInvocation<'_>,
        s: &SessionRecord,
    ) -> StoreResult<()> {
        inv.arg(hex::encode(s.id.as_bytes()))
            .arg(hex::encode(s.token_hash))
            .arg(hex::encode(s.user.as_bytes()))
            .arg(micros(s.created_at)?)
            .arg(micros(s.last_seen_at)?)
            .arg(micros(s.verified_at)?)
            .arg(micros(s.expires_at)?)
            .arg(family(s.ip_family))
            .arg(s.epoch)
            .arg(self.session_ttl(s));
        Ok(())
    }

    fn scope_key(&self, scope: &AttemptScope) -> String {
        format!("{}t:{}", self.inner.p, scope.key())
    }
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn insert_session(&self, session: SessionRecord) -> StoreResult<()> {
        let mut inv = scripts::INSERT_SESSION.prepare_invoke();
        inv.arg(&self.inner.p);
        self.session_args(&mut inv, &session)?;
        match int(self.run(&inv).await?)? {
            1 => Ok(()),
            _ => Err(StoreError::AlreadyExists { kind: "session" }),
        }
    }

    async fn session_by_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<SessionRecord>> {
        let mut inv = scripts::SESSION_BY_TOKEN.prepare_invoke();
        inv.arg(&self.inner.p).arg(hex::encode(token_hash));
        session_of(self.run(&inv).await?)
    }

    async fn touch_session(&self, id: SessionId, at: DateTime<Utc>) -> StoreResult<bool> {
        let ttl = self.inner.ttl;
        let mut inv = scripts::TOUCH_SESSION.prepare_invoke();
        inv.arg(&self.inner.p)
            .arg(hex::encode(id.as_bytes()))
            .arg(micros(at)?)
            .arg(ttl.idle.num_microseconds().unwrap_or(i64::MAX))
            .arg(ttl.slack.num_milliseconds());
        Ok(int(self.run(&inv).await?)? == 1)
    }

    async fn session_for_request(
        &self,
        token_hash: &[u8; 32],
        at: DateTime<Utc>,
        idle: chrono::Duration,
    ) -> StoreResult<Option<(SessionRecord, bool)>> {
        let mut inv = scripts::SESSION_FOR_REQUEST.prepare_invoke();
        inv.arg(&self.inner.p)
            .arg(hex::encode(token_hash))
            .arg(micros(at)?)
            .arg(idle.num_microseconds().unwrap_or(i64::MAX))
            .arg(self.inner.ttl.slack.num_milliseconds());
        let mut reply = match self.run(&inv).await? {
            Value::Array(items) => items.into_iter(),
            _ => return Err(corrupt("sessions", "a reply that is not an array")),
        };
        let (Some(record), Some(touched)) = (reply.next(), reply.next()) else {
            return Ok(None);
        };
        let session =
            session_of(record)?.ok_or_else(|| corrupt("sessions", "an empty session record"))?;
        Ok(Some((session, int(touched)? == 1)))
    }

    async fn mark_verified(&self, id: SessionId, at: DateTime<Utc>) -> StoreResult<bool> {
        let mut inv = scripts::MARK_VERIFIED.prepare_invoke();
        inv.arg(&self.inner.p)
            .arg(hex::encode(id.as_bytes()))
            .arg(micros(at)?);
        Ok(int(self.run(&inv).await?)? == 1)
    }

    async fn replace_session(&self, old: SessionId, new: SessionRecord) -> StoreResult<()> {
        if self.inner.racy {
            // Broken on purpose (feature `racy`): the check and the
            // replacement are two commands.
            let mut conn = self.inner.conn.clone();
            let key = format!("{}s:{}", self.inner.p, hex::encode(old.as_bytes()));
            let exists: bool = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            if !exists {
                return Err(StoreError::NotFound { kind: "session" });
            }
            tokio::task::yield_now().await;
            self.delete_session(old).await?;
            return self.insert_session(new).await;
        }
        let mut inv = scripts::REPLACE_SESSION.prepare_invoke();
        inv.arg(&self.inner.p).arg(hex::encode(old.as_bytes()));
        self.session_args(&mut inv, &new)?;
        match int(self.run(&inv).await?)? {
            1 => Ok(()),
            0 => Err(StoreError::NotFound { kind: "session" }),
            _ => Err(StoreError::AlreadyExists { kind: "session" }),
        }
    }

    async fn delete_session(&self, id: SessionId) -> StoreResult<bool> {
        let mut inv = scripts::DELETE_SESSION.prepare_invoke();
        inv.arg(&self.inner.p).arg(hex::encode(id.as_bytes()));
        Ok(int(self.run(&inv).await?)? == 1)
    }

    async fn sessions_of(&self, user: UserId) -> StoreResult<Vec<SessionRecord>> {
        let mut inv = scripts::SESSIONS_OF.prepare_invoke();
        inv.arg(&self.inner.p).arg(hex::encode(user.as_bytes()));
        let items = match self.run(&inv).await? {
            Value::Array(items) => items,
            _ => return Err(corrupt("sessions", "a reply that is not an array")),
        };
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if let Some(s) = session_of(item)? {
                out.push(s);
            }
        }
        Ok(out)
    }

    async fn delete_sessions_of(
        &self,
        user: UserId,
        keep: Option<SessionId>,
    ) -> StoreResult<usize> {
        let mut inv = scripts::DELETE_SESSIONS_OF.prepare_invoke();
        inv.arg(&self.inner.p)
            .arg(hex::encode(user.as_bytes()))
            .arg(keep.map(|k| hex::encode(k.as_bytes())).unwrap_or_default());
        usize::try_from(int(self.run(&inv).await?)?)
            .map_err(|_| corrupt("sessions", "a negative count"))
    }

    async fn insert_challenge(&self, challenge: ChallengeRecord) -> StoreResult<()> {
        let ttl = self.inner.ttl;
        let mut inv = scripts::INSERT_CHALLENGE.prepare_invoke();
        inv.arg(&self.inner.p)
            .arg(hex::encode(challenge.token_hash))
            .arg(hex::encode(challenge.user.as_bytes()))
            .arg(kind(challenge.kind))
            .arg(micros(challenge.expires_at)?)
            .arg(family(challenge.ip_family))
            .arg(challenge.epoch)
            .arg(ms(ttl.challenge + ttl.slack));
        match int(self.run(&inv).await?)? {
            1 => Ok(()),
            _ => Err(StoreError::AlreadyExists { kind: "challenge" }),
        }
    }

    async fn challenge(&self, token_hash: &[u8; 32]) -> StoreResult<Option<ChallengeRecord>> {
        let mut conn = self.inner.conn.clone();
        let v: Value = redis::cmd("HGETALL")
            .arg(format!("{}c:{}", self.inner.p, hex::encode(token_hash)))
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        challenge_of(v, token_hash)
    }

    async fn take_challenge(&self, token_hash: &[u8; 32]) -> StoreResult<Option<ChallengeRecord>> {
        if self.inner.racy {
            // Broken on purpose (feature `racy`): read, then delete.
            let found = self.challenge(token_hash).await?;
            tokio::task::yield_now().await;
            let mut conn = self.inner.conn.clone();
            let _: i64 = redis::cmd("DEL")
                .arg(format!("{}c:{}", self.inner.p, hex::encode(token_hash)))
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            return Ok(found);
        }
        let mut inv = scripts::TAKE_CHALLENGE.prepare_invoke();
        inv.arg(&self.inner.p).arg(hex::encode(token_hash));
        challenge_of(self.run(&inv).await?, token_hash)
    }

    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        idle_cutoff: DateTime<Utc>,
    ) -> StoreResult<usize> {
        const LIMIT: i64 = 1000;
        let mut total = 0usize;
        loop {
            let mut inv = scripts::PURGE.prepare_invoke();
            inv.arg(&self.inner.p)
                .arg(micros(now)?)
                .arg(micros(idle_cutoff)?)
                .arg(LIMIT);
            let reply = match self.run(&inv).await? {
                Value::Array(items) => items,
                _ => return Err(corrupt("sessions", "a reply that is not an array")),
            };
            let mut it = reply.into_iter();
            let (Some(n), Some(seen)) = (it.next(), it.next()) else {
                return Err(corrupt("sessions", "a purge reply without counts"));
            };
            total +=
                usize::try_from(int(n)?).map_err(|_| corrupt("sessions", "a negative count"))?;
            if int(seen)? < LIMIT {
                return Ok(total);
            }
        }
    }
}

#[async_trait]
impl ThrottleStore for RedisSessions {
    async fn reserve_attempt(
        &self,
        scope: &AttemptScope,
        at: DateTime<Utc>,
        since: DateTime<Utc>,
        max: u32,
    ) -> StoreResult<bool> {
        let ttl = ms((at - since).max(chrono::Duration::zero()) + self.inner.ttl.slack);
        let mut suffix = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut suffix);
        let at_us = micros(at)?;
        let member = format!("{at_us}:{}", hex::encode(suffix));
        if self.inner.racy {
            // Broken on purpose (feature `racy`): count, then add.
            let n = self.attempts_since(scope, since).await?.len();
            tokio::task::yield_now().await;
            if n >= max as usize {
                return Ok(false);
            }
            let mut conn = self.inner.conn.clone();
            let _: i64 = redis::cmd("ZADD")
                .arg(self.scope_key(scope))
                .arg(at_us)
                .arg(&member)
                .query_async(&mut conn)
                .await
                .map_err(backend)?;
            return Ok(true);
        }
        let mut inv = scripts::RESERVE_ATTEMPT.prepare_invoke();
        inv.key(self.scope_key(scope))
            .arg(at_us)
            .arg(micros(since)?)
            .arg(max)
            .arg(member)
            .arg(ttl);
        Ok(int(self.run(&inv).await?)? == 1)
    }

    async fn attempts_since(
        &self,
        scope: &AttemptScope,
        since: DateTime<Utc>,
    ) -> StoreResult<Vec<DateTime<Utc>>> {
        let mut conn = self.inner.conn.clone();
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.scope_key(scope))
            .arg(format!("({}", micros(since)?))
            .arg("+inf")
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        members
            .iter()
            .map(|m| {
                m.split(':')
                    .next()
                    .and_then(|t| t.parse::<i64>().ok())
                    .and_then(DateTime::from_timestamp_micros)
                    .ok_or_else(|| corrupt("attempts", "a malformed attempt"))
            })
            .collect()
    }

    async fn clear_attempts(&self, scope: &AttemptScope) -> StoreResult<()> {
        let mut conn = self.inner.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(self.scope_key(scope))
            .query_async(&mut conn)
            .await
            .map_err(backend)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn session_fields() -> Vec<(&'static str, String)> {
        let id = "00".repeat(16);
        vec![
            ("i", id.clone()),
            ("t", "ab".repeat(32)),
            ("u", id),
            ("c", "1767225600000000".into()),
            ("l", "1767225600000001".into()),
            ("v", "1767225600000002".into()),
            ("x", "1767229200000000".into()),
            ("f", "v6".into()),
            ("e", "3".into()),
        ]
    }

    fn as_array(f: &[(&str, String)]) -> Value {
        Value::Array(f.iter().flat_map(|(k, v)| [bulk(k), bulk(v)]).collect())
    }

    #[test]
    fn a_stored_session_reads_back_from_either_protocol() {
        let f = session_fields();
        let s = session_of(as_array(&f)).unwrap().unwrap();
        assert_eq!(s.ip_family, IpFamily::V6);
        assert_eq!(s.epoch, 3);
        assert_eq!(s.token_hash, [0xab; 32]);
        assert_eq!(s.last_seen_at.timestamp_micros(), 1_767_225_600_000_001);
        let map = Value::Map(f.iter().map(|(k, v)| (bulk(k), bulk(v))).collect());
        assert_eq!(session_of(map).unwrap().unwrap(), s);
        assert_eq!(session_of(Value::Array(vec![])).unwrap(), None);
    }

    #[test]
    fn malformed_records_are_corrupt_never_a_session() {
        let bad = |field: &str, value: &str| {
            let mut f = session_fields();
            match f.iter_mut().find(|(k, _)| *k == field) {
                Some(slot) => slot.1 = value.to_owned(),
                None => f.push((
                    Box::leak(field.to_owned().into_boxed_str()),
                    value.to_owned(),
                )),
            }
            session_of(as_array(&f))
        };
        for (field, value) in [
            ("i", "zz"),
            ("i", &"AB".repeat(16)),
            ("t", "ab"),
            ("u", ""),
            ("c", "soon"),
            ("x", "99999999999999999999"),
            ("f", "v5"),
            ("e", "-1"),
        ] {
            assert!(
                matches!(bad(field, value), Err(StoreError::Corrupt { .. })),
                "{field}={value}"
            );
        }
        let mut missing = session_fields();
        missing.retain(|(k, _)| *k != "v");
        assert!(session_of(as_array(&missing)).is_err());
        let odd = Value::Array(vec![bulk("i")]);
        assert!(session_of(odd).is_err());
        assert!(session_of(Value::Int(1)).is_err());
        assert!(session_of(Value::Array(vec![Value::Nil, Value::Nil])).is_err());
    }

    #[test]
    fn challenges_read_back_and_unknown_kinds_are_corrupt() {
        let f = |kind: &str| {
            as_array(&[
                ("u", "01".repeat(16)),
                ("k", kind.to_owned()),
                ("x", "1767225900000000".into()),
                ("f", "v4".into()),
                ("e", "0".into()),
            ])
        };
        let c = challenge_of(f("enrollment"), &[7; 32]).unwrap().unwrap();
        assert_eq!(c.kind, ChallengeKind::Enrollment);
        assert_eq!(c.token_hash, [7; 32]);
        assert!(challenge_of(f("admin"), &[7; 32]).is_err());
    }

    #[test]
    fn ttls_never_fall_below_a_millisecond_and_follow_the_policy() {
        let ttl = SessionTtl::default();
        assert_eq!(ttl.idle, chrono::Duration::minutes(30));
        assert_eq!(ttl.challenge, chrono::Duration::minutes(5));
        assert_eq!(ms(chrono::Duration::zero()), 1);
        assert_eq!(ms(chrono::Duration::seconds(-5)), 1);
        assert_eq!(ms(chrono::Duration::seconds(2)), 2000);
        let negative = SessionTtl {
            slack: chrono::Duration::seconds(-5),
            ..ttl
        };
        assert_eq!(negative.clamped().slack, chrono::Duration::zero());
        assert_eq!(negative.clamped().idle, ttl.idle);
        assert_eq!(ttl.clamped(), ttl);
    }
}
