//! Several processes on one database: each "process" here is a store with
//! its own pool (and, where configured, its own verification cache), as
//! two servers would have. S3, S11 and S15 across them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration as StdDuration, Instant};

use chrono::Duration;
use echorelay_core::Error;
use echorelay_core::access::Role;
use echorelay_core::access::surface::Keys;
use echorelay_core::audit::{AuditDraft, EventKind, KeyAction};
use echorelay_core::keys::{Environment, MintRequest};
use echorelay_core::ports::{AuditLog, AuditSink, MembershipStore};
use echorelay_store_pg::{KeyCacheConfig, PgStore, TestDatabase, test_database};
use echorelay_testkit::{Harness, race};

fn req() -> MintRequest {
    MintRequest {
        environment: Environment::Live,
        role: Role::Editor,
        label: "processes".into(),
    }
}

/// A second "process": its own pool (and cache, if `cached`) on the same
/// schema, wired to the same vault, with a clock at the same time.
async fn second(db: &TestDatabase, h: &Harness<PgStore>, cached: bool) -> Harness<PgStore> {
    let b = db
        .another_process(
            &h.store,
            |o| {
                if cached { o.key_cache(fast_cache()) } else { o }
            },
        )
        .await
        .unwrap();
    let other = Harness::with_vault(b, h.vault.clone());
    other.clock.set(h.clock_now());
    other
}

/// Trials of the revocation tests: 2,000 (and 600 with a killed listener)
/// by default; `ECHORELAY_TRIALS` lowers them for quick runs (the
/// mutation pass).
fn trials(default: usize) -> usize {
    std::env::var("ECHORELAY_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(default, |t: usize| t.min(default))
}

fn fast_cache() -> KeyCacheConfig {
    KeyCacheConfig {
        lease: StdDuration::from_secs(2),
        margin: StdDuration::from_millis(200),
        ..KeyCacheConfig::default()
    }
}

async fn until_serving(store: &PgStore) {
    let cache = store.key_cache().expect("a cache");
    let start = Instant::now();
    while !cache.is_serving() {
        assert!(
            start.elapsed() < StdDuration::from_secs(10),
            "the cache never started serving"
        );
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
}

/// S3 with caches on in both processes: revoke in A, and the very next
/// verify in B fails, 2,000 times in a row. B's cache held each key
/// (verified twice before: the second from memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_in_one_process_is_seen_by_the_next_verify_in_another_with_caches() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = Harness::new(
        db.fresh_store_with(|o| o.key_cache(fast_cache()))
            .await
            .unwrap(),
    );
    let b = second(&db, &a, true).await;
    until_serving(&a.store).await;
    until_serving(&b.store).await;
    let (p, owner) = a.project().await;
    let grant = a.grant::<Keys>(&owner, &p).await;
    let trials = trials(2_000);
    let mut stale = 0;
    let hits_before = b.store.key_cache().unwrap().stats().hits;
    for _ in 0..trials {
        let minted = a.keys.mint(&grant, req()).await.unwrap();
        let key = minted.plaintext.expose_secret();
        b.keys.verify(key).await.unwrap();
        b.keys.verify(key).await.unwrap();
        a.keys.revoke(&grant, minted.view.id).await.unwrap();
        if b.keys.verify(key).await.is_ok() {
            stale += 1;
        }
    }
    let stats = b.store.key_cache().unwrap().stats();
    assert_eq!(stale, 0, "{stale} stale accepts in {trials} trials");
    assert!(
        stats.hits - hits_before >= trials as u64,
        "the cache was not exercised: {stats:?}"
    );
    assert!(stats.invalidations >= trials as u64, "{stats:?}");
}

