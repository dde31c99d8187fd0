//! Conformance suite for [`ConfigStore`](echorelay_core::ports::ConfigStore),
//! driven through [`ConfigService`](echorelay_core::config::ConfigService).

use echorelay_core::Error;
use echorelay_core::access::surface::{ConfigRead, ConfigWrite};
use echorelay_core::audit::{ConfigEntity, ConfigOp, EventKind};
use echorelay_core::config::{
    AuthInput, AuthView, ConfigChange, ConfigError, NewTarget, TargetPatch, Write,
};
use echorelay_core::error::StoreError;
use echorelay_core::ids::{EndpointId, ProjectId};
use echorelay_core::ports::IngestRoute;

use echorelay_core::vault::VaultError;
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use crate::{Backend, Harness};

const TOKEN: &str = "tok_live_4f9a8b7c6d5e4f3a2b1c";
const PASSWORD: &str = "correct horse battery staple";

fn bearer_target() -> NewTarget {
    NewTarget {
        name: "orders".into(),
        url: "https://hooks.example.com/orders".into(),
        auth: AuthInput::Bearer(SecretString::from(TOKEN)),
        signing_secret: None,
    }
}

/// S4 + S5: secrets reach the store only as ciphertext; reads are masked.
pub async fn secrets_are_stored_sealed_and_read_masked<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let r = h.grant::<ConfigRead>(&owner, &p).await;
    let line = h.config.create_line(&w, "orders").await.unwrap();
    let created = h
        .config
        .create_target(&w, line.id, bearer_target())
        .await
        .unwrap();
    let signing = created.signing_secret.expose_secret().to_owned();
    assert!(signing.starts_with("whsec_"));
    let basic = NewTarget {
        name: "erp".into(),
        url: "https://erp.example.com/in".into(),
        auth: AuthInput::Basic {
            username: "relay".into(),
            password: SecretString::from(PASSWORD),
        },
        signing_secret: None,
    };
    let created_basic = h.config.create_target(&w, line.id, basic).await.unwrap();
    let tree = h.store.tree(p.id).await.unwrap();
    let stored = serde_json::to_string(&tree).unwrap();
    for secret in [TOKEN, PASSWORD, signing.as_str(), &signing[6..]] {
        assert!(!stored.contains(secret), "config: plaintext secret at rest");
    }
    let view = h.config.target(&r, created.view.id).await.unwrap();
    assert_eq!(
        view.auth,
        AuthView::Bearer {
            token: echorelay_core::vault::Masked::of(&SecretString::from(TOKEN))
        }
    );
    let AuthView::Bearer { token } = &view.auth else {
        unreachable!()
    };
    assert_eq!(token.as_str(), "••••2b1c");
    let read = serde_json::to_string(&h.config.lines(&r).await.unwrap()).unwrap();
    let export = h.config.export(&r).await.unwrap();
    let debug = format!(
        "{view:?} {created_basic:?} {:?}",
        h.config.lines(&r).await.unwrap()
    );
    for out in [&read, &export, &debug] {
        for secret in [TOKEN, PASSWORD, &signing[6..]] {
            assert!(
                !out.contains(secret),
                "config: plaintext secret in a read API"
            );
        }
    }
    assert!(read.contains("••••"));
    let basic_view = h.config.target(&r, created_basic.view.id).await.unwrap();
    let AuthView::Basic { password, username } = &basic_view.auth else {
        unreachable!()
    };
    assert_eq!((username.as_str(), password.as_str()), ("relay", "••••"));
}

/// S4: a ciphertext copied to another target, field or project does not
/// decrypt.
pub async fn moved_ciphertext_does_not_decrypt<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let r = h.grant::<ConfigRead>(&owner, &p).await;
    let line = h.config.create_line(&w, "l").await.unwrap();
    let a = h
        .config
        .create_target(&w, line.id, bearer_target())
        .await
        .unwrap();
    let b = h
        .config
        .create_target(
            &w,
            line.id,
            NewTarget {
                name: "b".into(),
                ..bearer_target()
            },
        )
        .await
        .unwrap();
    let tree = h.store.tree(p.id).await.unwrap();
    let ta = tree
        .targets
        .iter()
        .find(|t| t.id == a.view.id)
        .unwrap()
        .clone();
    let mut tb = tree
        .targets
        .iter()
        .find(|t| t.id == b.view.id)
        .unwrap()
        .clone();
    // Another row: a's token copied into b.
    tb.auth = ta.auth.clone();
    let audit = echorelay_core::audit::AuditDraft {
        project: Some(p.id),
        at: h.clock_now(),
        actor: echorelay_core::audit::Actor::System,
        ip: None,
        subject: None,
        kind: EventKind::Config {
            entity: ConfigEntity::Target,
            op: ConfigOp::Update,
            id: tb.id.to_string(),
        },
    };
    h.store
        .apply(ConfigChange::PutTarget(Write::Update, tb.clone()), audit)
        .await
        .unwrap();
    assert!(matches!(
        h.config.target(&r, b.view.id).await,
        Err(Error::Vault(VaultError::Decrypt))
    ));
    // Another field: the signing secret's ciphertext as the bearer token.
    let mut tc = ta.clone();
    tc.auth = echorelay_core::config::StoredAuth::Bearer {
        token: ta.signing_secret.clone(),
    };
    assert!(matches!(
        h.config.view(&tc),
        Err(Error::Vault(VaultError::Decrypt))
    ));
    // Another project.
    let mut td = ta.clone();
    td.project = echorelay_core::ids::ProjectId::random();
    assert!(matches!(
        h.config.view(&td),
        Err(Error::Vault(VaultError::Decrypt))
    ));
    assert!(h.config.view(&ta).is_ok());
}

