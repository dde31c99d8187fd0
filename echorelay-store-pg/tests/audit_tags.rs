//! Tagged audit events on Postgres (a `PgStore` given `AuditKeys`): every
//! event reads back with its tag, the chain's sealed head with its own,
//! and both authenticate under the keys; a store without keys reads the
//! same rows back untagged.
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
    // Another key does not authenticate them.
    let other = AuditKeys::from_keyring(&Keyring::new(SecretKey::generate()));
    assert!(!other.event_is_authentic(&events[0]));
    assert!(!other.head_is_authentic(None, &sealed));
}