/// The same with B's listener connection killed (pg_terminate_backend)
/// again and again during the run: B flushes and bypasses its cache while
/// deaf, revocations never wait longer than a lease, and no revoked key is
/// ever accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_listener_never_lets_a_revoked_key_through() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = Harness::new(
        db.fresh_store_with(|o| o.key_cache(fast_cache()))
            .await
            .unwrap(),
    );
    let b = second(&db, &a, true).await;
    until_serving(&b.store).await;
    let (p, owner) = a.project().await;
    let grant = a.grant::<Keys>(&owner, &p).await;
    let mut stale = 0;
    let mut kills = 0;
    let mut slowest = StdDuration::ZERO;
    for i in 0..trials(600) {
        if i % 50 == 25 {
            // Kill B's listener connection.
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1",
            )
            .bind(b.store.key_cache().unwrap().listener_application_name())
            .fetch_all(a.store.pool())
            .await
            .unwrap();
            kills += killed.len();
        }
        let minted = a.keys.mint(&grant, req()).await.unwrap();
        let key = minted.plaintext.expose_secret();
        b.keys.verify(key).await.unwrap();
        b.keys.verify(key).await.unwrap();
        let t = Instant::now();
        a.keys.revoke(&grant, minted.view.id).await.unwrap();
        slowest = slowest.max(t.elapsed());
        if b.keys.verify(key).await.is_ok() {
            stale += 1;
        }
    }
    let stats = b.store.key_cache().unwrap().stats();
    assert_eq!(stale, 0, "{stale} stale accepts");
    assert!(kills > 0, "no listener was killed");
    assert!(stats.flushes > 0, "the cache never noticed: {stats:?}");
    // A cache whose listener died releases waiting writers at once (it
    // ends its lease); without that they would wait out the 2 s lease.
    assert!(
        slowest < StdDuration::from_secs(1),
        "a revocation waited {slowest:?} (lease 2 s)"
    );
    // And the cache came back.
    until_serving(&b.store).await;
}

/// S15: two processes run the rotation pass at the same moment; each due
/// key gets exactly one successor (the database's condition decides).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_rotating_at_once_make_one_successor_per_key() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = Harness::new(db.fresh_store().await.unwrap());
    let b = second(&db, &a, false).await;
    let (p, owner) = a.project().await;
    let grant = a.grant::<Keys>(&owner, &p).await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(a.keys.mint(&grant, req()).await.unwrap().view.id);
    }
    a.clock.advance(Duration::days(85));
    b.clock.advance(Duration::days(85));
    let reports = race(vec![
        {
            let k = a.keys.clone();
            Box::pin(async move { k.rotate_due().await.unwrap() })
                as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>
        },
        {
            let k = b.keys.clone();
            Box::pin(async move { k.rotate_due().await.unwrap() })
        },
    ])
    .await;
    let rotated: usize = reports.iter().map(|r| r.rotated).sum();
    assert_eq!(rotated, ids.len(), "{reports:?}");
    let keys = a.keys.list_page(&grant, None, 500).await.unwrap();
    for id in &ids {
        let successors = keys.iter().filter(|k| k.predecessor == Some(*id)).count();
        assert_eq!(successors, 1, "key {id} has {successors} successors");
    }
    let autos = a
        .count_events(p.id, |e| {
            matches!(
                e.kind,
                EventKind::Key {
                    action: KeyAction::AutoRotate,
                    ..
                }
            )
        })
        .await;
    assert_eq!(autos, ids.len());
}

/// S11 and the sequencing decision: 8 writers spread over 4 pools append
/// to one chain at once; `seq` runs 1..=n without a gap and the chain
/// verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_from_several_pools_keep_one_gap_free_chain() {
    let Some(db) = test_database().await else {
        return;
    };
    let first = db.fresh_store().await.unwrap();
    let h = Harness::new(first.clone());
    let (p, owner) = h.project().await;
    let mut stores = vec![first];
    for _ in 0..3 {
        stores.push(db.another_process(&stores[0], |o| o).await.unwrap());
    }
    let before = h.store.head(Some(p.id)).await.unwrap().unwrap().seq;
    let per_writer = 40;
    let calls: Vec<_> = (0..8)
        .map(|w| {
            let s = stores[w % stores.len()].clone();
            let at = h.clock_now();
            let actor = owner.actor();
            async move {
                for _ in 0..per_writer {
                    s.append(AuditDraft {
                        project: Some(p.id),
                        at,
                        actor,
                        ip: None,
                        subject: None,
                        kind: EventKind::Key {
                            action: KeyAction::Revoke,
                            key_id: echorelay_core::ids::KeyId::random(),
                            environment: Environment::Live,
                            role: Role::Viewer,
                            successor: None,
                        },
                    })
                    .await
                    .unwrap();
                }
            }
        })
        .collect();
    race(calls).await;
    let events = h.store.events(Some(p.id), 0, usize::MAX).await.unwrap();
    let n = before as usize + 8 * per_writer;
    assert_eq!(events.len(), n);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64 + 1);
    }
    echorelay_core::audit::verify_chain(Some(p.id), &events, None).unwrap();
}

