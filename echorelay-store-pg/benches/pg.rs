//! Criterion benchmarks of the Postgres backend (issue 7). Each runs on a
//! fresh schema of the local server; the reference, `pgbench -S` at the
//! same client count, runs in the same session from
//! `scripts/bench_pg.sh`, which prints both side by side.
//!
//! - `pg/verify_nocache_4clients`: `KeyService::verify` straight against
//!   Postgres, 4 concurrent clients; the time per iteration is wall time
//!   divided by all verifications (so 1/t is the aggregate throughput);
//! - `pg/verify_nocache_4clients_ping_before_acquire`: the same through a
//!   pool that pings each connection before handing it out (sqlx's default,
//!   off in `PgOptions`);
//! - `pg/verify_cached`: the same with the verification cache, one client;
//! - `pg/audit_append_1writer` and `pg/audit_append_8writers`: a sealed,
//!   chained event per append (one chain), per event;
//! - `pg/config_write`: renaming a line (the change, the project version
//!   and its audit event in one transaction);
//! - `pg/session_authenticate`: a session cookie checked (lookup, checks,
//!   the account's epoch, touch).
//!
//! Run: `DATABASE_URL=postgres://… cargo bench -p echorelay-store-pg --bench pg`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use echorelay_core::access::Role;
use echorelay_core::access::surface::{ConfigWrite, Keys};
use echorelay_core::audit::{AuditDraft, EventKind, KeyAction};
use echorelay_core::keys::{Environment, MintRequest};
use echorelay_core::ports::{AuditLog, AuditSink};
use echorelay_store_pg::{KeyCacheConfig, PgStore, test_database};
use echorelay_testkit::Harness;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn req() -> MintRequest {
    MintRequest {
        environment: Environment::Live,
        role: Role::Editor,
        label: "bench".into(),
    }
}

async fn harness(cached: bool) -> Option<Harness<PgStore>> {
    harness_with(cached, false).await
}