/// Every mutation is audited; entities of another project are invisible;
/// deleting a line removes its children.
pub async fn crud_is_audited_and_scoped_to_the_project<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let (q, owner_q) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let wq = h.grant::<ConfigWrite>(&owner_q, &q).await;
    let line = h.config.create_line(&w, "orders").await.unwrap();
    let ep = h
        .config
        .create_endpoint(&w, line.id, "shopify")
        .await
        .unwrap();
    let t = h
        .config
        .create_target(&w, line.id, bearer_target())
        .await
        .unwrap();
    h.config
        .rename_line(&w, line.id, "orders-v2")
        .await
        .unwrap();
    let patched = h
        .config
        .update_target(
            &w,
            t.view.id,
            TargetPatch {
                url: Some("https://new.example.com/x".into()),
                auth: Some(AuthInput::None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.auth, AuthView::None);
    assert_eq!(patched.url, "https://new.example.com/x");
    // Project q cannot touch p's entities, and cannot hang children on p's line.
    let nf = |r: Result<(), Error>| matches!(r, Err(Error::Store(StoreError::NotFound { .. })));
    assert!(nf(h.config.delete_target(&wq, t.view.id).await));
    assert!(nf(h.config.delete_endpoint(&wq, ep.id).await));
    assert!(nf(h.config.delete_line(&wq, line.id).await));
    assert!(nf(h
        .config
        .rename_line(&wq, line.id, "x")
        .await
        .map(|_| ())));
    assert!(nf(h
        .config
        .create_endpoint(&wq, line.id, "x")
        .await
        .map(|_| ())));
    assert!(nf(h
        .config
        .update_target(&wq, t.view.id, TargetPatch::default())
        .await
        .map(|_| ())));
    // Bad input is typed and writes nothing.
    let head = h.store.head(Some(p.id)).await.unwrap();
    assert!(matches!(
        h.config.create_line(&w, "").await,
        Err(Error::Config(ConfigError::Name(_)))
    ));
    let bad_url = NewTarget {
        url: "ftp://x".into(),
        ..bearer_target()
    };
    assert!(matches!(
        h.config.create_target(&w, line.id, bad_url).await,
        Err(Error::Config(ConfigError::Url(_)))
    ));
    let bad_secret = NewTarget {
        auth: AuthInput::Bearer(SecretString::from("")),
        ..bearer_target()
    };
    assert!(matches!(
        h.config.create_target(&w, line.id, bad_secret).await,
        Err(Error::Config(ConfigError::Secret(_)))
    ));
    assert_eq!(h.store.head(Some(p.id)).await.unwrap(), head);
    h.config.delete_line(&w, line.id).await.unwrap();
    let tree = h.store.tree(p.id).await.unwrap();
    assert!(tree.lines.is_empty() && tree.endpoints.is_empty() && tree.targets.is_empty());
    let ops: Vec<(ConfigEntity, ConfigOp)> = h
        .store
        .events(Some(p.id), 0, 100)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Config { entity, op, .. } => Some((entity, op)),
            _ => None,
        })
        .collect();
    use ConfigEntity as E;
    use ConfigOp as O;
    assert_eq!(
        ops,
        vec![
            (E::Project, O::Create),
            (E::Line, O::Create),
            (E::Endpoint, O::Create),
            (E::Target, O::Create),
            (E::Line, O::Update),
            (E::Target, O::Update),
            (E::Line, O::Delete)
        ]
    );
}

/// A predicate on the error a bad input must produce.
type ErrorCheck = fn(&Error) -> bool;