/// S15 for the last owner across processes: two owners in two processes
/// demote each other at once; one demotion fails, one owner remains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_demoting_each_other_from_two_processes_keep_one() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = Harness::new(db.fresh_store().await.unwrap());
    let b = second(&db, &a, false).await;
    for _ in 0..10 {
        let (p, owner) = a.project().await;
        let other = echorelay_core::ids::UserId::random();
        let draft = |subject| AuditDraft {
            project: Some(p.id),
            at: a.clock_now(),
            actor: owner.actor(),
            ip: None,
            subject: Some(subject),
            kind: EventKind::Membership {
                user: subject,
                role: Some(Role::Viewer),
            },
        };
        a.store
            .set_role(p.id, other, Some(Role::Owner), draft(other))
            .await
            .unwrap();
        let echorelay_core::audit::Actor::User(first) = owner.actor() else {
            panic!("the harness's owner is a user")
        };
        let (sa, sb) = (a.store.clone(), b.store.clone());
        let (da, db_) = (draft(first), draft(other));
        let results = race(vec![
            Box::pin(async move { sa.set_role(p.id, first, Some(Role::Viewer), da).await })
                as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>,
            Box::pin(async move { sb.set_role(p.id, other, Some(Role::Viewer), db_).await }),
        ])
        .await;
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        let owners = echorelay_testkit::all_members(&a.store, p.id)
            .await
            .into_iter()
            .filter(|(_, r)| *r == Role::Owner)
            .count();
        assert_eq!(owners, 1);
    }
}

/// A verify during a revocation in another process is either before it
/// (accepted) or after it (refused), never an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_without_cache_reads_the_database_every_time() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = Harness::new(db.fresh_store().await.unwrap());
    let b = second(&db, &a, false).await;
    let (p, owner) = a.project().await;
    let grant = a.grant::<Keys>(&owner, &p).await;
    for _ in 0..200 {
        let minted = a.keys.mint(&grant, req()).await.unwrap();
        let key = minted.plaintext.expose_secret();
        b.keys.verify(key).await.unwrap();
        a.keys.revoke(&grant, minted.view.id).await.unwrap();
        assert!(matches!(
            b.keys.verify(key).await,
            Err(Error::Unauthenticated)
        ));
    }
}

/// The reconnect path: B holds a key in its cache; B's listener is killed;
/// while B is deaf, A revokes the key (B cannot hear it). When B's listener
/// is back and B serves from memory again, the revoked key must not be
/// among what it serves: the reconnect flushed the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_missed_while_deaf_is_not_served_after_reconnecting() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = Harness::new(db.fresh_store().await.unwrap());
    let b = second(&db, &a, true).await;
    until_serving(&b.store).await;
    let (p, owner) = a.project().await;
    let grant = a.grant::<Keys>(&owner, &p).await;
    let minted = a.keys.mint(&grant, req()).await.unwrap();
    let key = minted.plaintext.expose_secret();
    b.keys.verify(key).await.unwrap();
    let hits = b.store.key_cache().unwrap().stats().hits;
    b.keys.verify(key).await.unwrap();
    assert_eq!(
        b.store.key_cache().unwrap().stats().hits,
        hits + 1,
        "B did not cache the key"
    );

    let cache = b.store.key_cache().unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(cache.listener_application_name())
    .fetch_all(a.store.pool())
    .await
    .unwrap();
    assert_eq!(killed, vec![true]);
    let start = Instant::now();
    while cache.is_serving() {
        assert!(
            start.elapsed() < StdDuration::from_secs(10),
            "B never noticed"
        );
        tokio::time::sleep(StdDuration::from_millis(1)).await;
    }
    a.keys.revoke(&grant, minted.view.id).await.unwrap();
    until_serving(&b.store).await;
    assert!(
        matches!(b.keys.verify(key).await, Err(Error::Unauthenticated)),
        "B served a key revoked while its listener was down"
    );
}

