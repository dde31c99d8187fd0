//! Conformance suite for the SECRET_KEY rewrap pass
//! ([`echorelay_core::rewrap::Rewrap`]) over
//! every port that holds sealed values (S4 across a key rotation): target
//! secrets, TOTP seeds and pending key reveals.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::Duration;
use echorelay_core::access::surface::{ConfigRead, ConfigWrite, Keys};
use echorelay_core::access::{Caller, Role};
use echorelay_core::audit::EventKind;
use echorelay_core::clock::Clock;
use echorelay_core::config::{AuthInput, ConfigChange, NewTarget, Project, SigningRotation, Write};
use echorelay_core::error::StoreError;
use echorelay_core::keys::{Environment, MintRequest};
use echorelay_core::rewrap::{Rewrap, RewrapCursor, SealedKind};
use echorelay_core::vault::{AesGcmVault, Keyring, SecretKey, SecretVault};
use secrecy::{ExposeSecret, SecretString};

use crate::{Backend, Harness};

fn ip() -> IpAddr {
    "198.51.100.30".parse().unwrap()
}

fn vault(current: &SecretKey, previous: Option<&SecretKey>) -> Arc<AesGcmVault> {
    let mut ring = Keyring::new(current.clone());
    if let Some(p) = previous {
        ring = ring.with_previous(p.clone());
    }
    Arc::new(AesGcmVault::new(ring))
}

/// `h`'s store and clock behind another SECRET_KEY set: another deploy.
fn redeploy<B: Backend>(h: &Harness<B>, v: Arc<AesGcmVault>) -> Harness<B> {
    let other = Harness::with_vault(h.store.clone(), v);
    other.clock.set(h.clock_now());
    other
}

fn rewrap<B: Backend>(h: &Harness<B>) -> Rewrap<B, Arc<AesGcmVault>> {
    let clock: Arc<dyn Clock> = Arc::new(h.clock.clone());
    Rewrap::new(h.store.clone(), h.vault.clone(), clock)
}

fn target(name: &str, auth: AuthInput) -> NewTarget {
    NewTarget {
        name: name.into(),
        url: format!("https://hooks.example.com/{name}"),
        auth,
        signing_secret: None,
    }
}

/// Two targets (bearer and basic auth), both sealed under the harness's key.
async fn project_with_targets<B: Backend>(h: &Harness<B>) -> (Project, Caller) {
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let line = h.config.create_line(&w, "orders").await.unwrap();
    let bearer = AuthInput::Bearer(SecretString::from("tok-0123456789abcdef"));
    h.config
        .create_target(&w, line.id, target("a", bearer))
        .await
        .unwrap();
    let basic = AuthInput::Basic {
        username: "relay".into(),
        password: SecretString::from("pw-0123456789abcdef"),
    };
    h.config
        .create_target(&w, line.id, target("b", basic))
        .await
        .unwrap();
    (p, owner)
}