/// The tree exports to JSON and imports back; bad JSON and inconsistent
/// trees get typed errors and write nothing.
pub async fn export_import_round_trip_and_bad_input<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let r = h.grant::<ConfigRead>(&owner, &p).await;
    let line = h.config.create_line(&w, "orders").await.unwrap();
    h.config.create_endpoint(&w, line.id, "in").await.unwrap();
    h.config
        .create_target(&w, line.id, bearer_target())
        .await
        .unwrap();
    let before = h.store.tree(p.id).await.unwrap();
    let json = h.config.export(&r).await.unwrap();
    h.config.delete_line(&w, line.id).await.unwrap();
    let imported = h.config.import(&w, &json).await.unwrap();
    assert_eq!(
        Some(imported.project.version),
        h.store.project(p.id).await.unwrap().map(|x| x.version),
        "config: import returned another version than it stored"
    );
    // Same content; the project's version moved on (it counts changes).
    let before = unversioned(before);
    assert_eq!(unversioned(imported), before);
    assert_eq!(unversioned(h.store.tree(p.id).await.unwrap()), before);
    let head = h.store.head(Some(p.id)).await.unwrap();
    let cases: Vec<(String, ErrorCheck)> = vec![
        ("not json".into(), |e| {
            matches!(e, Error::Config(ConfigError::Json(_)))
        }),
        ("{}".into(), |e| {
            matches!(e, Error::Config(ConfigError::Json(_)))
        }),
        (json.replace("\"version\": 1", "\"version\": 9"), |e| {
            matches!(e, Error::Config(ConfigError::Version(9)))
        }),
        (
            json.replace(
                &line.id.to_string(),
                &echorelay_core::ids::LineId::random().to_string(),
            )
            .replacen("\"lines\": [", "\"lines\": [], \"x\": [", 1),
            |e| {
                matches!(
                    e,
                    Error::Config(ConfigError::Json(_)) | Error::Config(ConfigError::Tree(_))
                )
            },
        ),
        (
            json.replace("https://hooks.example.com/orders", "javascript:alert(1)"),
            |e| matches!(e, Error::Config(ConfigError::Url(_))),
        ),
        (json.replace("\"erv1:", "\"erv1:AAAA"), |e| {
            matches!(e, Error::Config(ConfigError::Json(_)) | Error::Vault(_))
        }),
    ];
    for (input, ok) in cases {
        let err = h
            .config
            .import(&w, &input)
            .await
            .expect_err("config: bad import accepted");
        assert!(ok(&err), "config: unexpected error {err:?}");
    }
    assert_eq!(
        h.store.head(Some(p.id)).await.unwrap(),
        head,
        "config: failed import wrote"
    );
    assert_eq!(unversioned(h.store.tree(p.id).await.unwrap()), before);
    // An editor's import keeps the project's slug and key policy.
    let renamed = json.replace(p.slug.as_str(), "hijacked-slug");
    h.config.import(&w, &renamed).await.unwrap();
    assert_eq!(h.store.project(p.id).await.unwrap().unwrap().slug, p.slug);
    // An export of project p cannot be imported into project q.
    let (q, owner_q) = h.project().await;
    let wq = h.grant::<ConfigWrite>(&owner_q, &q).await;
    assert!(matches!(
        h.config.import(&wq, &json).await,
        Err(Error::Config(ConfigError::Tree(_)))
    ));
}

/// Two projects cannot share a slug.
pub async fn slugs_are_unique<B: Backend>(h: Harness<B>) {
    let (p, _) = h.project().await;
    let other = echorelay_core::ids::UserId::random();
    let err = h
        .config
        .create_project(other, None, p.slug.as_str(), "dup")
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Store(StoreError::AlreadyExists { .. })
    ));
    assert!(matches!(
        h.config.create_project(other, None, "Bad Slug", "x").await,
        Err(Error::Config(ConfigError::Slug(_)))
    ));
}

/// The tree with its compare-and-swap versions zeroed, to compare content.
pub fn unversioned(
    mut tree: echorelay_core::config::ProjectTree,
) -> echorelay_core::config::ProjectTree {
    tree.project.version = 0;
    for t in &mut tree.targets {
        t.version = 0;
    }
    tree
}

/// The delivery capability: the worker's grant opens the granted project's
/// target secrets (every call audited), and nothing of another project.
pub async fn delivery_secrets_are_narrow_and_audited<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let line = h.config.create_line(&w, "orders").await.unwrap();
    let created = h
        .config
        .create_target(&w, line.id, bearer_target())
        .await
        .unwrap();
    let grant = h.voter.dangerous_delivery_grant(p.id).await.unwrap();
    let secrets = h
        .config
        .delivery_secrets(&grant, created.view.id)
        .await
        .unwrap();
    let AuthInput::Bearer(token) = &secrets.auth else {
        panic!("config: delivery secrets lost the bearer token");
    };
    assert_eq!(token.expose_secret(), TOKEN);
    assert_eq!(
        secrets.signing_secret.expose_secret(),
        created.signing_secret.expose_secret()
    );
    assert!(
        !format!("{secrets:?}").contains(TOKEN),
        "config: Debug leaks"
    );
    assert!(format!("{secrets:?}").contains(&created.view.id.to_string()));
    let opened = h
        .count_events(p.id, |e| {
            matches!(
                &e.kind,
                EventKind::Config {
                    entity: ConfigEntity::Target,
                    op: ConfigOp::SecretsOpened,
                    id,
                } if *id == created.view.id.to_string()
            )
        })
        .await;
    assert_eq!(opened, 1, "config: opening secrets was not audited");
    // Another project's delivery grant does not reach this target.
    let (q, _) = h.project().await;
    let other = h.voter.dangerous_delivery_grant(q.id).await.unwrap();
    assert!(matches!(
        h.config.delivery_secrets(&other, created.view.id).await,
        Err(Error::Store(StoreError::NotFound { .. }))
    ));
    // No user or key obtains the surface through the voter.
    assert!(matches!(
        h.voter
            .authorize::<echorelay_core::access::surface::Delivery>(&owner, p.slug.as_str())
            .await,
        Err(Error::Denied(_))
    ));
}