/// The read/invalidate race: B reads a key's status from the database,
/// then (held there by the test hook) A revokes the key, and B's listener
/// processes the invalidation before B's read enters the cache. The read
/// must not enter the cache: the next verify in B fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_raced_an_invalidation_is_not_cached() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = Harness::new(db.fresh_store().await.unwrap());
    let slow = KeyCacheConfig {
        fetch_pause: StdDuration::from_millis(300),
        ..fast_cache()
    };
    let b_store = db
        .another_process(&a.store, |o| o.key_cache(slow))
        .await
        .unwrap();
    let b = Harness::with_vault(b_store, a.vault.clone());
    b.clock.set(a.clock_now());
    until_serving(&b.store).await;
    let (p, owner) = a.project().await;
    let grant = a.grant::<Keys>(&owner, &p).await;
    let minted = a.keys.mint(&grant, req()).await.unwrap();
    let key = minted.plaintext.expose_secret().to_owned();
    let early = {
        let (svc, key) = (b.keys.clone(), key.clone());
        tokio::spawn(async move {
            let start = Instant::now();
            let accepted = svc.verify(&key).await.is_ok();
            (accepted, start.elapsed())
        })
    };
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    a.keys.revoke(&grant, minted.view.id).await.unwrap();
    // Began before the revocation returned: either answer is linearizable.
    // But the read must have been held by the pause, or the race was not
    // run at all.
    let (_, held) = early.await.unwrap();
    assert!(
        held >= StdDuration::from_millis(300),
        "the read was not held by the fetch pause ({held:?}): no race was run"
    );
    assert!(
        matches!(b.keys.verify(&key).await, Err(Error::Unauthenticated)),
        "B cached a read that raced the revocation"
    );
}

/// Resumes a stopped server process when dropped, so that a check failing
/// (a panic) while it is stopped does not leave it stopped: a stopped
/// backend keeps its connection, and its place in the notification
/// queue, for good.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.to_string()])
            .status();
    }
}

/// A deaf listener: B's LISTEN connection stays open but its server
/// process is stopped (SIGSTOP), so nothing is delivered and no error
/// arrives. B must notice within a round (its own ping does not come
/// back), flush, stop serving and reconnect; A's revocation must not wait
/// out more than a lease; the revoked key is never accepted by B, before
/// or after B is serving again. Needs the test to see the server's
/// processes (Postgres on this machine, as in CI); skips otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deaf_listener_is_noticed_and_replaced() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = Harness::new(db.fresh_store().await.unwrap());
    let b = second(&db, &a, true).await;
    until_serving(&b.store).await;
    let (p, owner) = a.project().await;
    let grant = a.grant::<Keys>(&owner, &p).await;
    let minted = a.keys.mint(&grant, req()).await.unwrap();
    let key = minted.plaintext.expose_secret();
    b.keys.verify(key).await.unwrap();
    b.keys.verify(key).await.unwrap();
    let cache = b.store.key_cache().unwrap();
    let pid: i32 =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE application_name = $1")
            .bind(cache.listener_application_name())
            .fetch_one(a.store.pool())
            .await
            .unwrap();
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !stopped {
        eprintln!(
            "a_deaf_listener_is_noticed_and_replaced: cannot signal the server process; skipped"
        );
        return;
    }
    // From here on a failing check must not leave the process stopped.
    let resume = Resume(pid);
    let flushes = cache.stats().flushes;
    let t = Instant::now();
    // Bounded: a deafness never noticed would hold the revocation for good
    // (the deaf cache keeps renewing its lease).
    let revoked = tokio::time::timeout(
        StdDuration::from_secs(10),
        a.keys.revoke(&grant, minted.view.id),
    )
    .await;
    let waited = t.elapsed();
    assert!(
        revoked.is_ok_and(|r| r.is_ok()),
        "the revocation did not return within 10 s: B's deafness went unnoticed"
    );
    let verdict = b.keys.verify(key).await;
    until_serving(&b.store).await;
    let after = b.keys.verify(key).await;
    drop(resume);
    let _ = sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(a.store.pool())
        .await;
    assert!(
        matches!(verdict, Err(Error::Unauthenticated)),
        "B accepted the revoked key while deaf"
    );
    assert!(
        matches!(after, Err(Error::Unauthenticated)),
        "B accepted the revoked key after reconnecting"
    );
    assert!(
        cache.stats().flushes > flushes,
        "B never noticed it was deaf"
    );
    assert!(
        waited < StdDuration::from_millis(2_500),
        "the revocation waited {waited:?} (lease 2 s)"
    );
}

