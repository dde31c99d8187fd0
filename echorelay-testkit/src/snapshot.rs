//! Conformance suite for [`SnapshotStore`](echorelay_core::ports::SnapshotStore)
//! and [`AccountStore::accounts_page`](echorelay_core::ports::AccountStore::accounts_page):
//! a logical snapshot ([`echorelay_core::backup::snapshot`]) of a store in
//! use restores into an empty store of the same backend with every record
//! as it was, and the credentials in it keep working there. Each check
//! takes a second, empty backend.

use chrono::Duration;
use echorelay_core::access::surface::{ConfigWrite, Keys};
use echorelay_core::account::service::SecondFactor;
use echorelay_core::audit::ChainHead;
use echorelay_core::backup::snapshot::{self, Counts};
use echorelay_core::clock::Clock;
use echorelay_core::config::{AuthInput, NewTarget};
use echorelay_core::error::StoreError;
use echorelay_core::ids::UserId;
use echorelay_core::keys::{Environment, MintRequest, RotateOptions};
use secrecy::{ExposeSecret, SecretString};

use crate::{Backend, Harness};

const TOKEN: &str = "tok_live_9e8d7c6b5a4f3e2d1c0b";

fn ip() -> std::net::IpAddr {
    "198.51.100.44".parse().unwrap()
}

/// Every chain's head, as a backup's manifest records them.
async fn anchors<B: Backend>(
    store: &B,
) -> Vec<(Option<echorelay_core::ids::ProjectId>, ChainHead)> {
    let mut chains = vec![None];
    chains.extend(
        store
            .list_projects()
            .await
            .unwrap()
            .into_iter()
            .map(|p| Some(p.id)),
    );
    let mut out = Vec::new();
    for c in chains {
        if let Some(h) = store.head(c).await.unwrap() {
            out.push((c, h));
        }
    }
    out
}

async fn export<B: Backend>(store: &B, at: chrono::DateTime<chrono::Utc>) -> (Vec<u8>, Counts) {
    let mut buf = Vec::new();
    let counts = snapshot::export(store, "test", at, &mut buf)
        .await
        .expect("snapshot: export through the ports");
    (buf, counts)
}