/// Bad input and refused changes write nothing, for configuration and
/// membership as for keys: no entity, no audit event, no version bump.
pub async fn refused_changes_write_nothing<B: Backend>(h: Harness<B>) {
    use echorelay_core::access::Role;
    use echorelay_core::access::surface::Members;
    use echorelay_core::ids::{LineId, TargetId, UserId};
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let m = h.grant::<Members>(&owner, &p).await;
    let line = h.config.create_line(&w, "orders").await.unwrap();
    let before = h.store.tree(p.id).await.unwrap();
    let head = h.store.head(Some(p.id)).await.unwrap();
    let members = crate::all_members(&h.store, p.id).await;
    let me = match owner.principal {
        echorelay_core::access::Principal::User(u) => u,
        _ => unreachable!(),
    };
    let results: Vec<(&str, Result<(), Error>)> = vec![
        (
            "empty line name",
            h.config.create_line(&w, "").await.map(|_| ()),
        ),
        (
            "control character in a name",
            h.config
                .rename_line(&w, line.id, "a\u{7}b")
                .await
                .map(|_| ()),
        ),
        (
            "endpoint on a missing line",
            h.config
                .create_endpoint(&w, LineId::random(), "in")
                .await
                .map(|_| ()),
        ),
        (
            "update of a missing target",
            h.config
                .update_target(&w, TargetId::random(), Default::default())
                .await
                .map(|_| ()),
        ),
        (
            "target with a javascript: URL",
            h.config
                .create_target(
                    &w,
                    line.id,
                    NewTarget {
                        url: "javascript:alert(1)".into(),
                        ..bearer_target()
                    },
                )
                .await
                .map(|_| ()),
        ),
        (
            "removing a non-member",
            h.config.set_member(&m, UserId::random(), None).await,
        ),
        (
            "demoting the last owner",
            h.config.set_member(&m, me, Some(Role::Viewer)).await,
        ),
        (
            "importing garbage",
            h.config.import(&w, "{").await.map(|_| ()),
        ),
    ];
    for (what, r) in results {
        assert!(r.is_err(), "config: {what} was accepted");
    }
    assert_eq!(
        h.store.tree(p.id).await.unwrap(),
        before,
        "config: a refused change wrote"
    );
    assert_eq!(
        h.store.head(Some(p.id)).await.unwrap(),
        head,
        "config: a refused change was audited"
    );
    assert_eq!(crate::all_members(&h.store, p.id).await, members);
}

/// Names (lines, endpoints, targets) are 1 to 200 characters without
/// control characters, counted as characters, not bytes; a target URL is
/// at most 2048 bytes. Each boundary is accepted and the value one past it
/// is refused, as a typed error that writes nothing.
pub async fn names_and_urls_are_checked_at_their_boundaries<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    for good in ["x".repeat(200), "\u{e9}".repeat(200), "a".into()] {
        let line = h.config.create_line(&w, &good).await.unwrap();
        assert_eq!(line.name, good);
    }
    let line = h.config.create_line(&w, "orders").await.unwrap();
    let base = "https://hooks.example.com/";
    let longest = format!("{base}{}", "a".repeat(2048 - base.len()));
    let target = |url: &str| NewTarget {
        url: url.into(),
        ..bearer_target()
    };
    h.config
        .create_target(&w, line.id, target(&longest))
        .await
        .unwrap();
    let head = h.store.head(Some(p.id)).await.unwrap();
    for bad in [
        String::new(),
        "x".repeat(201),
        "\u{e9}".repeat(201),
        "tab\there".into(),
    ] {
        assert!(
            matches!(
                h.config.create_line(&w, &bad).await,
                Err(Error::Config(ConfigError::Name(_)))
            ),
            "{bad:?}"
        );
    }
    let too_long = format!("{longest}a");
    assert!(matches!(
        h.config.create_target(&w, line.id, target(&too_long)).await,
        Err(Error::Config(ConfigError::Url(_)))
    ));
    assert_eq!(h.store.head(Some(p.id)).await.unwrap(), head);
}