async fn harness_with(cached: bool, ping: bool) -> Option<Harness<PgStore>> {
    let db = test_database().await?;
    let store = db
        .fresh_store_with(|o| {
            let o = o.max_connections(10).test_before_acquire(ping);
            if cached {
                o.key_cache(KeyCacheConfig::default())
            } else {
                o
            }
        })
        .await
        .unwrap();
    if let Some(c) = store.key_cache() {
        let start = Instant::now();
        while !c.is_serving() && start.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    Some(Harness::new(store))
}

fn bench_verify(c: &mut Criterion) {
    let rt = rt();
    let Some((h, keys)) = rt.block_on(async {
        let h = harness(false).await?;
        let (p, owner) = h.project().await;
        let g = h.grant::<Keys>(&owner, &p).await;
        let mut keys = Vec::new();
        for _ in 0..1000 {
            let m = h.keys.mint(&g, req()).await.unwrap();
            keys.push(m.plaintext.expose_secret().to_owned());
        }
        Some((h, keys))
    }) else {
        eprintln!("pg bench: DATABASE_URL unset; skipped");
        return;
    };
    let pinged = rt.block_on(async {
        let p = harness_with(false, true).await.unwrap();
        Harness::with_vault(p.store.clone(), h.vault.clone())
    });
    // The same database rows, through a pool that pings before each
    // acquire (sqlx's default).
    let pinged_keys = rt.block_on(async {
        let (p, owner) = pinged.project().await;
        let g = pinged.grant::<Keys>(&owner, &p).await;
        let mut v = Vec::new();
        for _ in 0..1000 {
            let m = pinged.keys.mint(&g, req()).await.unwrap();
            v.push(m.plaintext.expose_secret().to_owned());
        }
        v
    });
    for (name, svc, keys) in [
        ("pg/verify_nocache_4clients", h.keys.clone(), keys.clone()),
        (
            "pg/verify_nocache_4clients_ping_before_acquire",
            pinged.keys.clone(),
            pinged_keys,
        ),
    ] {
        c.bench_function(name, |b| {
            b.to_async(&rt)
                .iter_custom(|iters| concurrent_verifies(svc.clone(), keys.clone(), iters))
        });
    }

    let cached = rt.block_on(async {
        let h = harness(true).await.unwrap();
        let (p, owner) = h.project().await;
        let g = h.grant::<Keys>(&owner, &p).await;
        let m = h.keys.mint(&g, req()).await.unwrap();
        let key = m.plaintext.expose_secret().to_owned();
        h.keys.verify(&key).await.unwrap();
        (h, key)
    });
    let hits_before = cached.0.store.key_cache().unwrap().stats().hits;
    c.bench_function("pg/verify_cached", |b| {
        b.to_async(&rt)
            .iter(|| async { cached.0.keys.verify(&cached.1).await.unwrap() })
    });
    let stats = cached.0.store.key_cache().unwrap().stats();
    eprintln!(
        "pg bench: cache hits during the run {}, misses total {}",
        stats.hits - hits_before,
        stats.misses
    );
}

/// `iters` verifications spread over 4 concurrent clients; returns the
/// wall time per verification (1/t is the aggregate throughput).
async fn concurrent_verifies(
    svc: echorelay_core::keys::KeyService<
        PgStore,
        std::sync::Arc<echorelay_core::vault::AesGcmVault>,
    >,
    keys: Vec<String>,
    iters: u64,
) -> Duration {
    let clients = 4u64;
    let per = iters.div_ceil(clients);
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|t| {
            let (svc, keys) = (svc.clone(), keys.clone());
            tokio::spawn(async move {
                for i in 0..per {
                    let k = &keys[((t * per + i) as usize) % keys.len()];
                    svc.verify(k).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    start
        .elapsed()
        .div_f64((per * clients) as f64 / iters as f64)
}

fn draft(h: &Harness<PgStore>, p: echorelay_core::ids::ProjectId) -> AuditDraft {
    AuditDraft {
        project: Some(p),
        at: h.clock_now(),
        actor: echorelay_core::audit::Actor::System,
        ip: None,
        subject: None,
        kind: EventKind::Key {
            action: KeyAction::Revoke,
            key_id: echorelay_core::ids::KeyId::random(),
            environment: Environment::Live,
            role: Role::Viewer,
            successor: None,
        },
    }
}

fn bench_audit(c: &mut Criterion) {
    let rt = rt();
    let Some((h, p)) = rt.block_on(async {
        let h = harness(false).await?;
        let (p, _) = h.project().await;
        Some((h, p))
    }) else {
        return;
    };
    for writers in [1u64, 8] {
        let name = format!(
            "pg/audit_append_{writers}writer{}",
            if writers > 1 { "s" } else { "" }
        );
        c.bench_function(&name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (store, d) = (h.store.clone(), draft(&h, p.id));
                async move {
                    let per = iters.div_ceil(writers);
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..writers)
                        .map(|_| {
                            let (store, d) = (store.clone(), d.clone());
                            tokio::spawn(async move {
                                for _ in 0..per {
                                    store.append(d.clone()).await.unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    start
                        .elapsed()
                        .div_f64((per * writers) as f64 / iters as f64)
                }
            })
        });
    }
    // The chain written under contention verifies.
    rt.block_on(async {
        let events = h.store.events(Some(p.id), 0, usize::MAX).await.unwrap();
        echorelay_core::audit::verify_chain(Some(p.id), &events, None).unwrap();
        eprintln!("pg bench: audit chain of {} events verified", events.len());
    });
}

fn bench_config_and_sessions(c: &mut Criterion) {
    let rt = rt();
    let Some((h, g, line, cookie)) = rt.block_on(async {
        let h = harness(false).await?;
        let (p, owner) = h.project().await;
        let g = h.grant::<ConfigWrite>(&owner, &p).await;
        let line = h.config.create_line(&g, "bench").await.unwrap();
        let ip: IpAddr = "198.51.100.4".parse().unwrap();
        let e = h.enrolled(ip, false).await;
        let cookie = e.login.session.token.expose_secret().to_owned();
        Some((h, g, line, cookie))
    }) else {
        return;
    };
    let mut n = 0u64;
    c.bench_function("pg/config_write", |b| {
        b.to_async(&rt).iter(|| {
            n += 1;
            let name = format!("line {n}");
            let (config, g) = (&h.config, &g);
            async move { config.rename_line(g, line.id, &name).await.unwrap() }
        })
    });
    let ip: IpAddr = "198.51.100.4".parse().unwrap();
    c.bench_function("pg/session_authenticate", |b| {
        b.to_async(&rt)
            .iter(|| async { h.accounts.authenticate(&cookie, ip).await.unwrap() })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(Duration::from_secs(5));
    targets = bench_verify, bench_audit, bench_config_and_sessions
}
criterion_main!(benches);
