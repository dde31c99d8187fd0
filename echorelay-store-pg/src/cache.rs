//! The optional verification cache, and how it keeps S3.
//!
//! Without a cache every `key_status_by_hash` is one indexed read, and a
//! revocation is visible to the very next verification in every process
//! by construction. The cache serves found keys from memory (a few
//! hundred nanoseconds instead of a round trip) and keeps S3 with three
//! mechanisms:
//!
//! 1. **Invalidation in the revoking transaction.** Every change to a
//!    key's verification status (revocation, rotation: the predecessor
//!    gets its expiry) sends `NOTIFY echorelay_keys_<schema hash>,
//!    '<seq>:<hash hex>'`
//!    inside the transaction that makes the change, so it is delivered at
//!    commit and only if it commits.
//! 2. **Acknowledged before `revoke` returns.** Each cache registers a row
//!    in `key_cache_instances` with a lease. When its listener receives an
//!    invalidation it drops the entry and inserts `(instance, seq)` into
//!    `key_cache_acks`. The writer, after its commit, waits until every
//!    cache whose lease is still valid has acknowledged its `seq` (or
//!    started its listener after that invalidation committed: see
//!    `connect_listener`, which orders the two with an advisory lock). A cache
//!    that does not answer holds the writer only until its lease ends (5 s
//!    by default), and a cache whose lease ended does not serve.
//! 3. **Fail safe when deaf.** A cache serves only while its listener is
//!    connected and its local lease (renewed from the database, ending a
//!    margin before the database's copy) is valid. The supervisor pings
//!    its own listener every lease/4: a ping not heard by the next round
//!    means the listener is deaf; then, as on any listener error, the
//!    cache is flushed and bypassed, and the lease is not renewed, until a
//!    new listener is up (LISTEN first, flush, then acknowledge and renew).
//!    Entries also expire after `ttl` (backstop, 60 s by default).
//!
//! Fetches race invalidations: a status read from the database is kept
//! only if no invalidation or flush happened since the read began (a
//! generation counter), so a read that started before a revocation
//! committed cannot re-insert the revoked key after its invalidation.
//!
//! Unknown hashes are never cached (a key minted in another process is
//! seen at once), and neither is anything but [`KeyStatus`].

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use echorelay_core::keys::{KeyHash, KeyStatus};
use echorelay_core::ports::StoreResult;
use rand::RngCore;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool};

use crate::{PgError, PgStore, backend};

/// The notification channel of key invalidations, per schema (so two
/// deployments, or two test schemas, in one database never mix their
/// invalidations or acknowledgements): `echorelay_keys_` and the first 16
/// hex digits of the MD5 of the schema name.
const CHANNEL_SQL: &str = "'echorelay_keys_' || left(md5(current_schema()), 16)";

/// The advisory lock that orders invalidations against listener starts:
/// writers hold it shared from allocating their number to their commit, a
/// starting listener holds it exclusively while it LISTENs and records
/// how far it is covered.
const GATE_SQL: &str = "hashtextextended('echorelay.key_invalidation.' || current_schema(), 0)";

/// Key cache settings.
#[derive(Debug, Clone, Copy)]
pub struct KeyCacheConfig {
    /// Lifetime of one entry (backstop). Default 60 s.
    pub ttl: Duration,
    /// Lease of the cache in the database: the longest a revocation waits
    /// for a cache that stopped answering. Default 5 s.
    pub lease: Duration,
    /// How long before the database's lease end the cache stops serving
    /// (clock rate differences). Default 500 ms.
    pub margin: Duration,
    /// Most entries held; when full, new entries are not cached.
    pub capacity: usize,
    /// Test hook: a pause between a verification's database read and its
    /// entering the cache, to widen the race the generation check closes.
    /// Zero (the default) outside tests.
    #[doc(hidden)]
    pub fetch_pause: Duration,
}