/// Outbound secrets are 1 to 4096 bytes without control characters, and a
/// basic-auth username 1 to 200 characters without `:` or control
/// characters: each boundary is accepted, the value past it refused.
pub async fn secrets_and_usernames_are_checked_at_their_boundaries<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let line = h.config.create_line(&w, "orders").await.unwrap();
    let bearer = |token: String| NewTarget {
        auth: AuthInput::Bearer(SecretString::from(token)),
        ..bearer_target()
    };
    let basic = |username: String| NewTarget {
        auth: AuthInput::Basic {
            username,
            password: SecretString::from("pw"),
        },
        ..bearer_target()
    };
    h.config
        .create_target(&w, line.id, bearer("t".repeat(4096)))
        .await
        .unwrap();
    for good in ["u".repeat(200), "\u{e9}".repeat(200), "u".into()] {
        h.config
            .create_target(&w, line.id, basic(good))
            .await
            .unwrap();
    }
    let head = h.store.head(Some(p.id)).await.unwrap();
    for bad in ["t".repeat(4097), "tok\u{7f}en".into(), "tok\nen".into()] {
        assert!(matches!(
            h.config.create_target(&w, line.id, bearer(bad)).await,
            Err(Error::Config(ConfigError::Secret(_)))
        ));
    }
    for bad in [
        String::new(),
        "u".repeat(201),
        "us:er".into(),
        "us\ter".into(),
    ] {
        assert!(
            matches!(
                h.config
                    .create_target(&w, line.id, basic(bad.clone()))
                    .await,
                Err(Error::Config(ConfigError::Username))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(h.store.head(Some(p.id)).await.unwrap(), head);
}

/// The masked read groups each endpoint and target under its own line.
pub async fn lines_read_back_with_their_own_endpoints_and_targets<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let r = h.grant::<ConfigRead>(&owner, &p).await;
    let mut made = Vec::new();
    for name in ["orders", "refunds"] {
        let line = h.config.create_line(&w, name).await.unwrap();
        let e = h.config.create_endpoint(&w, line.id, name).await.unwrap();
        let t = h
            .config
            .create_target(
                &w,
                line.id,
                NewTarget {
                    name: name.into(),
                    ..bearer_target()
                },
            )
            .await
            .unwrap();
        made.push((line.id, e.id, t.view.id));
    }
    let lines = h.config.lines(&r).await.unwrap();
    assert_eq!(lines.len(), 2);
    for (line, endpoint, target) in made {
        let view = lines.iter().find(|l| l.line.id == line).unwrap();
        let endpoints: Vec<_> = view.endpoints.iter().map(|e| e.id).collect();
        let targets: Vec<_> = view.targets.iter().map(|t| t.id).collect();
        assert_eq!((endpoints, targets), (vec![endpoint], vec![target]));
    }
}

/// The relay's route ([`ConfigStore::ingest_route`]): the project as
/// stored, and an endpoint leads to every target of its own line, oldest
/// first (ids break ties), and to no other line's; a line without targets
/// is an empty route, not a missing one; an unknown endpoint and another
/// project's endpoint have no route (the project is still read); an
/// unknown project is `None`.
///
/// [`ConfigStore::ingest_route`]: echorelay_core::ports::ConfigStore::ingest_route
pub async fn endpoints_lead_to_the_targets_of_their_line<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let orders = h.config.create_line(&w, "orders").await.unwrap();
    let refunds = h.config.create_line(&w, "refunds").await.unwrap();
    let empty = h.config.create_line(&w, "empty").await.unwrap();
    let e_orders = h.config.create_endpoint(&w, orders.id, "in").await.unwrap();
    let e_empty = h.config.create_endpoint(&w, empty.id, "in").await.unwrap();
    let mut made = Vec::new();
    for (i, line) in [orders.id, refunds.id, orders.id, orders.id]
        .into_iter()
        .enumerate()
    {
        // The last two share a creation time: their ids decide.
        if i < 3 {
            h.clock.advance(chrono::Duration::seconds(1));
        }
        let t = h
            .config
            .create_target(
                &w,
                line,
                NewTarget {
                    name: format!("t{i}"),
                    ..bearer_target()
                },
            )
            .await
            .unwrap();
        made.push((line, t.view.id));
    }
    let mut expected: Vec<_> = made
        .iter()
        .filter(|(l, _)| *l == orders.id)
        .map(|(_, t)| *t)
        .collect();
    expected[1..].sort();
    let stored = h.store.project(p.id).await.unwrap().unwrap();
    let route = |targets| {
        Some(IngestRoute {
            project: stored.clone(),
            targets,
        })
    };
    assert_eq!(
        h.store.ingest_route(p.id, e_orders.id).await.unwrap(),
        route(Some(expected)),
        "the line's targets, oldest first, ids breaking ties"
    );
    assert_eq!(
        h.store.ingest_route(p.id, e_empty.id).await.unwrap(),
        route(Some(vec![])),
        "a line without targets"
    );
    assert_eq!(
        h.store
            .ingest_route(p.id, EndpointId::random())
            .await
            .unwrap(),
        route(None),
        "an unknown endpoint"
    );
    let (other, _) = h.project().await;
    let other_stored = h.store.project(other.id).await.unwrap().unwrap();
    assert_eq!(
        h.store.ingest_route(other.id, e_orders.id).await.unwrap(),
        Some(IngestRoute {
            project: other_stored,
            targets: None
        }),
        "another project's endpoint"
    );
    assert_eq!(
        h.store
            .ingest_route(ProjectId::random(), e_orders.id)
            .await
            .unwrap(),
        None,
        "an unknown project"
    );
}