/// Issue 16 (9c): a revoke retried after its first attempt committed (say
/// the first answered 503 while it waited for the caches) waits for the
/// caches like the first: "already revoked" comes only once every cache
/// with a valid lease acknowledged the key's invalidation, here a cache
/// that never answers and whose lease ends 1.5 s later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_revoke_waits_for_the_caches_like_the_first() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = Harness::new(db.fresh_store().await.unwrap());
    let (p, owner) = a.project().await;
    let grant = a.grant::<Keys>(&owner, &p).await;
    let minted = a.keys.mint(&grant, req()).await.unwrap();
    // No cache yet: the first revocation returns at once.
    a.keys.revoke(&grant, minted.view.id).await.unwrap();
    assert!(matches!(
        a.keys.verify(minted.plaintext.expose_secret()).await,
        Err(Error::Unauthenticated)
    ));
    // A cache that holds a lease and never acknowledges anything.
    let lease = StdDuration::from_millis(1_500);
    sqlx::query(
        "INSERT INTO key_cache_instances (id, lease_until) \
         VALUES ($1, now() + make_interval(secs => $2))",
    )
    .bind(&[0x5a_u8; 16][..])
    .bind(lease.as_secs_f64())
    .execute(a.store.pool())
    .await
    .unwrap();
    let start = Instant::now();
    let again = a.keys.revoke(&grant, minted.view.id).await;
    let waited = start.elapsed();
    assert!(
        matches!(
            again,
            Err(Error::Store(
                echorelay_core::error::StoreError::Conflict { .. }
            ))
        ),
        "{again:?}"
    );
    assert!(
        waited >= lease - StdDuration::from_millis(200),
        "the retried revoke returned after {waited:?}, before the cache's lease ended"
    );
}

/// Issue 16 (12): serving needs both a connected listener and a valid
/// local lease. A cache whose lease renewal is stalled (its instance row
/// held by another transaction's lock, so the renewing `UPDATE` waits)
/// stops serving when its local lease ends, although its listener stays
/// connected the whole time; once the renewal goes through it serves
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_lease_renewal_stops_serving_though_the_listener_stays_connected() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = Harness::new(db.fresh_store().await.unwrap());
    let b = second(&db, &a, true).await;
    until_serving(&b.store).await;
    let cache = b.store.key_cache().unwrap();
    let listener = || async {
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name = $1")
                .bind(cache.listener_application_name())
                .fetch_one(a.store.pool())
                .await
                .unwrap();
        n
    };
    let mut stall = a.store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM key_cache_instances FOR UPDATE")
        .execute(&mut *stall)
        .await
        .unwrap();
    // The local lease is 2 s less a 200 ms margin, renewed every 500 ms:
    // 2.6 s after the last renewal could have begun it has ended.
    tokio::time::sleep(StdDuration::from_millis(2_600)).await;
    assert_eq!(listener().await, 1, "the listener is still connected");
    let serving = cache.is_serving();
    let flushes = cache.stats().flushes;
    stall.rollback().await.unwrap();
    assert!(
        !serving,
        "a cache served past its lease because its listener was up"
    );
    until_serving(&b.store).await;
    assert_eq!(
        cache.stats().flushes,
        flushes,
        "not a reconnect: the same listener"
    );
}

