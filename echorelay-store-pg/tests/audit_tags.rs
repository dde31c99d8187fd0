//! Tagged audit events on Postgres (a `PgStore` given `AuditKeys`): every
//! event reads back with its tag, the chain's sealed head with its own,
//! and both authenticate under the keys; a store without keys reads the
//! same rows back untagged. And a store with a key cache closes its
//! listener connection when it is dropped.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use echorelay_core::account::AccountAction;
use echorelay_core::audit::{Actor, AuditDraft, AuditKeys, EventKind, verify_chain};
use echorelay_core::ids::UserId;
use echorelay_core::ports::{AuditLog, AuditSink};
use echorelay_core::vault::{Keyring, SecretKey};
use echorelay_store_pg::test_database;

fn draft(user: UserId) -> AuditDraft {
    AuditDraft {
        project: None,
        at: chrono::Utc::now(),
        actor: Actor::User(user),
        ip: None,
        subject: Some(user),
        kind: EventKind::Account {
            action: AccountAction::LoginSucceeded,
            failure: None,
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tagged_events_and_the_sealed_head_read_back_authentic() {
    let Some(db) = test_database().await else {
        return;
    };
    let keys = AuditKeys::from_keyring(&Keyring::new(SecretKey::generate()));
    let store = db
        .fresh_store()
        .await
        .unwrap()
        .with_audit_keys(keys.clone());
    let user = UserId::random();
    for _ in 0..3 {
        store.append(draft(user)).await.unwrap();
    }
    let events = store.events(None, 0, 10).await.unwrap();
    assert_eq!(events.len(), 3);
    for e in &events {
        assert!(e.tag.is_some(), "event {} read back without its tag", e.seq);
        assert!(keys.event_is_authentic(e));
    }
    let sealed = store
        .sealed_head(None)
        .await
        .unwrap()
        .expect("a sealed head");
    assert_eq!(sealed.head, events[2].head());
    assert!(keys.head_is_authentic(None, &sealed));
    assert_eq!(
        verify_chain(None, &events, None).unwrap(),
        Some(events[2].head())
    );
    // reseal_head: true only while the given head is still the chain's
    // newest; the head stays authentic.
    assert!(store.reseal_head(None, events[2].head()).await.unwrap());
    assert!(!store.reseal_head(None, events[1].head()).await.unwrap());
    let resealed = store.sealed_head(None).await.unwrap().unwrap();
    assert!(keys.head_is_authentic(None, &resealed));
    // Another key does not authenticate them.
    let other = AuditKeys::from_keyring(&Keyring::new(SecretKey::generate()));
    assert!(!other.event_is_authentic(&events[0]));
    assert!(!other.head_is_authentic(None, &sealed));
}

/// Dropping the last handle of a store with a key cache stops the cache's
/// tasks at once, so its LISTEN connection closes (no connection outlives
/// its store). The lease is long (60 s: the supervisor wakes every 15 s),
/// so only the drop itself, not the supervisor noticing later, closes it
/// within the 5 s allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_cached_store_closes_its_listener() {
    use echorelay_store_pg::KeyCacheConfig;
    let Some(db) = test_database().await else {
        return;
    };
    let store = db
        .fresh_store_with(|o| {
            o.key_cache(KeyCacheConfig {
                lease: std::time::Duration::from_secs(60),
                ..KeyCacheConfig::default()
            })
        })
        .await
        .unwrap();
    let cache = store.key_cache().expect("a cache");
    let start = std::time::Instant::now();
    while !cache.is_serving() {
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let name = cache.listener_application_name().to_owned();
    let observer = db.fresh_store().await.unwrap();
    let listeners = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
        )
        .bind(&name)
        .fetch_one(observer.pool())
        .await
        .unwrap()
    };
    assert_eq!(listeners().await, 1);
    drop(store);
    let start = std::time::Instant::now();
    while listeners().await > 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(5),
            "the listener outlived its store"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
