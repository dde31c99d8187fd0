//! Faults: connections killed in the middle of transactions, a database
//! outage during authentication, and recovery.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use echorelay_core::Error;
use echorelay_core::access::Role;
use echorelay_core::access::surface::Keys;
use echorelay_core::audit::{EventKind, KeyAction};
use echorelay_core::keys::{Environment, MintRequest};
use echorelay_store_pg::{KeyCacheConfig, PgStore, TestDatabase, test_database};
use echorelay_testkit::Harness;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;

fn req() -> MintRequest {
    MintRequest {
        environment: Environment::Test,
        role: Role::Viewer,
        label: "faults".into(),
    }
}

async fn schema_of(store: &PgStore) -> String {
    sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// S11 under faults: while keys are minted (each mint is the key row and
/// its audit event in one transaction), another connection terminates the
/// minting pool's backends at random moments. Afterwards the keys that
/// exist and the mint events that exist are the same set: never a key
/// without its event or an event without its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_leave_mutation_and_audit_event_together() {
    let Some(db) = test_database().await else {
        return;
    };
    let base = db.fresh_store().await.unwrap();
    let victim = db
        .another_process(&base, |o| {
            o.application_name("echorelay-fault-victim")
                .max_connections(4)
        })
        .await
        .unwrap();
    let h = Harness::new(victim.clone());
    let (p, owner) = h.project().await;
    let grant = h.grant::<Keys>(&owner, &p).await;

    let stop = Arc::new(AtomicBool::new(false));
    let kills = Arc::new(AtomicUsize::new(0));
    let killer = {
        let (pool, stop, kills) = (base.pool().clone(), stop.clone(), kills.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                // A pseudo-random pause of 0-15 ms between kills.
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                tokio::time::sleep(Duration::from_micros((n >> 33) % 15_000)).await;
                let killed: Vec<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = 'echorelay-fault-victim'",
                )
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
                kills.fetch_add(killed.iter().filter(|k| **k).count(), Ordering::SeqCst);
            }
        })
    };
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..400 {
        match h.keys.mint(&grant, req()).await {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    stop.store(true, Ordering::SeqCst);
    killer.await.unwrap();

    // Read back through the healthy pool.
    let check = Harness::with_vault(base.clone(), h.vault.clone());
    let keys: BTreeSet<_> = check
        .keys
        .list_page(&grant, None, 500)
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.id)
        .collect();
    let events: BTreeSet<_> =
        echorelay_core::ports::AuditLog::events(&base, Some(p.id), 0, usize::MAX)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Key {
                    action: KeyAction::Mint,
                    key_id,
                    ..
                } => Some(key_id),
                _ => None,
            })
            .collect();
    eprintln!(
        "faults: {ok} mints succeeded, {failed} failed, {} backends killed, {} keys stored",
        kills.load(Ordering::SeqCst),
        keys.len()
    );
    assert!(
        failed > 0 && kills.load(Ordering::SeqCst) > 0,
        "no mint was interrupted"
    );
    assert!(ok > 0, "no mint succeeded");
    assert_eq!(
        keys, events,
        "a key without its audit event, or the reverse"
    );
    // Every mint the caller saw succeed is stored (the reverse need not
    // hold: a commit whose acknowledgement was cut is stored too).
    assert!(keys.len() >= ok);
    // The chain is whole.
    let all = echorelay_core::ports::AuditLog::events(&base, Some(p.id), 0, usize::MAX)
        .await
        .unwrap();
    echorelay_core::audit::verify_chain(Some(p.id), &all, None).unwrap();
}

/// A TCP proxy in front of Postgres that the test can cut: an outage that
/// affects only this test's connections.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let links: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let (up2, links2) = (up.clone(), links.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                links2.lock().await.push(link);
            }
        });
        Proxy { addr, up, links }
    }

    /// Cuts every connection and refuses new ones.
    async fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for l in self.links.lock().await.drain(..) {
            l.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// Refuses new connections; those already open stay up.
    fn refuse_new(&self) {
        self.up.store(false, Ordering::SeqCst);
    }
}

async fn proxied(db: &TestDatabase, base: &PgStore, proxy: &Proxy) -> PgStore {
    let url = format!("postgres://root@{}/test", proxy.addr);
    let _ = schema_of(base).await;
    db.another_process_at(base, &url, |o| {
        o.acquire_timeout(Duration::from_secs(1)).max_connections(2)
    })
    .await
    .unwrap()
}