/// A full cache (capacity 1) keeps no new key: a second key is read from
/// the database every time. The key it holds is still re-read and kept
/// once its entry has expired (`ttl`), as replacing an entry does not
/// grow the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_cache_takes_no_new_key_but_refreshes_the_one_it_holds() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = Harness::new(db.fresh_store().await.unwrap());
    let ttl = StdDuration::from_millis(800);
    let small = KeyCacheConfig {
        capacity: 1,
        ttl,
        ..fast_cache()
    };
    let b_store = db
        .another_process(&a.store, |o| o.key_cache(small))
        .await
        .unwrap();
    let b = Harness::with_vault(b_store, a.vault.clone());
    b.clock.set(a.clock_now());
    until_serving(&b.store).await;
    let (p, owner) = a.project().await;
    let grant = a.grant::<Keys>(&owner, &p).await;
    let held = a.keys.mint(&grant, req()).await.unwrap();
    let held = held.plaintext.expose_secret();
    let other = a.keys.mint(&grant, req()).await.unwrap();
    let other = other.plaintext.expose_secret();
    let cache = b.store.key_cache().unwrap();

    b.keys.verify(held).await.unwrap();
    let hits = cache.stats().hits;
    b.keys.verify(held).await.unwrap();
    assert_eq!(cache.stats().hits, hits + 1, "the first key was not cached");
    b.keys.verify(other).await.unwrap();
    b.keys.verify(other).await.unwrap();
    assert_eq!(
        cache.stats().hits,
        hits + 1,
        "a full cache took a new key (capacity 1)"
    );
    tokio::time::sleep(ttl + StdDuration::from_millis(100)).await;
    let misses = cache.stats().misses;
    b.keys.verify(held).await.unwrap();
    assert_eq!(
        cache.stats().misses,
        misses + 1,
        "an expired entry was served"
    );
    b.keys.verify(held).await.unwrap();
    assert_eq!(
        cache.stats().hits,
        hits + 2,
        "the key a full cache holds was not refreshed"
    );
}

/// `flushes` counts the times a cache lost (or found deaf) a listener it
/// had: none for a cache that started and kept serving for a few rounds,
/// one when its listener connection is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushes_count_lost_listeners_and_nothing_else() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = Harness::new(db.fresh_store().await.unwrap());
    let b = second(&db, &a, true).await;
    until_serving(&b.store).await;
    let cache = b.store.key_cache().unwrap();
    // Rounds are 500 ms (lease 2 s): three of them.
    tokio::time::sleep(StdDuration::from_millis(1_500)).await;
    assert_eq!(
        cache.stats().flushes,
        0,
        "a cache that never lost its listener counted a flush"
    );
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(cache.listener_application_name())
    .fetch_all(a.store.pool())
    .await
    .unwrap();
    assert_eq!(killed, vec![true]);
    let start = Instant::now();
    while cache.stats().flushes == 0 {
        assert!(
            start.elapsed() < StdDuration::from_secs(10),
            "a killed listener was not counted"
        );
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    until_serving(&b.store).await;
}

/// A cache whose lease row cannot be renewed (here a trigger refuses the
/// UPDATE; in life, a failing statement on a pool whose listener still
/// hears) stops serving from memory once its local lease runs out, even
/// though its listener is connected and hears its own pings: writers read
/// the lease in the database to decide whose acknowledgement to wait
/// for, so serving past it could serve a revocation not yet heard. It
/// serves again once renewals succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_that_cannot_renew_its_lease_stops_serving_within_it() {
    let Some(db) = test_database().await else {
        return;
    };
    let a = Harness::new(db.fresh_store().await.unwrap());
    let b = second(&db, &a, true).await;
    until_serving(&b.store).await;
    let cache = b.store.key_cache().unwrap();
    for sql in [
        "CREATE FUNCTION refuse_lease_renewal() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'renewal refused by the test'; END $$",
        "CREATE TRIGGER refuse_lease_renewal BEFORE UPDATE ON key_cache_instances \
         FOR EACH ROW EXECUTE FUNCTION refuse_lease_renewal()",
    ] {
        sqlx::query(sql).execute(a.store.pool()).await.unwrap();
    }
    // The lease is 2 s less a 200 ms margin: serving ends within it.
    let start = Instant::now();
    while cache.is_serving() {
        assert!(
            start.elapsed() < StdDuration::from_secs(5),
            "the cache served on past a lease it could not renew"
        );
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    // Still not serving a round later (the listener is healthy, so this is
    // the lease and not a reconnect), and serving again once renewals work.
    tokio::time::sleep(StdDuration::from_millis(600)).await;
    assert!(!cache.is_serving(), "serving without a renewed lease");
    sqlx::query("DROP TRIGGER refuse_lease_renewal ON key_cache_instances")
        .execute(a.store.pool())
        .await
        .unwrap();
    until_serving(&b.store).await;
}
