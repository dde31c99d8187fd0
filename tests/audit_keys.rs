//! The one handle's audit log is keyed (issue 16, finding 6b): a store the
//! builder wires is given the audit keys of its keyring, `relay.audit()`
//! checks tags and sealed heads, and a `SECRET_KEY` rotation keeps every
//! chain verifiable once `reseal` ran.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use echorelay::core::audit::{AuditService, BreakKind};
use echorelay::core::ids::ProjectId;
use echorelay::prelude::*;

fn relay(store: &MemStore, keyring: Keyring) -> EchoRelay {
    EchoRelay::builder()
        .store(store.clone())
        .keyring(keyring)
        .build()
        .unwrap()
}

async fn project(relay: &EchoRelay, slug: &str) -> ProjectId {
    relay
        .config()
        .create_project(UserId::random(), None, slug, "Audited")
        .await
        .unwrap()
        .id
}

fn audit_break(r: Result<echorelay::core::audit::ChainStatus, Error>) -> BreakKind {
    match r {
        Err(Error::Audit(b)) => b.problem,
        other => panic!("expected a chain break, got {other:?}"),
    }
}

#[tokio::test]
async fn the_handle_checks_tags_and_says_so() {
    let store = MemStore::new();
    let keyed = relay(&store, Keyring::new(SecretKey::generate()));
    let p = project(&keyed, "keyed").await;
    let status = keyed.audit().verify_chain(Some(p), None).await.unwrap();
    assert!(status.keyed && status.events >= 1, "{status:?}");
    // The same chain through a hashes-only service: verified, not keyed.
    let plain = AuditService::new(store.clone());
    let status = plain.verify_chain(Some(p), None).await.unwrap();
    assert!(!status.keyed);
    // A keyed check of a project chain with no event is a cut chain; the
    // global chain may be empty.
    assert_eq!(
        audit_break(
            keyed
                .audit()
                .verify_chain(Some(ProjectId::random()), None)
                .await
        ),
        BreakKind::Truncated
    );
    assert!(
        plain
            .verify_chain(Some(ProjectId::random()), None)
            .await
            .is_ok()
    );
    let global = keyed.audit().verify_chain(None, None).await.unwrap();
    assert_eq!((global.events, global.keyed), (0, true));
}

#[tokio::test]
async fn a_rotated_secret_key_keeps_chains_verifiable_after_reseal() {
    let (old, new) = (SecretKey::generate(), SecretKey::generate());
    let store = MemStore::new();
    let before = relay(&store, Keyring::new(old.clone()));
    let p = project(&before, "rotated").await;
    // The new key alone cannot check what the old one tagged.
    let new_only = relay(&store, Keyring::new(new.clone()));
    assert_eq!(
        audit_break(new_only.audit().verify_chain(Some(p), None).await),
        BreakKind::NotAuthentic
    );
    // During the rotation (old key still previous): reseal moves the head
    // to the new key, once.
    let during = relay(&store, Keyring::new(new.clone()).with_previous(old));
    assert!(during.audit().reseal(Some(p)).await.unwrap());
    assert!(
        !during.audit().reseal(Some(p)).await.unwrap(),
        "already current"
    );
    assert!(
        !during.audit().reseal(None).await.unwrap(),
        "an empty chain"
    );
    // Now the new key alone verifies the whole chain.
    let after = relay(&store, Keyring::new(new));
    let status = after.audit().verify_chain(Some(p), None).await.unwrap();
    assert!(status.keyed && status.events >= 1);
    // A hashes-only service has nothing to reseal.
    assert!(
        !AuditService::new(store.clone())
            .reseal(Some(p))
            .await
            .unwrap()
    );
}