/// The whole rotation, as an operator runs it: rotate SECRET_KEY, rewrap,
/// check that nothing is sealed under the old key any more, drop it; then a
/// TOTP login, the reveal of a pending successor and every target read all
/// work under the new key alone.
pub async fn rewrap_covers_every_sealed_value<B: Backend>(h: Harness<B>) {
    let (old_key, new_key) = (SecretKey::generate(), SecretKey::generate());
    let old = redeploy(&h, vault(&old_key, None));
    // Sealed under the old key: two targets, a TOTP seed, a pending reveal.
    let (p, owner) = project_with_targets(&old).await;
    let enrolled = old.enrolled(ip(), false).await;
    let g = old.grant::<Keys>(&owner, &p).await;
    let req = MintRequest {
        environment: Environment::Live,
        role: Role::Viewer,
        label: "ci".into(),
    };
    let minted = old.keys.mint(&g, req).await.unwrap();
    old.clock.advance(Duration::days(84));
    assert_eq!(old.keys.rotate_due().await.unwrap().rotated, 1);
    // And a retired signing secret (a rotation's grace): sealed too.
    let r = old.grant::<ConfigRead>(&owner, &p).await;
    let a = old.config.lines(&r).await.unwrap()[0].targets[0].id;
    let w = old.grant::<ConfigWrite>(&owner, &p).await;
    let dg = old.voter.dangerous_delivery_grant(p.id).await.unwrap();
    let retired = old
        .config
        .delivery_secrets(&dg, a)
        .await
        .unwrap()
        .signing_secret;
    old.config
        .rotate_signing_secret(&w, a, SigningRotation::default())
        .await
        .unwrap();

    // Deploy the new key with the old one as previous; rewrap in pages of 1.
    let both = redeploy(&old, vault(&new_key, Some(&old_key)));
    let usage = rewrap(&both).key_usage(2).await.unwrap();
    assert!(
        usage.in_use(old_key.id()),
        "rewrap: nothing under the old key?"
    );
    let report = rewrap(&both).run(1).await.unwrap();
    assert!(report.is_complete(), "rewrap: incomplete pass {report:?}");
    // 2 targets + 1 seed + 1 reveal (other tests' records do not exist in
    // this fresh backend).
    assert_eq!(report.rewrapped, 4, "rewrap: {report:?}");
    let again = rewrap(&both).run(10).await.unwrap();
    assert_eq!(again.rewrapped, 0, "rewrap: second pass rewrote {again:?}");
    assert_eq!(again.current, 4);
    let usage = rewrap(&both).key_usage(1).await.unwrap();
    assert!(!usage.in_use(old_key.id()), "rewrap: old key still in use");
    // Five target secrets (two each, one retired), one seed, one reveal.
    assert_eq!(usage.by_key.get(&new_key.id()), Some(&7));
    let rewraps = h
        .count_events(p.id, |e| matches!(e.kind, EventKind::Rewrap { .. }))
        .await;
    assert_eq!(rewraps, 3, "rewrap: targets and reveal not audited");

    // Drop the old key. Everything still works.
    let new = redeploy(&both, vault(&new_key, None));
    let login = new.totp_login(&enrolled, ip(), false).await;
    assert!(!login.session.token.expose_secret().is_empty());
    let g = new.grant::<Keys>(&owner, &p).await;
    let succ = new
        .keys
        .list_page(&g, None, 500)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.reveal_pending)
        .expect("rewrap: the pending reveal is gone");
    let key = new.keys.reveal(&g, succ.id).await.unwrap();
    new.keys.verify(key.expose_secret()).await.unwrap();
    new.keys
        .verify(minted.plaintext.expose_secret())
        .await
        .unwrap();
    let r = new.grant::<ConfigRead>(&owner, &p).await;
    let lines = new.config.lines(&r).await.unwrap();
    assert_eq!(lines[0].targets.len(), 2);
    // The retired secret opens under the new key alone and still signs.
    let g = new.voter.dangerous_delivery_grant(p.id).await.unwrap();
    let opened = new.config.delivery_secrets(&g, a).await.unwrap();
    let active = opened.signing_secrets_at(new.clock_now());
    assert_eq!(
        active.len(),
        2,
        "rewrap: the retired secret no longer signs"
    );
    assert_eq!(active[1].expose_secret(), retired.expose_secret());
}

/// A record that does not open is named in the report, left as it is, and
/// does not stop the pass; a resumed pass (cursor through JSON) covers the
/// same records as one run.
pub async fn rewrap_reports_what_does_not_open_and_resumes<B: Backend>(h: Harness<B>) {
    let (old_key, new_key, lost_key) = (
        SecretKey::generate(),
        SecretKey::generate(),
        SecretKey::generate(),
    );
    let old = redeploy(&h, vault(&old_key, None));
    project_with_targets(&old).await;
    // A target sealed under a key nobody has any more.
    let lost = redeploy(&h, vault(&lost_key, None));
    let (lp, lowner) = lost.project().await;
    let w = lost.grant::<ConfigWrite>(&lowner, &lp).await;
    let line = lost.config.create_line(&w, "l").await.unwrap();
    let orphan = lost
        .config
        .create_target(&w, line.id, target("orphan", AuthInput::None))
        .await
        .unwrap();

    let both = redeploy(&h, vault(&new_key, Some(&old_key)));
    // Resumable: pages of one, the cursor stored as JSON between pages.
    let mut cursor = Some(serde_json::to_string(&RewrapCursor::start()).unwrap());
    let (mut rewrapped, mut failed, mut pages) = (0, Vec::new(), 0);
    while let Some(json) = cursor {
        let c: RewrapCursor = serde_json::from_str(&json).unwrap();
        let page = rewrap(&both).page(&c, 1).await.unwrap();
        rewrapped += page.rewrapped;
        failed.extend(page.failed);
        cursor = page.next.map(|n| serde_json::to_string(&n).unwrap());
        pages += 1;
        assert!(pages < 50, "rewrap: the pass does not end");
    }
    assert_eq!(rewrapped, 2, "rewrap: the good targets were not all moved");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].kind, SealedKind::TargetSecret);
    assert_eq!(failed[0].id, orphan.view.id.to_string());
    // The orphan is untouched (still under the lost key).
    let stored = h
        .store
        .target(lp.id, orphan.view.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.signing_secret.key_id(), lost_key.id());
    let usage = rewrap(&both).key_usage(1).await.unwrap();
    assert!(usage.in_use(lost_key.id()));
    assert!(!usage.in_use(old_key.id()));
    // Pages end where the records do: 3 targets in pages of 2 are 2 pages,
    // then one (empty) page per other kind; no extra empty page.
    let (mut cursor, mut pages) = (Some(RewrapCursor::start()), 0);
    while let Some(c) = cursor {
        cursor = rewrap(&both).page(&c, 2).await.unwrap().next;
        pages += 1;
    }
    assert_eq!(pages, 4, "rewrap: pages of a 3-target store");
    // A whole run says the same: not complete, one failure, no conflicts.
    let report = rewrap(&both).run(3).await.unwrap();
    assert!(report.conflicts.is_empty());
    assert_eq!(report.failed, failed);
    assert!(
        !report.is_complete(),
        "rewrap: a failed record counted as complete"
    );
}