/// An import is refused, writing nothing, when a sealed secret was moved to
/// another target or another field (it no longer opens where it stands),
/// when it holds over 10,000 entities, and when the document is over
/// 16 MiB; exactly 16 MiB and exactly 10,000 entities are accepted.
pub async fn imports_refuse_moved_secrets_and_oversized_documents<B: Backend>(h: Harness<B>) {
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let r = h.grant::<ConfigRead>(&owner, &p).await;
    let line = h.config.create_line(&w, "orders").await.unwrap();
    for name in ["a", "b"] {
        h.config
            .create_target(
                &w,
                line.id,
                NewTarget {
                    name: name.into(),
                    auth: AuthInput::Bearer(SecretString::from(format!("token-{name}"))),
                    ..bearer_target()
                },
            )
            .await
            .unwrap();
    }
    h.config.create_endpoint(&w, line.id, "in").await.unwrap();
    let json = h.config.export(&r).await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    // At most 10,000 lines, endpoints and targets together: here 1 line,
    // 2 targets and 9,997 endpoints pass, 9,998 do not.
    let with_endpoints = |n: usize| {
        let mut d = doc.clone();
        let one = d["tree"]["endpoints"][0].clone();
        d["tree"]["endpoints"] = (0..n)
            .map(|_| {
                let mut e = one.clone();
                e["id"] = serde_json::to_value(echorelay_core::ids::EndpointId::random()).unwrap();
                e
            })
            .collect();
        d.to_string()
    };
    h.config.validate_import(&with_endpoints(9_997)).unwrap();
    // A document that does not parse is named by category and position
    // only, never by the text it holds.
    for (input, said) in [
        (
            "{\"format\": \"s3cr3t-looking\"",
            "unexpected end of input at line 1 column 27",
        ),
        ("{\"format\": s3cr3t}", "syntax error at line 1 column 12"),
        (
            "{\"format\": [\"s3cr3t\"]}",
            "unexpected or invalid field at line 1 column 11",
        ),
    ] {
        match h.config.validate_import(input) {
            Err(Error::Config(ConfigError::Json(text))) => assert_eq!(text, said, "{input}"),
            other => panic!("{input}: {other:?}"),
        }
    }
    // Every endpoint and target hangs off a line of this tree, in this
    // project.
    for (array, field, value) in [
        (
            "endpoints",
            "line",
            json!(echorelay_core::ids::LineId::random()),
        ),
        (
            "targets",
            "line",
            json!(echorelay_core::ids::LineId::random()),
        ),
        (
            "endpoints",
            "project",
            json!(echorelay_core::ids::ProjectId::random()),
        ),
        (
            "targets",
            "project",
            json!(echorelay_core::ids::ProjectId::random()),
        ),
    ] {
        let mut d = doc.clone();
        d["tree"][array][0][field] = value;
        assert!(
            matches!(
                h.config.validate_import(&d.to_string()),
                Err(Error::Config(ConfigError::Tree(_)))
            ),
            "{array}.{field}"
        );
    }
    assert!(matches!(
        h.config.validate_import(&with_endpoints(9_998)),
        Err(Error::Config(ConfigError::Tree(_)))
    ));
    let token =
        |doc: &serde_json::Value, i: usize| doc["tree"]["targets"][i]["auth"]["token"].clone();
    let mut swapped = doc.clone();
    swapped["tree"]["targets"][0]["auth"]["token"] = token(&doc, 1);
    swapped["tree"]["targets"][1]["auth"]["token"] = token(&doc, 0);
    let mut other_field = doc.clone();
    other_field["tree"]["targets"][0]["auth"]["token"] =
        doc["tree"]["targets"][0]["signing_secret"].clone();
    assert!(token(&doc, 0).is_string(), "the export's shape: {doc}");
    let head = h.store.head(Some(p.id)).await.unwrap();
    for moved in [swapped, other_field] {
        let err = h
            .config
            .import(&w, &moved.to_string())
            .await
            .expect_err("config: an import with a moved secret was accepted");
        assert!(matches!(err, Error::Vault(_)), "{err:?}");
    }
    let limit = 16 << 20;
    let mut padded = json.clone();
    padded.push_str(&" ".repeat(limit - json.len()));
    let err = h
        .config
        .import(&w, &format!("{padded} "))
        .await
        .expect_err("config: an import over 16 MiB was accepted");
    assert!(
        matches!(err, Error::Config(ConfigError::Tree(_))),
        "{err:?}"
    );
    assert_eq!(h.store.head(Some(p.id)).await.unwrap(), head);
    h.config.import(&w, &padded).await.unwrap();
}

/// The tree cap ([`MAX_TREE_ENTITIES`], decided by the store with
/// `ports::rules::tree_has_room`): a project filled to exactly the cap
/// (cheaply, with one `import_tree`) refuses another line, endpoint or
/// target with `Store(LimitReached)` and writes nothing (no entity, no
/// audit event, no version move); updates still work; one below the cap a
/// create succeeds; an import over the cap is refused; and the full tree
/// exports into a document that imports again.
///
/// [`MAX_TREE_ENTITIES`]: echorelay_core::config::MAX_TREE_ENTITIES
pub async fn the_tree_cap_holds_at_its_boundary<B: Backend>(h: Harness<B>) {
    use echorelay_core::audit::AuditDraft;
    use echorelay_core::config::{Line, MAX_TREE_ENTITIES};
    use echorelay_core::ids::LineId;
    use echorelay_core::ports::TreeImport;
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let r = h.grant::<ConfigRead>(&owner, &p).await;
    let import_draft = || AuditDraft {
        project: Some(p.id),
        at: h.clock_now(),
        actor: owner.actor(),
        ip: None,
        subject: None,
        kind: EventKind::Config {
            entity: ConfigEntity::Project,
            op: ConfigOp::Import,
            id: p.id.to_string(),
        },
    };
    let lines = |n: usize| -> Vec<Line> {
        (0..n)
            .map(|i| Line {
                id: LineId::random(),
                project: p.id,
                name: format!("line {i}"),
                created_at: h.clock_now(),
            })
            .collect()
    };
    // One more than the cap: refused, nothing written.
    let stored = h.store.project(p.id).await.unwrap().unwrap();
    let over = TreeImport {
        tree: echorelay_core::config::ProjectTree {
            project: stored.clone(),
            lines: lines(MAX_TREE_ENTITIES + 1),
            endpoints: Vec::new(),
            targets: Vec::new(),
        },
        expect_version: Some(stored.version),
        owner_if_new: None,
    };
    let head = h.store.head(Some(p.id)).await.unwrap();
    assert!(
        matches!(
            h.store.import_tree(over, import_draft()).await,
            Err(StoreError::LimitReached { .. })
        ),
        "config: an import over the tree cap was not refused"
    );
    assert_eq!(h.store.head(Some(p.id)).await.unwrap(), head);
    assert!(h.store.tree(p.id).await.unwrap().lines.is_empty());
    // Exactly the cap: taken.
    let full = TreeImport {
        tree: echorelay_core::config::ProjectTree {
            project: stored.clone(),
            lines: lines(MAX_TREE_ENTITIES),
            endpoints: Vec::new(),
            targets: Vec::new(),
        },
        expect_version: Some(stored.version),
        owner_if_new: None,
    };
    h.store.import_tree(full, import_draft()).await.unwrap();
    let before = h.store.tree(p.id).await.unwrap();
    assert_eq!(before.lines.len(), MAX_TREE_ENTITIES);
    let head = h.store.head(Some(p.id)).await.unwrap();
    let some_line = before.lines[0].id;
    let full_refusal = |r: Result<(), Error>, what: &str| {
        assert!(
            matches!(r, Err(Error::Store(StoreError::LimitReached { .. }))),
            "config: a {what} beyond the tree cap was not refused: {r:?}"
        );
    };
    full_refusal(
        h.config.create_line(&w, "one too many").await.map(|_| ()),
        "line",
    );
    full_refusal(
        h.config
            .create_endpoint(&w, some_line, "one too many")
            .await
            .map(|_| ()),
        "endpoint",
    );
    full_refusal(
        h.config
            .create_target(&w, some_line, bearer_target())
            .await
            .map(|_| ()),
        "target",
    );
    let after = h.store.tree(p.id).await.unwrap();
    assert_eq!(after, before, "config: a refused create changed the tree");
    assert_eq!(
        h.store.head(Some(p.id)).await.unwrap(),
        head,
        "config: a refused create wrote an audit event"
    );
    // Not a create: a rename at the cap works.
    h.config
        .rename_line(&w, some_line, "renamed")
        .await
        .unwrap();
    // One below the cap: one create succeeds, the next is refused.
    h.config.delete_line(&w, before.lines[1].id).await.unwrap();
    h.config
        .create_endpoint(&w, some_line, "the last one")
        .await
        .unwrap();
    full_refusal(h.config.create_line(&w, "again").await.map(|_| ()), "line");
    // The full tree exports, and the export imports again.
    let json = h.config.export(&r).await.unwrap();
    h.config.import(&w, &json).await.unwrap();
    let back = h.store.tree(p.id).await.unwrap();
    assert_eq!(back.lines.len() + back.endpoints.len(), MAX_TREE_ENTITIES);
}

