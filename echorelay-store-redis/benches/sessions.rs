//! Criterion benchmarks of sessions on Redis (issue 20): one client,
//! sequential, `AccountService::authenticate` of one signed-in session
//! (cookie hash, session lookup, idle/absolute/IP-family checks, the
//! account's credential epoch, touch) on each store, in one run:
//!
//! - `sessions/authenticate_mem_redis`: `Composed::new(MemStore,
//!   RedisSessions, RedisSessions)` — the session lookup and the touch on
//!   Redis, the account's epoch from memory: Redis alone;
//! - `sessions/authenticate_pg_redis`: `Composed::new(PgStore,
//!   RedisSessions, RedisSessions)` — the deployment's split
//!   (`DATABASE_URL` + `REDIS_URL`): the epoch is one Postgres read;
//! - `sessions/pg_account_read`: the one Postgres read of the split
//!   (`AccountStore::account`, the credential epoch), alone;
//! - `sessions/authenticate_pg`: everything on `PgStore` (the lookup, the
//!   epoch, the touch: an `UPDATE` that commits);
//! - `sessions/authenticate_mem`: everything in memory (the CPU floor);
//! - `sessions/ceiling_redis_rs_get_expire_pipelined`: the same `redis`
//!   client and connection manager sending `GET` of a 256-byte string and
//!   `EXPIRE` of it, pipelined in one round trip: the least a session
//!   check on Redis can send, without our code.
//!
//! The `redis-benchmark` ceiling runs around this bench in
//! `scripts/bench_sessions.sh`, which prints both side by side.
//!
//! Every variant wires the core services with the testkit's `Harness`
//! (bcrypt cost 10 for the setup, a fixed `ManualClock`, so the session
//! stays inside its idle window for the whole run) and a tokio runtime of
//! 2 workers, as `echorelay-store-pg/benches/pg.rs` does.
//!
//! Run: `DATABASE_URL=postgres://… REDIS_URL=redis://… cargo bench -p
//! echorelay-store-redis --bench sessions`. A service that is not there
//! skips the variants that need it (with one line).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::IpAddr;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use echorelay_core::ids::UserId;
use echorelay_core::ports::{AccountStore, Composed};
use echorelay_store_mem::MemStore;
use echorelay_store_redis::redis;
use echorelay_testkit::{Backend, Harness};

const IP: &str = "198.51.100.4";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The harness on `store` and the cookie of an enrolled account's session.
async fn signed_in<B: Backend>(store: B) -> (Harness<B>, String, UserId) {
    let h = Harness::new(store);
    let e = h.enrolled(IP.parse().unwrap(), false).await;
    let cookie = e.login.session.token.expose_secret().to_owned();
    // The cookie works before the measurement starts.
    h.accounts
        .authenticate(&cookie, IP.parse().unwrap())
        .await
        .unwrap();
    (h, cookie, e.user)
}

fn bench_authenticate<B: Backend>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    setup: Option<&(Harness<B>, String, UserId)>,
) {
    let Some((h, cookie, _)) = setup else {
        eprintln!("sessions bench: {name} skipped (DATABASE_URL or REDIS_URL unreachable)");
        return;
    };
    let ip: IpAddr = IP.parse().unwrap();
    c.bench_function(name, |b| {
        b.to_async(rt)
            .iter(|| async { h.accounts.authenticate(cookie, ip).await.unwrap() })
    });
}

fn bench_sessions(c: &mut Criterion) {
    let rt = rt();

    let mem = rt.block_on(signed_in(MemStore::new()));
    bench_authenticate(c, &rt, "sessions/authenticate_mem", Some(&mem));

    let mem_redis = rt.block_on(async {
        let redis = echorelay_store_redis::test_redis().await?;
        let s = redis.fresh_sessions().await;
        Some(signed_in(Composed::new(MemStore::new(), s.clone(), s)).await)
    });
    bench_authenticate(
        c,
        &rt,
        "sessions/authenticate_mem_redis",
        mem_redis.as_ref(),
    );

    let pg_redis = rt.block_on(async {
        let db = echorelay_store_pg::test_database().await?;
        let redis = echorelay_store_redis::test_redis().await?;
        let s = redis.fresh_sessions().await;
        let pg = db.fresh_store().await.expect("a fresh, migrated schema");
        Some(signed_in(Composed::new(pg, s.clone(), s)).await)
    });
    bench_authenticate(c, &rt, "sessions/authenticate_pg_redis", pg_redis.as_ref());
    if let Some((h, _, user)) = &pg_redis {
        // What the split spends on Postgres: the account's epoch.
        let accounts = h.store.durable();
        c.bench_function("sessions/pg_account_read", |b| {
            b.to_async(&rt)
                .iter(|| async { accounts.account(*user).await.unwrap().unwrap() })
        });
    }

    let pg = rt.block_on(async {
        let db = echorelay_store_pg::test_database().await?;
        let pg = db.fresh_store().await.expect("a fresh, migrated schema");
        Some(signed_in(pg).await)
    });
    bench_authenticate(c, &rt, "sessions/authenticate_pg", pg.as_ref());

    // The client library's own ceiling: GET + EXPIRE in one round trip on
    // the connection manager the store uses.
    let ceiling = rt.block_on(async {
        let redis = echorelay_store_redis::test_redis().await?;
        let s = redis.fresh_sessions().await;
        let key = format!("{{{}}}:bench", s.prefix());
        let mut conn = s.connection();
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg(vec![b'x'; 256])
            .query_async(&mut conn)
            .await
            .unwrap();
        Some((s, key))
    });
    match ceiling {
        Some((s, key)) => {
            c.bench_function("sessions/ceiling_redis_rs_get_expire_pipelined", |b| {
                b.to_async(&rt).iter(|| {
                    let mut conn = s.connection();
                    let key = &key;
                    async move {
                        let (v, set): (Vec<u8>, bool) = redis::pipe()
                            .get(key)
                            .expire(key, 1800)
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                        assert!(set && v.len() == 256);
                    }
                })
            });
        }
        None => eprintln!("sessions bench: the redis-rs ceiling skipped (REDIS_URL unreachable)"),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5));
    targets = bench_sessions
}
criterion_main!(benches);