/// A database outage during verification and session authentication is
/// the typed `Unavailable`, never a valid key or session, and never the
/// "wrong credentials" answer; when the database is back, the same pool
/// serves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_never_a_success_and_the_pool_recovers() {
    let Some(db) = test_database().await else {
        return;
    };
    let base = db.fresh_store().await.unwrap();
    let upstream: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let h = Harness::new(proxied(&db, &base, &proxy).await);
    let ip: IpAddr = "198.51.100.7".parse().unwrap();

    let (p, owner) = h.project().await;
    let grant = h.grant::<Keys>(&owner, &p).await;
    let minted = h.keys.mint(&grant, req()).await.unwrap();
    let key = minted.plaintext.expose_secret().to_owned();
    let enrolled = h.enrolled(ip, false).await;
    let cookie = enrolled.login.session.token.expose_secret().to_owned();
    assert!(h.keys.verify(&key).await.is_ok());
    assert!(h.accounts.authenticate(&cookie, ip).await.is_ok());

    proxy.down().await;
    for _ in 0..3 {
        assert!(
            matches!(h.keys.verify(&key).await, Err(Error::Unavailable)),
            "verify during an outage"
        );
        assert!(
            matches!(
                h.accounts.authenticate(&cookie, ip).await,
                Err(Error::Unavailable)
            ),
            "authenticate during an outage"
        );
    }
    // Unknown credentials during the outage: also unavailable, not a
    // "no such key" answer (nothing was checked).
    assert!(matches!(
        h.keys
            .verify("er_test_00000000000000000000000000000000000000000")
            .await,
        Err(Error::Unavailable | Error::Unauthenticated)
    ));

    proxy.up();
    let mut recovered = false;
    for _ in 0..50 {
        if h.keys.verify(&key).await.is_ok() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "the pool did not recover after the outage");
    assert!(h.accounts.authenticate(&cookie, ip).await.is_ok());
    // And a revocation made while it was down elsewhere is seen at once.
    let direct = Harness::with_vault(base.clone(), h.vault.clone());
    direct.keys.revoke(&grant, minted.view.id).await.unwrap();
    assert!(matches!(
        h.keys.verify(&key).await,
        Err(Error::Unauthenticated)
    ));
}

/// A cache whose listener is lost and cannot come back (new connections
/// refused; the store's own pool keeps the ones it has) ends its lease in
/// the database at once: a revocation made elsewhere meanwhile returns
/// without waiting for that cache's lease (2 s) to run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_that_cannot_reconnect_releases_writers_at_once() {
    let Some(db) = test_database().await else {
        return;
    };
    let base = db.fresh_store().await.unwrap();
    let a = Harness::new(base.clone());
    let upstream: SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = Proxy::start(upstream).await;
    let url = format!("postgres://root@{}/test", proxy.addr);
    let b = db
        .another_process_at(&base, &url, |o| {
            o.max_connections(2).key_cache(KeyCacheConfig {
                lease: Duration::from_secs(2),
                margin: Duration::from_millis(200),
                ..KeyCacheConfig::default()
            })
        })
        .await
        .unwrap();
    let cache = b.key_cache().unwrap();
    let start = std::time::Instant::now();
    while !cache.is_serving() {
        assert!(start.elapsed() < Duration::from_secs(10), "B never served");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // B's pool opens both its connections now: they stay when new ones
    // are refused.
    echorelay_core::ports::SessionStore::warm_up(&b, 2)
        .await
        .unwrap();
    let (p, owner) = a.project().await;
    let grant = a.grant::<Keys>(&owner, &p).await;
    let minted = a.keys.mint(&grant, req()).await.unwrap();

    proxy.refuse_new();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(cache.listener_application_name())
    .fetch_all(base.pool())
    .await
    .unwrap();
    assert_eq!(killed, vec![true]);
    let start = std::time::Instant::now();
    while cache.is_serving() {
        assert!(start.elapsed() < Duration::from_secs(5), "B never noticed");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let t = std::time::Instant::now();
    a.keys.revoke(&grant, minted.view.id).await.unwrap();
    let waited = t.elapsed();
    proxy.up();
    assert!(
        waited < Duration::from_secs(1),
        "a revocation waited {waited:?} for a cache that could not reconnect (lease 2 s)"
    );
}