/// Rotating a target's signing secret (issue 19): the new one is current,
/// the old one keeps signing until the end of its grace and not a second
/// longer, at most ten are kept, the stored form round-trips, a grace
/// outside 0–7 days and a user who has not stepped up are refused with
/// nothing written, a moved end does not open (its end is bound into the
/// ciphertext), and setting a secret by PATCH ends every retired one.
pub async fn rotated_signing_secrets_sign_through_their_grace<B: Backend>(h: Harness<B>) {
    use chrono::{DateTime, Duration};
    use echorelay_core::access::Caller;
    use echorelay_core::audit::Actor;
    use echorelay_core::config::{
        DEFAULT_SIGNING_GRACE, MAX_RETIRED_SIGNING_SECRETS, MAX_SIGNING_GRACE, SigningRotation,
    };
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let line = h.config.create_line(&w, "orders").await.unwrap();
    let created = h
        .config
        .create_target(&w, line.id, bearer_target())
        .await
        .unwrap();
    let id = created.view.id;
    let first = created.signing_secret.expose_secret().to_owned();
    // Whole seconds, so the grace's end is exactly representable.
    h.clock
        .set(DateTime::from_timestamp(h.clock_now().timestamp(), 0).unwrap());
    let t0 = h.clock_now();
    let rotated = h
        .config
        .rotate_signing_secret(&w, id, SigningRotation::default())
        .await
        .unwrap();
    let second = rotated.signing_secret.expose_secret().to_owned();
    assert!(second.starts_with("whsec_") && second != first);
    let end = t0 + DEFAULT_SIGNING_GRACE;
    assert_eq!(rotated.view.retired_signing_secrets.len(), 1);
    assert_eq!(rotated.view.retired_signing_secrets[0].until, end);
    assert!(
        !format!("{:?}", rotated.view).contains(&first[6..]),
        "config: a retired secret shows in the view"
    );
    // The stored form round-trips: read back, it is what was written.
    let stored = h.store.target(p.id, id).await.unwrap().unwrap();
    assert_eq!(stored.retired_signing_secrets.len(), 1);
    assert_eq!(stored.retired_signing_secrets[0].until, end);
    let r = h.grant::<ConfigRead>(&owner, &p).await;
    assert_eq!(h.config.target(&r, id).await.unwrap(), rotated.view);

    let g = h.voter.dangerous_delivery_grant(p.id).await.unwrap();
    let secrets = h.config.delivery_secrets(&g, id).await.unwrap();
    assert_eq!(secrets.signing_secret.expose_secret(), second);
    let texts = |at| -> Vec<String> {
        secrets
            .signing_secrets_at(at)
            .into_iter()
            .map(|s| s.expose_secret().to_owned())
            .collect()
    };
    assert_eq!(texts(t0), vec![second.clone(), first.clone()]);
    assert_eq!(
        texts(end - Duration::seconds(1)),
        vec![second.clone(), first.clone()]
    );
    assert_eq!(texts(end), vec![second.clone()], "config: signs at its end");

    // Refused, nothing written: a grace out of range, a user who has not
    // stepped up.
    let head = h.store.head(Some(p.id)).await.unwrap();
    for grace in [
        Duration::seconds(-1),
        MAX_SIGNING_GRACE + Duration::seconds(1),
    ] {
        let r = h
            .config
            .rotate_signing_secret(
                &w,
                id,
                SigningRotation {
                    grace,
                    signing_secret: None,
                },
            )
            .await;
        assert!(
            matches!(r, Err(Error::InvalidInput(_))),
            "config: grace {grace}: {r:?}"
        );
    }
    let Actor::User(user) = owner.actor() else {
        panic!("the project's owner is a user")
    };
    let stale = h.grant::<ConfigWrite>(&Caller::user(user, None), &p).await;
    assert!(matches!(
        h.config
            .rotate_signing_secret(&stale, id, SigningRotation::default())
            .await,
        Err(Error::ReauthenticationRequired)
    ));
    assert_eq!(h.store.head(Some(p.id)).await.unwrap(), head);
    assert_eq!(h.store.target(p.id, id).await.unwrap().unwrap(), stored);

    // A grace of 0 retires nothing; a given secret becomes current.
    let third = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let r0 = h
        .config
        .rotate_signing_secret(
            &w,
            id,
            SigningRotation {
                grace: Duration::zero(),
                signing_secret: Some(SecretString::from(third)),
            },
        )
        .await
        .unwrap();
    assert_eq!(r0.signing_secret.expose_secret(), third);
    assert_eq!(r0.view.retired_signing_secrets.len(), 1, "only the first");
    // The longest grace is accepted; an ended grace is dropped at the next
    // rotation.
    h.clock.set(end);
    let r7 = h
        .config
        .rotate_signing_secret(
            &w,
            id,
            SigningRotation {
                grace: MAX_SIGNING_GRACE,
                signing_secret: None,
            },
        )
        .await
        .unwrap();
    let ends: Vec<_> = r7
        .view
        .retired_signing_secrets
        .iter()
        .map(|r| r.until)
        .collect();
    assert_eq!(ends, vec![end + MAX_SIGNING_GRACE]);
    // At most ten, the latest ends kept.
    for i in 1..=MAX_RETIRED_SIGNING_SECRETS {
        h.clock.advance(Duration::seconds(1));
        let r = h
            .config
            .rotate_signing_secret(
                &w,
                id,
                SigningRotation {
                    grace: Duration::hours(1),
                    signing_secret: None,
                },
            )
            .await
            .unwrap();
        let n = r.view.retired_signing_secrets.len();
        assert_eq!(n, (i + 1).min(MAX_RETIRED_SIGNING_SECRETS));
    }
    let kept = h.store.target(p.id, id).await.unwrap().unwrap();
    assert_eq!(
        kept.retired_signing_secrets[0].until,
        end + MAX_SIGNING_GRACE
    );
    assert!(
        kept.retired_signing_secrets
            .windows(2)
            .all(|w| w[0].until > w[1].until),
        "config: retired secrets not latest end first"
    );
    let oldest_kept = h.clock_now() - Duration::seconds(8) + Duration::hours(1);
    assert_eq!(kept.retired_signing_secrets[9].until, oldest_kept);
    let opened = h.config.delivery_secrets(&g, id).await.unwrap();
    assert_eq!(opened.retired_signing_secrets.len(), 10);
    assert_eq!(opened.signing_secrets_at(h.clock_now()).len(), 11);
    // An export carries them and imports again with ten; with an eleventh
    // (a copy, which opens) it is refused.
    let export = h.config.export(&r).await.unwrap();
    let tree = h.config.validate_import(&export).unwrap();
    assert_eq!(tree.targets[0].retired_signing_secrets.len(), 10);
    let mut doc: serde_json::Value = serde_json::from_str(&export).unwrap();
    let retired = doc["tree"]["targets"][0]["retired_signing_secrets"]
        .as_array_mut()
        .unwrap();
    let copy = retired[9].clone();
    retired.push(copy);
    assert!(matches!(
        h.config.validate_import(&doc.to_string()),
        Err(Error::Config(ConfigError::Tree(_)))
    ));

    // A database writer who moves an end later gets a secret that does not
    // open: reads and deliveries fail rather than sign with it.
    let mut moved = kept.clone();
    moved.retired_signing_secrets[9].until += Duration::days(30);
    moved
        .retired_signing_secrets
        .sort_by_key(|r| std::cmp::Reverse(r.until));
    let audit = echorelay_core::audit::AuditDraft {
        project: Some(p.id),
        at: h.clock_now(),
        actor: Actor::System,
        ip: None,
        subject: None,
        kind: EventKind::Config {
            entity: ConfigEntity::Target,
            op: ConfigOp::Update,
            id: id.to_string(),
        },
    };
    h.store
        .apply(ConfigChange::PutTarget(Write::Update, moved), audit)
        .await
        .unwrap();
    assert!(matches!(
        h.config.target(&r, id).await,
        Err(Error::Vault(VaultError::Decrypt))
    ));
    assert!(matches!(
        h.config.delivery_secrets(&g, id).await,
        Err(Error::Vault(VaultError::Decrypt))
    ));

    // Setting a secret by PATCH replaces it at once and ends every retired
    // one (the answer to a leak).
    let patched = h
        .config
        .update_target(
            &w,
            id,
            TargetPatch {
                signing_secret: Some(SecretString::from(third)),
                ..TargetPatch::default()
            },
        )
        .await
        .unwrap();
    assert!(patched.retired_signing_secrets.is_empty());
    let after = h.config.delivery_secrets(&g, id).await.unwrap();
    assert_eq!(after.signing_secrets_at(h.clock_now()).len(), 1);
}