/// A snapshot of a store in use (accounts with TOTP, a used backup code
/// and a trusted device; projects with lines, endpoints, targets with
/// sealed secrets, members, minted and rotated keys; hundreds of audit
/// events) restores into `empty`: exporting the restored store gives the
/// same bytes, and its keys verify, its secrets open, its accounts sign
/// in with password and TOTP, a used backup code stays used, and its
/// audit chains verify.
pub async fn a_snapshot_restores_every_record<B: Backend>(h: Harness<B>, empty: B) {
    let a = h.enrolled(ip(), true).await;
    let b = h.enrolled(ip(), false).await;
    // b spends a backup code: it must stay spent after the restore.
    let spent = b.backup_codes[0].clone();
    h.clock.advance(Duration::seconds(31));
    h.try_second_factor(&b.email, SecondFactor::BackupCode(spent.clone()), ip())
        .await
        .expect("snapshot: a backup code signs in before the snapshot");

    let mut minted = Vec::new();
    let mut targets = Vec::new();
    for n in 0..3 {
        let (p, owner) = h.project().await;
        let w = h.grant::<ConfigWrite>(&owner, &p).await;
        let line = h
            .config
            .create_line(&w, &format!("line-{n}"))
            .await
            .unwrap();
        h.config
            .create_endpoint(&w, line.id, &format!("in-{n}"))
            .await
            .unwrap();
        let created = h
            .config
            .create_target(
                &w,
                line.id,
                NewTarget {
                    name: format!("out-{n}"),
                    url: format!("https://hooks.example.com/{n}"),
                    auth: AuthInput::Bearer(SecretString::from(TOKEN)),
                    signing_secret: None,
                },
            )
            .await
            .unwrap();
        targets.push((
            p.id,
            created.view.id,
            created.signing_secret.expose_secret().to_owned(),
        ));
        let members = h
            .grant::<echorelay_core::access::surface::Members>(&owner, &p)
            .await;
        h.config
            .set_member(&members, a.user, Some(echorelay_core::access::Role::Viewer))
            .await
            .unwrap();
        let k = h.grant::<Keys>(&owner, &p).await;
        for _ in 0..2 {
            let m = h
                .keys
                .mint(
                    &k,
                    MintRequest {
                        environment: Environment::Live,
                        role: echorelay_core::access::Role::Editor,
                        label: "snapshot".into(),
                    },
                )
                .await
                .unwrap();
            minted.push(m.plaintext.expose_secret().to_owned());
        }
        let first = h.keys.verify(&minted[minted.len() - 2]).await.unwrap();
        let rotated = h
            .keys
            .rotate(&k, first.key_id(), RotateOptions::default())
            .await
            .unwrap();
        minted.push(rotated.plaintext.expose_secret().to_owned());
        // Enough events that every chain spans several export pages.
        for i in 0..200 {
            h.config
                .rename_line(&w, line.id, &format!("line-{n}-{i}"))
                .await
                .unwrap();
        }
    }

    let at = h.clock.now();
    let (bytes, counts) = export(&h.store, at).await;
    assert!(counts.accounts >= 2 && counts.projects == 3 && counts.keys == 9);
    assert!(counts.events > 600, "snapshot: {} events", counts.events);
    let data = snapshot::parse(&bytes, &anchors(&h.store).await)
        .expect("snapshot: what export wrote parses and checks");
    assert_eq!(
        Counts::of(&data),
        counts,
        "snapshot: parse counts what export counted"
    );
    empty
        .restore_snapshot(data)
        .await
        .expect("snapshot: restore into an empty store");

    let r = Harness::with_vault(empty, h.vault.clone());
    r.clock.set(at);
    let (again, _) = export(&r.store, at).await;
    assert!(
        again == bytes,
        "snapshot: the restored store does not read back as the snapshot it was restored from"
    );

    for key in &minted {
        r.keys
            .verify(key)
            .await
            .expect("snapshot: a restored key verifies");
    }
    for (project, target, signing) in &targets {
        let grant = r.voter.dangerous_delivery_grant(*project).await.unwrap();
        let secrets = r.config.delivery_secrets(&grant, *target).await.unwrap();
        let AuthInput::Bearer(token) = &secrets.auth else {
            panic!("snapshot: a restored target lost its bearer token");
        };
        assert_eq!(token.expose_secret(), TOKEN);
        assert_eq!(secrets.signing_secret.expose_secret(), signing);
    }
    r.clock.advance(Duration::minutes(2));
    r.totp_login(&a, ip(), false).await;
    r.totp_login(&b, ip(), false).await;
    assert!(
        r.try_second_factor(&b.email, SecondFactor::BackupCode(spent), ip())
            .await
            .is_err(),
        "snapshot: a spent backup code works again after the restore"
    );
    r.try_second_factor(
        &b.email,
        SecondFactor::BackupCode(b.backup_codes[1].clone()),
        ip(),
    )
    .await
    .expect("snapshot: an unused backup code still signs in");
    for (project, _, _) in &targets {
        let events = {
            let mut all = Vec::new();
            let mut after = 0;
            loop {
                let page = r.store.events(Some(*project), after, 500).await.unwrap();
                let done = page.len() < 500;
                after = page.last().map_or(after, |e| e.seq);
                all.extend(page);
                if done {
                    break;
                }
            }
            all
        };
        echorelay_core::audit::verify_chain(Some(*project), &events, None)
            .expect("snapshot: a restored chain verifies");
    }
}

/// A restore into a store that holds anything is refused with `Conflict`
/// and writes nothing; accounts page by id.
pub async fn a_snapshot_restores_only_into_an_empty_store<B: Backend>(h: Harness<B>, other: B) {
    let a = h.enrolled(ip(), false).await;
    let (bytes, _) = export(&h.store, h.clock.now()).await;
    let data = snapshot::parse(&bytes, &[]).unwrap();

    let o = Harness::new(other);
    let mine = o.enrolled(ip(), false).await;
    let before = export(&o.store, h.clock.now()).await.0;
    let refused = o.store.restore_snapshot(data.clone()).await;
    assert!(
        matches!(refused, Err(StoreError::Conflict { .. })),
        "snapshot: a restore into a store in use must be refused, got {refused:?}"
    );
    assert_eq!(
        export(&o.store, h.clock.now()).await.0,
        before,
        "snapshot: a refused restore wrote something"
    );
    assert!(o.store.account(a.user).await.unwrap().is_none());
    assert!(o.store.account(mine.user).await.unwrap().is_some());

    // accounts_page: id order, `after` exclusive, a short page is the last.
    let mut ids: Vec<UserId> = Vec::new();
    for _ in 0..4 {
        ids.push(h.enrolled(ip(), false).await.user);
    }
    ids.push(a.user);
    ids.sort();
    let all = h.store.accounts_page(None, 100).await.unwrap();
    assert_eq!(all.iter().map(|x| x.id).collect::<Vec<_>>(), ids);
    let first = h.store.accounts_page(None, 2).await.unwrap();
    assert_eq!(first.iter().map(|x| x.id).collect::<Vec<_>>(), ids[..2]);
    let rest = h.store.accounts_page(Some(ids[1]), 100).await.unwrap();
    assert_eq!(rest.iter().map(|x| x.id).collect::<Vec<_>>(), ids[2..]);
    assert!(
        h.store
            .accounts_page(Some(ids[4]), 100)
            .await
            .unwrap()
            .is_empty()
    );
}