/// The conditional writes the pass relies on: a stale target copy is
/// refused (compare-and-swap on the version), and a TOTP seed or pending
/// reveal is replaced only while it is still the ciphertext that was read.
pub async fn rewrap_never_overwrites_a_concurrent_change<B: Backend>(h: Harness<B>) {
    let (p, owner) = project_with_targets(&h).await;
    let stale = h.store.tree(p.id).await.unwrap().targets.remove(0);
    // An editor changes the target after the pass read it.
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let patch = echorelay_core::config::TargetPatch {
        url: Some("https://hooks.example.com/moved".into()),
        ..Default::default()
    };
    h.config.update_target(&w, stale.id, patch).await.unwrap();
    let head = h.store.head(Some(p.id)).await.unwrap();
    let draft = echorelay_core::audit::AuditDraft {
        project: Some(p.id),
        at: h.clock_now(),
        actor: echorelay_core::audit::Actor::System,
        ip: None,
        subject: None,
        kind: EventKind::Rewrap {
            sealed: SealedKind::TargetSecret,
            id: stale.id.to_string(),
        },
    };
    let r = h
        .store
        .apply(
            ConfigChange::PutTarget(Write::Update, stale.clone()),
            draft.clone(),
        )
        .await;
    assert!(
        matches!(r, Err(StoreError::Conflict { .. })),
        "rewrap: a stale target write was not refused: {r:?}"
    );
    let now = h.store.target(p.id, stale.id).await.unwrap().unwrap();
    assert_eq!(now.url, "https://hooks.example.com/moved");
    assert_eq!(h.store.head(Some(p.id)).await.unwrap(), head);

    // TOTP seed: replaced only from the expected ciphertext.
    let a = h.enrolled(ip(), false).await;
    let seed = h.store.totp(a.user).await.unwrap().unwrap().seed;
    let other = h
        .vault
        .seal(b"x", &ctx("accounts", "u", "account.totp_seed"))
        .unwrap();
    assert!(
        !h.store
            .replace_totp_seed(a.user, &other, other.clone())
            .await
            .unwrap()
    );
    assert_eq!(h.store.totp(a.user).await.unwrap().unwrap().seed, seed);

    // Pending reveal: likewise.
    let g = h.grant::<Keys>(&owner, &p).await;
    let req = MintRequest {
        environment: Environment::Test,
        role: Role::Viewer,
        label: String::new(),
    };
    h.keys.mint(&g, req).await.unwrap();
    h.clock.advance(Duration::days(84));
    h.keys.rotate_due().await.unwrap();
    let succ = h
        .store
        .keys_with_pending_reveal(None, 10)
        .await
        .unwrap()
        .remove(0);
    let head = h.store.head(Some(p.id)).await.unwrap();
    assert!(
        !h.store
            .replace_pending_reveal(succ.id, &other, other.clone(), draft)
            .await
            .unwrap()
    );
    assert_eq!(
        h.store
            .key_by_id(succ.id)
            .await
            .unwrap()
            .unwrap()
            .pending_reveal,
        succ.pending_reveal
    );
    assert_eq!(h.store.head(Some(p.id)).await.unwrap(), head);
}

fn ctx<'a>(
    project: &'a str,
    record: &'a str,
    field: &'a str,
) -> echorelay_core::vault::SecretContext<'a> {
    echorelay_core::vault::SecretContext {
        project,
        record,
        field,
    }
}