impl Default for KeyCacheConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(60),
            lease: Duration::from_secs(5),
            margin: Duration::from_millis(500),
            capacity: 100_000,
            fetch_pause: Duration::ZERO,
        }
    }
}

#[derive(Debug)]
struct Entry {
    status: KeyStatus,
    fetched: Instant,
}

#[derive(Debug, Default)]
struct Local {
    entries: HashMap<KeyHash, Entry>,
    /// Serving allowed until this instant (the local lease).
    serve_until: Option<Instant>,
}

/// What the cache did, for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Answers from memory.
    pub hits: u64,
    /// Reads that went to the database.
    pub misses: u64,
    /// Invalidations received and acknowledged.
    pub invalidations: u64,
    /// Times the cache was flushed because the listener was lost or deaf.
    pub flushes: u64,
}

/// An in-process verification cache shared by a store's clones. See the
/// module documentation for how it keeps S3. Its `Debug` shows its
/// counters and state, never the listener's connect options (they hold
/// the database password).
pub struct KeyCache {
    id: [u8; 16],
    config: KeyCacheConfig,
    pool: PgPool,
    local: Mutex<Local>,
    connected: AtomicBool,
    /// Moves on every invalidation and flush.
    generation: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    invalidations: AtomicU64,
    flushes: AtomicU64,
    /// The last ping the listener heard.
    heard_ping: AtomicU64,
    ping_heard: tokio::sync::Notify,
    /// Wakes the supervisor when the listener dies.
    wake: Arc<tokio::sync::Notify>,
    channel: String,
    /// How the listener connects: the store's options under its own
    /// `application_name`, on a private one-connection pool (so the
    /// listener never returns a connection to the store's pool).
    listener_connect: PgConnectOptions,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyCache")
            .field("id", &hex::encode(self.id))
            .field("config", &self.config)
            .field("channel", &self.channel)
            .field("serving", &self.is_serving())
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .field("stats", &self.stats())
            .field("listener_connect", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl Drop for KeyCache {
    fn drop(&mut self) {
        for t in self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }
}

impl KeyCache {
    pub(crate) async fn start(
        pool: PgPool,
        connect: PgConnectOptions,
        config: KeyCacheConfig,
    ) -> Result<Arc<KeyCache>, PgError> {
        let mut id = [0u8; 16];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let channel: String = sqlx::query_scalar(&format!("SELECT {CHANNEL_SQL}"))
            .fetch_one(&pool)
            .await
            .map_err(PgError::Query)?;
        sqlx::query(
            "INSERT INTO key_cache_instances (id, lease_until) VALUES ($1, now() - interval '1 s')",
        )
        .bind(&id[..])
        .execute(&pool)
        .await
        .map_err(PgError::Query)?;
        let cache = Arc::new(KeyCache {
            id,
            config,
            pool,
            local: Mutex::new(Local::default()),
            connected: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            heard_ping: AtomicU64::new(0),
            ping_heard: tokio::sync::Notify::new(),
            wake: Arc::new(tokio::sync::Notify::new()),
            channel,
            listener_connect: connect
                .clone()
                .application_name(&format!("echorelay-key-cache-{}", hex::encode(id))),
            tasks: Mutex::new(Vec::new()),
        });
        let supervisor = tokio::spawn(supervise(Arc::downgrade(&cache)));
        cache.lock_tasks().push(supervisor);
        Ok(cache)
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counters since start.
    pub fn stats(&self) -> CacheStats {
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            flushes: self.flushes.load(Ordering::Relaxed),
        }
    }

    /// The `application_name` of the cache's LISTEN connection, as shown in
    /// `pg_stat_activity`.
    pub fn listener_application_name(&self) -> &str {
        self.listener_connect
            .get_application_name()
            .unwrap_or_default()
    }

    /// Whether the cache is serving from memory now (listener up, lease
    /// valid).
    pub fn is_serving(&self) -> bool {
        self.serving(&self.lock(), Instant::now())
    }

    /// The one serving rule: listener connected and local lease valid.
    fn serving(&self, l: &Local, now: Instant) -> bool {
        self.connected.load(Ordering::SeqCst) && l.serve_until.is_some_and(|t| now < t)
    }

    fn flush(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut l = self.lock();
        l.entries.clear();
        l.serve_until = None;
    }

    pub(crate) async fn status(
        &self,
        store: &PgStore,
        hash: &KeyHash,
    ) -> StoreResult<Option<KeyStatus>> {
        let now = Instant::now();
        {
            let l = self.lock();
            if self.serving(&l, now)
                && let Some(e) = l.entries.get(hash)
                && now.duration_since(e.fetched) < self.config.ttl
            {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(e.status));
            }
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let generation = self.generation.load(Ordering::SeqCst);
        let fetched = Instant::now();
        let status = store.status_from_db(hash).await?;
        if !self.config.fetch_pause.is_zero() {
            tokio::time::sleep(self.config.fetch_pause).await;
        }
        if let Some(s) = status {
            let mut l = self.lock();
            // Keep it only if nothing was invalidated or flushed since the
            // read began, and only while serving.
            if self.generation.load(Ordering::SeqCst) == generation
                && self.connected.load(Ordering::SeqCst)
                && (l.entries.len() < self.config.capacity || l.entries.contains_key(hash))
            {
                l.entries.insert(*hash, Entry { status: s, fetched });
            }
        }
        Ok(status)
    }

    /// Called by the writer after its commit: waits until every cache with
    /// a valid lease acknowledged invalidation `seq`.
    pub(crate) async fn wait_for_acks(pool: &PgPool, seq: i64) -> StoreResult<()> {
        let mut pause = Duration::from_micros(200);
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM key_cache_instances i \
                 WHERE i.lease_until > now() AND i.covered_through < $1 \
                 AND NOT EXISTS (SELECT 1 FROM key_cache_acks a WHERE a.instance = i.id AND a.seq = $1)",
            )
            .bind(seq)
            .fetch_one(pool)
            .await
            .map_err(backend)?;
            if waiting == 0 {
                return Ok(());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Ends our lease in the database now, so writers stop waiting for a
    /// cache that is not serving (best effort: if the database is
    /// unreachable, the lease ends by itself).
    async fn release_writers(&self) {
        let _ = sqlx::query("UPDATE key_cache_instances SET lease_until = now() WHERE id = $1")
            .bind(&self.id[..])
            .execute(&self.pool)
            .await;
    }

    fn invalidate_local(&self, hash: Option<KeyHash>) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let mut l = self.lock();
        match hash {
            Some(h) => {
                l.entries.remove(&h);
            }
            None => l.entries.clear(),
        }
    }
}

/// Sends the invalidation of `hashes` inside the writer's transaction;
/// returns the sequence numbers to wait for after the commit.
pub(crate) async fn notify_in(
    conn: &mut sqlx::PgConnection,
    hashes: &[KeyHash],
) -> StoreResult<Vec<i64>> {
    let mut seqs = Vec::with_capacity(hashes.len());
    sqlx::query(&format!("SELECT pg_advisory_xact_lock_shared({GATE_SQL})"))
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
    for h in hashes {
        let seq: i64 = sqlx::query_scalar("SELECT nextval('key_invalidation_seq')")
            .fetch_one(&mut *conn)
            .await
            .map_err(backend)?;
        sqlx::query(&format!(
            "SELECT pg_notify({CHANNEL_SQL}, $1::text || ':' || encode($2, 'hex'))"
        ))
        .bind(seq)
        .bind(&h.0[..])
        .execute(&mut *conn)
        .await
        .map_err(backend)?;
        seqs.push(seq);
    }
    Ok(seqs)
}

/// Keeps the listener up and the lease renewed; pings the listener to
/// detect a deaf connection.
/// A task that is aborted when this handle is dropped (a plain
/// `JoinHandle` detaches instead): the supervisor's listener task must end
/// with the supervisor, which [`KeyCache`]'s `Drop` aborts, or its LISTEN
/// connection would outlive the store.
struct OwnedTask(tokio::task::JoinHandle<()>);

impl OwnedTask {
    fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for OwnedTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn supervise(cache: std::sync::Weak<KeyCache>) {
    let mut listener_task: Option<OwnedTask> = None;
    let mut ping: u64 = 0;
    loop {
        let Some(c) = cache.upgrade() else { return };
        let round = c.config.lease / 4;
        let healthy = c.connected.load(Ordering::SeqCst)
            && listener_task.as_ref().is_some_and(|t| !t.is_finished())
            && c.heard_ping.load(Ordering::SeqCst) >= ping;
        if !healthy {
            // Dropping the handle aborts the old listener.
            drop(listener_task.take());
            if c.connected.swap(false, Ordering::SeqCst) || ping > 0 {
                c.flushes.fetch_add(1, Ordering::Relaxed);
            }
            c.flush();
            c.release_writers().await;
            match connect_listener(&c).await {
                Ok(l) => {
                    c.heard_ping.store(0, Ordering::SeqCst);
                    ping = 0;
                    c.connected.store(true, Ordering::SeqCst);
                    listener_task = Some(OwnedTask(tokio::spawn(listen(Arc::downgrade(&c), l))));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "key cache: listener connect failed; cache bypassed");
                    drop(c);
                    tokio::time::sleep(round).await;
                    continue;
                }
            }
        }
        // Renew the lease in the database, then ping our own listener:
        // serving is extended only once the ping came back, which proves
        // the listener has delivered every invalidation committed before
        // the renewal (notifications arrive in commit order). A ping not
        // back within the round makes the next round reconnect.
        let start = Instant::now();
        let renewed = sqlx::query(
            "UPDATE key_cache_instances SET lease_until = now() + make_interval(secs => $2) \
             WHERE id = $1",
        )
        .bind(&c.id[..])
        .bind(c.config.lease.as_secs_f64())
        .execute(&c.pool)
        .await
        .is_ok();
        ping += 1;
        let deadline = tokio::time::Instant::now() + round;
        send_ping_and_wait(&c, ping, deadline).await;
        if renewed
            && c.heard_ping.load(Ordering::SeqCst) >= ping
            && c.connected.load(Ordering::SeqCst)
        {
            let until = start + c.config.lease.saturating_sub(c.config.margin);
            c.lock().serve_until = Some(until);
        }
        let _ = sqlx::query(
            "DELETE FROM key_cache_acks WHERE instance = $1 AND acked_at < now() - interval '1 minute'",
        )
        .bind(&c.id[..])
        .execute(&c.pool)
        .await;
        let wake = c.wake.clone();
        drop(c);
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = wake.notified() => {}
        }
    }
}

/// Pings our own listener and waits until it heard the ping or `deadline`.
async fn send_ping_and_wait(c: &KeyCache, ping: u64, deadline: tokio::time::Instant) {
    let heard = c.ping_heard.notified();
    tokio::pin!(heard);
    heard.as_mut().enable();
    let sent = sqlx::query("SELECT pg_notify($1, $2)")
        .bind(&c.channel)
        .bind(format!("ping:{}:{ping}", hex::encode(c.id)))
        .execute(&c.pool)
        .await
        .is_ok();
    while sent && c.heard_ping.load(Ordering::SeqCst) < ping {
        if tokio::time::timeout_at(deadline, heard.as_mut())
            .await
            .is_err()
        {
            return;
        }
        heard.set(c.ping_heard.notified());
        heard.as_mut().enable();
    }
}

/// Starts a listener so that no invalidation is missed: under the
/// exclusive gate (no writer is between its number and its commit), LISTEN,
/// flush, and record the last number allocated as covered. Every earlier
/// invalidation was committed before the LISTEN (so the flush and the
/// reads after it see it); every later one commits after the LISTEN (so
/// this listener receives it).
async fn connect_listener(c: &KeyCache) -> Result<PgListener, sqlx::Error> {
    let own = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .acquire_timeout(c.config.lease)
        .connect_with(c.listener_connect.clone())
        .await?;
    let mut l = PgListener::connect_with(&own).await?;
    let mut gate = c.pool.begin().await?;
    sqlx::query(&format!("SELECT pg_advisory_xact_lock({GATE_SQL})"))
        .execute(&mut *gate)
        .await?;
    l.listen(&c.channel).await?;
    c.flush();
    let covered: i64 = sqlx::query_scalar(
        "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM key_invalidation_seq",
    )
    .fetch_one(&mut *gate)
    .await?;
    sqlx::query("UPDATE key_cache_instances SET covered_through = $2 WHERE id = $1")
        .bind(&c.id[..])
        .bind(covered)
        .execute(&mut *gate)
        .await?;
    gate.commit().await?;
    Ok(l)
}

async fn listen(cache: std::sync::Weak<KeyCache>, mut listener: PgListener) {
    loop {
        let msg = listener.try_recv().await;
        let Some(c) = cache.upgrade() else { return };
        match msg {
            Ok(Some(n)) => {
                let payload = n.payload();
                if let Some(rest) = payload.strip_prefix("ping:") {
                    let mut parts = rest.splitn(2, ':');
                    if parts.next() == Some(hex::encode(c.id).as_str())
                        && let Some(k) = parts.next().and_then(|k| k.parse().ok())
                    {
                        c.heard_ping.fetch_max(k, Ordering::SeqCst);
                        c.ping_heard.notify_waiters();
                    }
                    continue;
                }
                let (seq, hash) = parse_invalidation(payload);
                c.invalidate_local(hash);
                c.invalidations.fetch_add(1, Ordering::Relaxed);
                if let Some(seq) = seq
                    && let Err(e) = sqlx::query(
                        "INSERT INTO key_cache_acks (instance, seq) VALUES ($1, $2) \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(&c.id[..])
                    .bind(seq)
                    .execute(&c.pool)
                    .await
                {
                    tracing::warn!(error = %e, "key cache: acknowledgement failed; cache flushed");
                    c.connected.store(false, Ordering::SeqCst);
                    c.flush();
                    c.wake.notify_one();
                    return;
                }
            }
            // The connection was lost (None) or failed: stop serving; the
            // supervisor reconnects.
            Ok(None) | Err(_) => {
                c.connected.store(false, Ordering::SeqCst);
                c.flush();
                // The supervisor ends the lease in the database and
                // reconnects; only it writes the lease, so a late write
                // can never end the lease of a newer listener.
                c.wake.notify_one();
                return;
            }
        }
    }
}

/// `<seq>:<hash hex>`; an unreadable hash invalidates everything.
fn parse_invalidation(payload: &str) -> (Option<i64>, Option<KeyHash>) {
    let mut parts = payload.splitn(2, ':');
    let seq = parts.next().and_then(|s| s.parse().ok());
    let mut h = [0u8; 32];
    let hash = parts
        .next()
        .and_then(|x| hex::decode_to_slice(x, &mut h).ok())
        .map(|()| KeyHash(h));
    (seq, hash)
}

impl PgStore {
    /// After the commit of a change that sent invalidations `seqs`
    /// ([`notify_in`]): waits until every live cache acknowledged them.
    pub(crate) async fn await_invalidation(&self, seqs: Vec<i64>) -> StoreResult<()> {
        for seq in seqs {
            KeyCache::wait_for_acks(&self.pool, seq).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalidation_payloads_parse_or_flush_everything() {
        let h = KeyHash([7u8; 32]);
        let p = format!("42:{}", hex::encode(h.0));
        assert_eq!(parse_invalidation(&p), (Some(42), Some(h)));
        assert_eq!(parse_invalidation("42:zz"), (Some(42), None));
        assert_eq!(parse_invalidation("x"), (None, None));
    }
}
