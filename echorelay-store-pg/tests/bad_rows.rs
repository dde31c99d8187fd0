//! Rows that were changed behind echorelay's back.
//!
//! - The audit table is append-only in the database itself: `UPDATE`,
//!   `DELETE` and `TRUNCATE` fail for every role, the superuser included,
//!   and leave the chain as it was (S11).
//! - A malformed stored value (a hand-edited enum, a negative counter, a
//!   garbage or misplaced ciphertext, an edited audit event) comes back as
//!   a typed error naming the table and the row, never a panic and never a
//!   valid result: `StoreError::Corrupt`, a vault error, or a `ChainBreak`.
//!
//! To write the bad values the tests drop the CHECK constraint or disable
//! the trigger that would refuse them, on their own fresh schema.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use echorelay_core::Error;
use echorelay_core::access::Role;
use echorelay_core::access::surface::{AuditRead, ConfigRead, ConfigWrite, Keys};
use echorelay_core::audit::{
    AuditEvent, AuditService, BreakKind, ChainBreak, ConfigEntity, ConfigOp, EventKind,
    verify_chain,
};
use echorelay_core::config::{AuthInput, NewTarget};
use echorelay_core::error::StoreError;
use echorelay_core::ids::ProjectId;
use echorelay_core::keys::{Environment, KeyHash, MintRequest};
use echorelay_core::ports::{AuditLog, ConfigStore, KeyStore};
use echorelay_core::vault::VaultError;
use echorelay_store_pg::{PgStore, test_database};
use echorelay_testkit::Harness;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgQueryResult;

const TOKEN_A: &str = "tok_live_a1b2c3d4e5f6a7b8c9d0";
const TOKEN_B: &str = "tok_live_0f9e8d7c6b5a4f3e2d1c";
const UNSEALED: &str = "tok_live_written_by_hand_in_psql";

fn req() -> MintRequest {
    MintRequest {
        environment: Environment::Live,
        role: Role::Editor,
        label: "bad rows".into(),
    }
}

fn target(name: &str, token: &str) -> NewTarget {
    NewTarget {
        name: name.into(),
        url: format!("https://hooks.example.com/{name}"),
        auth: AuthInput::Bearer(SecretString::from(token)),
        signing_secret: None,
    }
}

/// Runs `sql` with `binds` as `$1`, `$2`, … on the store's own pool (its
/// schema), as the connecting role.
async fn exec(store: &PgStore, sql: &str, binds: &[&[u8]]) -> Result<PgQueryResult, sqlx::Error> {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    q.execute(store.pool()).await
}

/// The SQLSTATE of a database error.
fn sqlstate(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(d) => d.code().map(|c| c.into_owned()),
        _ => None,
    }
}

/// The name of the CHECK constraint on `table` whose definition mentions
/// `column` (as `pg_constraint` has it, in the store's schema).
async fn check_constraint(store: &PgStore, table: &str, column: &str) -> String {
    sqlx::query_scalar(
        "SELECT conname::text FROM pg_constraint \
         WHERE conrelid = $1::regclass AND contype = 'c' \
           AND pg_get_constraintdef(oid) LIKE '%' || $2 || '%' \
         ORDER BY conname LIMIT 1",
    )
    .bind(table)
    .bind(column)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Asserts that `sql` is refused by the CHECK constraint on `column`, then
/// drops that constraint.
async fn drop_check(store: &PgStore, table: &str, column: &str, refused_sql: &str, id: &[u8]) {
    let name = check_constraint(store, table, column).await;
    let err = exec(store, refused_sql, &[id]).await.unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("23514"), "{err}");
    let sqlx::Error::Database(d) = &err else {
        unreachable!()
    };
    assert_eq!(d.constraint(), Some(name.as_str()), "{err}");
    exec(
        store,
        &format!("ALTER TABLE {table} DROP CONSTRAINT {name}"),
        &[],
    )
    .await
    .unwrap();
}

/// The parts of a `StoreError::Corrupt`, or a panic naming what came back.
fn corrupt<T: std::fmt::Debug>(r: Result<T, StoreError>) -> (&'static str, String, String) {
    match r {
        Err(StoreError::Corrupt { table, id, problem }) => (table, id, problem),
        other => panic!("expected StoreError::Corrupt, got {other:?}"),
    }
}

/// The same through a service's `Error::Store`.
fn corrupt_via_service<T: std::fmt::Debug>(r: Result<T, Error>) -> (&'static str, String, String) {
    match r {
        Err(Error::Store(e)) => corrupt::<()>(Err(e)),
        other => panic!("expected Error::Store(Corrupt), got {other:?}"),
    }
}

async fn all_events(store: &PgStore, p: ProjectId) -> Vec<AuditEvent> {
    store.events(Some(p), 0, usize::MAX).await.unwrap()
}

/// S11 in the database: `UPDATE`, `DELETE` and `TRUNCATE` on
/// `audit_events`, run directly by the superuser, all fail with SQLSTATE
/// 42501 from the trigger; the events are unchanged and still verify, and
/// appending still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_table_refuses_update_delete_and_truncate_even_for_a_superuser() {
    let Some(db) = test_database().await else {
        return;
    };
    let h = Harness::new(db.fresh_store().await.unwrap());
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let line = h.config.create_line(&w, "orders").await.unwrap();
    h.config.create_endpoint(&w, line.id, "in").await.unwrap();
    let keys = h.grant::<Keys>(&owner, &p).await;
    h.keys.mint(&keys, req()).await.unwrap();
    let before = all_events(&h.store, p.id).await;
    assert!(before.len() >= 4, "{} events", before.len());
    let head = verify_chain(Some(p.id), &before, None).unwrap().unwrap();

    let superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(h.store.pool())
            .await
            .unwrap();
    assert!(superuser, "the test should run as a superuser (root)");

    let attempts = [
        ("UPDATE audit_events SET ip = '198.51.100.7'", "UPDATE"),
        (
            "UPDATE audit_events SET kind = kind || '{\"id\": \"forged\"}' WHERE seq = 2",
            "UPDATE",
        ),
        ("DELETE FROM audit_events", "DELETE"),
        (
            "DELETE FROM audit_events WHERE seq = (SELECT max(seq) FROM audit_events)",
            "DELETE",
        ),
        ("TRUNCATE audit_events", "TRUNCATE"),
        ("TRUNCATE audit_events CASCADE", "TRUNCATE"),
    ];
    for (sql, op) in attempts {
        let err = exec(&h.store, sql, &[]).await.expect_err(sql);
        assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{sql}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains("append-only") && msg.contains(op),
            "{sql}: {msg}"
        );
    }
    // Also inside a transaction that tries to commit the change.
    let mut tx = h.store.pool().begin().await.unwrap();
    let err = sqlx::query("DELETE FROM audit_events WHERE seq = 1")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"));
    drop(tx);

    let after = all_events(&h.store, p.id).await;
    assert_eq!(after, before, "the audit events changed");
    assert_eq!(
        verify_chain(Some(p.id), &after, Some(head)).unwrap(),
        Some(head)
    );
    let audit = AuditService::new(h.store.clone());
    let read = h.grant::<AuditRead>(&owner, &p).await;
    let status = audit.verify(&read, Some(head)).await.unwrap();
    assert_eq!(status.events, before.len() as u64);
    assert_eq!(status.head, Some(head));

    // Appending is untouched by the refusals.
    h.config.create_line(&w, "more").await.unwrap();
    let grown = all_events(&h.store, p.id).await;
    assert_eq!(grown.len(), before.len() + 1);
    assert_eq!(grown[..before.len()], before[..]);
    verify_chain(Some(p.id), &grown, Some(head)).unwrap();
}

/// A hand-written key role (`superuser`, refused by the CHECK until it is
/// dropped): `Corrupt` naming `api_keys` and the key id for every read of
/// the row, `Unauthenticated` for the key itself, and nothing written by a
/// mutation that reads it. Other keys are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edited_key_role_is_corrupt_and_never_verifies() {
    let Some(db) = test_database().await else {
        return;
    };
    let h = Harness::new(db.fresh_store().await.unwrap());
    let (p, owner) = h.project().await;
    let grant = h.grant::<Keys>(&owner, &p).await;
    let bad = h.keys.mint(&grant, req()).await.unwrap();
    let good = h.keys.mint(&grant, req()).await.unwrap();
    let key = bad.plaintext.expose_secret().to_owned();
    let id = bad.view.id;
    let id_hex = hex::encode(id.as_bytes());
    assert_eq!(h.keys.verify(&key).await.unwrap().key_id(), id);

    let set_role = "UPDATE api_keys SET role = 'superuser' WHERE id = $1";
    drop_check(&h.store, "api_keys", "role", set_role, id.as_bytes()).await;
    let n = exec(&h.store, set_role, &[id.as_bytes()]).await.unwrap();
    assert_eq!(n.rows_affected(), 1);

    let err = h.store.key_by_id(id).await.unwrap_err();
    let shown = err.to_string();
    assert!(
        shown.contains("api_keys") && shown.contains(&id_hex),
        "{shown}"
    );
    let (table, row, problem) = corrupt::<()>(Err(err));
    assert_eq!((table, row.as_str()), ("api_keys", id_hex.as_str()));
    assert!(problem.contains("role"), "{problem}");
    let (table, row, _) = corrupt(h.store.key_by_hash(&KeyHash::of(&key)).await);
    assert_eq!((table, row.as_str()), ("api_keys", id_hex.as_str()));
    let (table, row, _) = corrupt(h.store.key_status_by_hash(&KeyHash::of(&key)).await);
    assert_eq!((table, row.as_str()), ("api_keys", id_hex.as_str()));
    let (table, row, _) = corrupt(h.store.keys_of_project(p.id).await);
    assert_eq!((table, row.as_str()), ("api_keys", id_hex.as_str()));

    // Verification: the opaque refusal, every time, never a role.
    for _ in 0..3 {
        assert!(
            matches!(h.keys.verify(&key).await, Err(Error::Unauthenticated)),
            "a corrupt key verified"
        );
    }
    // Listing the project's keys fails rather than skip or guess.
    let (table, row, _) = corrupt_via_service(h.keys.list_page(&grant, None, 500).await);
    assert_eq!((table, row.as_str()), ("api_keys", id_hex.as_str()));
    // A mutation that reads the row writes nothing.
    let head = h.store.head(Some(p.id)).await.unwrap();
    let (table, _, _) = corrupt_via_service(h.keys.revoke(&grant, id).await);
    assert_eq!(table, "api_keys");
    assert_eq!(h.store.head(Some(p.id)).await.unwrap(), head);
    let revoked: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT revoked_at FROM api_keys WHERE id = $1")
            .bind(&id.as_bytes()[..])
            .fetch_one(h.store.pool())
            .await
            .unwrap();
    assert_eq!(revoked, None);

    // The other key is its own row: still valid.
    let other = h.keys.verify(good.plaintext.expose_secret()).await.unwrap();
    assert_eq!(other.key_id(), good.view.id);
    assert_eq!(other.role(), Role::Editor);
}

/// The same for a hand-written environment (`staging`), and for a key
/// whose supersession is half written (a successor without its rotation
/// times, which a CHECK normally refuses): `Corrupt`, never a valid key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_malformed_key_columns_are_corrupt_naming_the_row() {
    let Some(db) = test_database().await else {
        return;
    };
    let h = Harness::new(db.fresh_store().await.unwrap());
    let (p, owner) = h.project().await;
    let grant = h.grant::<Keys>(&owner, &p).await;
    let env_key = h.keys.mint(&grant, req()).await.unwrap();
    let env_id = env_key.view.id;
    let set_env = "UPDATE api_keys SET environment = 'staging' WHERE id = $1";
    drop_check(
        &h.store,
        "api_keys",
        "environment",
        set_env,
        env_id.as_bytes(),
    )
    .await;
    exec(&h.store, set_env, &[env_id.as_bytes()]).await.unwrap();
    let (table, row, problem) = corrupt(h.store.key_by_id(env_id).await);
    assert_eq!(
        (table, row.as_str()),
        ("api_keys", hex::encode(env_id.as_bytes()).as_str())
    );
    assert!(problem.contains("environment"), "{problem}");
    assert!(matches!(
        h.keys.verify(env_key.plaintext.expose_secret()).await,
        Err(Error::Unauthenticated)
    ));

    // Half a supersession: the successor is set, its times are not.
    let half = half_superseded_key(&h, &grant).await;
    let (table, _, problem) = corrupt(h.store.key_by_id(half.view.id).await);
    assert_eq!(table, "api_keys");
    assert!(problem.contains("successor"), "{problem}");
    assert!(
        matches!(
            h.keys.verify(half.plaintext.expose_secret()).await,
            Err(Error::Unauthenticated)
        ),
        "a key with half a supersession verified"
    );
}

/// Mints a key and writes half a supersession into its row: the successor
/// set (to itself), the rotation times not, which the CHECK refuses until
/// it is dropped.
async fn half_superseded_key(
    h: &Harness<PgStore>,
    grant: &echorelay_core::access::Grant<Keys>,
) -> echorelay_core::keys::MintedKey {
    let half = h.keys.mint(grant, req()).await.unwrap();
    let id = half.view.id;
    let set_successor = "UPDATE api_keys SET successor = $1 WHERE id = $1";
    drop_check(
        &h.store,
        "api_keys",
        "successor",
        set_successor,
        id.as_bytes(),
    )
    .await;
    let n = exec(&h.store, set_successor, &[id.as_bytes()])
        .await
        .unwrap();
    assert_eq!(n.rows_affected(), 1);
    half
}

/// `Corrupt` names the row for a half-written supersession too, as for
/// every other malformed column.
///
/// Known bug: `supersession_of` in `src/keys.rs` builds its own
/// `StoreError::Corrupt` with `id: "?"` instead of the row's id (the other
/// columns go through `row::Reader`, which names it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_written_supersession_names_the_key() {
    let Some(db) = test_database().await else {
        return;
    };
    let h = Harness::new(db.fresh_store().await.unwrap());
    let (p, owner) = h.project().await;
    let grant = h.grant::<Keys>(&owner, &p).await;
    let half = half_superseded_key(&h, &grant).await;
    let id_hex = hex::encode(half.view.id.as_bytes());
    for r in [
        h.store.key_by_id(half.view.id).await.map(|_| ()),
        h.store
            .key_status_by_hash(&KeyHash::of(half.plaintext.expose_secret()))
            .await
            .map(|_| ()),
    ] {
        let (table, row, _) = corrupt(r);
        assert_eq!((table, row.as_str()), ("api_keys", id_hex.as_str()));
    }
}

/// Targets: a garbage `signing_secret` is `Corrupt` naming `targets` and
/// the target for every read (one target, the tree, the page the rewrap
/// pass reads); a bearer token written unsealed is `Corrupt` without
/// echoing it; another row's valid ciphertext moved into this row is well
/// formed (the store cannot tell) but does not open: `Vault(Decrypt)`,
/// never the other target's secret, and nothing is audited as opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_target_secrets_are_corrupt_or_do_not_open() {
    let Some(db) = test_database().await else {
        return;
    };
    let h = Harness::new(db.fresh_store().await.unwrap());
    let (p, owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let r = h.grant::<ConfigRead>(&owner, &p).await;
    let line = h.config.create_line(&w, "orders").await.unwrap();
    let a = h
        .config
        .create_target(&w, line.id, target("a", TOKEN_A))
        .await
        .unwrap();
    let b = h
        .config
        .create_target(&w, line.id, target("b", TOKEN_B))
        .await
        .unwrap();
    let delivery = h.voter.dangerous_delivery_grant(p.id).await.unwrap();
    let a_signing = a.signing_secret.expose_secret().to_owned();

    // Moved ciphertext: a's signing secret copied into b's row.
    let n = exec(
        &h.store,
        "UPDATE targets SET signing_secret = \
         (SELECT signing_secret FROM targets WHERE id = $1) WHERE id = $2",
        &[a.view.id.as_bytes(), b.view.id.as_bytes()],
    )
    .await
    .unwrap();
    assert_eq!(n.rows_affected(), 1);
    let stored_b = h.store.target(p.id, b.view.id).await.unwrap().unwrap();
    let stored_a = h.store.target(p.id, a.view.id).await.unwrap().unwrap();
    assert_eq!(stored_b.signing_secret, stored_a.signing_secret);
    let opened = h.config.delivery_secrets(&delivery, b.view.id).await;
    assert!(
        matches!(opened, Err(Error::Vault(VaultError::Decrypt))),
        "{opened:?}"
    );
    let shown = format!("{opened:?} {}", opened.as_ref().unwrap_err());
    assert!(!shown.contains(&a_signing[6..]) && !shown.contains(TOKEN_B));
    assert!(matches!(
        h.config.target(&r, b.view.id).await,
        Err(Error::Vault(VaultError::Decrypt))
    ));
    let b_id = b.view.id.to_string();
    let secrets_opened = h
        .count_events(p.id, |e| {
            matches!(
                &e.kind,
                EventKind::Config {
                    entity: ConfigEntity::Target,
                    op: ConfigOp::SecretsOpened,
                    id,
                } if *id == b_id
            )
        })
        .await;
    assert_eq!(secrets_opened, 0, "a refused opening was audited as opened");
    // a's own row still opens, to a's secret: the ciphertext is good, just
    // not b's.
    let a_secrets = h
        .config
        .delivery_secrets(&delivery, a.view.id)
        .await
        .unwrap();
    assert_eq!(a_secrets.signing_secret.expose_secret(), a_signing);

    // A bearer token written in plaintext, by hand.
    let c = h
        .config
        .create_target(&w, line.id, target("c", TOKEN_A))
        .await
        .unwrap();
    let c_hex = hex::encode(c.view.id.as_bytes());
    sqlx::query(
        "UPDATE targets SET auth = jsonb_build_object('type', 'bearer', 'token', $1::text) \
         WHERE id = $2",
    )
    .bind(UNSEALED)
    .bind(&c.view.id.as_bytes()[..])
    .execute(h.store.pool())
    .await
    .unwrap();
    let err = h.store.target(p.id, c.view.id).await.unwrap_err();
    let shown = format!("{err} {err:?}");
    let (table, row, problem) = corrupt::<()>(Err(err));
    assert_eq!((table, row.as_str()), ("targets", c_hex.as_str()));
    assert!(problem.contains("auth"), "{problem}");
    assert!(
        !shown.contains(UNSEALED),
        "the stored value is echoed: {shown}"
    );

    // Garbage bytes as d's signing secret.
    let d = h
        .config
        .create_target(&w, line.id, target("d", TOKEN_B))
        .await
        .unwrap();
    let d_hex = hex::encode(d.view.id.as_bytes());
    exec(
        &h.store,
        "UPDATE targets SET signing_secret = '\\xdeadbeef' WHERE id = $1",
        &[d.view.id.as_bytes()],
    )
    .await
    .unwrap();
    let (table, row, problem) = corrupt(h.store.target(p.id, d.view.id).await);
    assert_eq!((table, row.as_str()), ("targets", d_hex.as_str()));
    assert!(problem.contains("signing_secret"), "{problem}");
    // The tree holds both bad rows (c and d, created at the same clock
    // time, so ordered by id): it names one of them.
    let (table, row, _) = corrupt(h.store.tree(p.id).await);
    assert_eq!(table, "targets");
    assert!(row == c_hex || row == d_hex, "{row}");
    let (table, _, _) = corrupt(h.store.targets_page(None, 100).await);
    assert_eq!(table, "targets");
    let (table, row, _) = corrupt_via_service(h.config.target(&r, d.view.id).await);
    assert_eq!((table, row.as_str()), ("targets", d_hex.as_str()));
    let (table, _, _) = corrupt_via_service(h.config.lines(&r).await);
    assert_eq!(table, "targets");
    let head = h.store.head(Some(p.id)).await.unwrap();
    let (table, row, _) =
        corrupt_via_service(h.config.delivery_secrets(&delivery, d.view.id).await);
    assert_eq!((table, row.as_str()), ("targets", d_hex.as_str()));
    assert_eq!(h.store.head(Some(p.id)).await.unwrap(), head);
}

/// Edited audit events, written with the append-only trigger disabled (as
/// the table's owner can): a changed `kind` is a `ChainBreak` at that seq
/// (`ContentEdited`), a changed `prev_hash` is a `Link` break, a deleted
/// event a `Sequence` break, and a `kind` this build cannot read is
/// `Corrupt` naming `audit_events`, the chain and the seq. The trigger,
/// re-enabled, refuses again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edited_audit_events_break_the_chain_where_they_were_edited() {
    let Some(db) = test_database().await else {
        return;
    };
    let h = Harness::new(db.fresh_store().await.unwrap());
    let audit = AuditService::new(h.store.clone());
    // Four projects, one chain each: project, line a, line b, endpoint.
    let mut chains = Vec::new();
    for _ in 0..4 {
        let (p, owner) = h.project().await;
        let w = h.grant::<ConfigWrite>(&owner, &p).await;
        let a = h.config.create_line(&w, "a").await.unwrap();
        h.config.create_line(&w, "b").await.unwrap();
        h.config.create_endpoint(&w, a.id, "in").await.unwrap();
        let events = all_events(&h.store, p.id).await;
        verify_chain(Some(p.id), &events, None).unwrap();
        let seq = events
            .iter()
            .find(|e| {
                matches!(&e.kind, EventKind::Config { entity: ConfigEntity::Line, op: ConfigOp::Create, id } if *id == a.id.to_string())
            })
            .expect("line a's event")
            .seq;
        assert!(seq > 1 && (seq as usize) < events.len(), "seq {seq}");
        let read = h.grant::<AuditRead>(&owner, &p).await;
        chains.push((p.id, read, events, seq));
    }
    let seq_of = |i: usize| i64::try_from(chains[i].3).unwrap();
    let chain_of = |i: usize| chains[i].0.as_bytes().to_vec();

    exec(
        &h.store,
        "ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_update_or_delete",
        &[],
    )
    .await
    .unwrap();
    let edits = [
        // 0: the line's id in the event's kind.
        "UPDATE audit_events SET kind = jsonb_set(kind, '{id}', '\"forged\"') \
         WHERE chain = $1 AND seq = $2",
        // 1: the link to the previous event.
        "UPDATE audit_events SET prev_hash = decode(repeat('00', 32), 'hex') \
         WHERE chain = $1 AND seq = $2",
        // 2: the event removed.
        "DELETE FROM audit_events WHERE chain = $1 AND seq = $2",
        // 3: a kind from the future.
        "UPDATE audit_events SET kind = '{\"kind\": \"teleport\", \"to\": \"mars\"}' \
         WHERE chain = $1 AND seq = $2",
    ];
    for (i, sql) in edits.iter().enumerate() {
        let n = sqlx::query(sql)
            .bind(chain_of(i))
            .bind(seq_of(i))
            .execute(h.store.pool())
            .await
            .unwrap();
        assert_eq!(n.rows_affected(), 1, "{sql}");
    }
    exec(
        &h.store,
        "ALTER TABLE audit_events ENABLE TRIGGER audit_events_no_update_or_delete",
        &[],
    )
    .await
    .unwrap();
    let err = exec(&h.store, "UPDATE audit_events SET ip = NULL", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err).as_deref(), Some("42501"), "{err}");

    for (i, problem) in [
        BreakKind::ContentEdited,
        BreakKind::Link,
        BreakKind::Sequence,
    ]
    .into_iter()
    .enumerate()
    {
        let (p, read, original, seq) = &chains[i];
        let expected = ChainBreak { seq: *seq, problem };
        let events = all_events(&h.store, *p).await;
        assert_eq!(
            verify_chain(Some(*p), &events, None).unwrap_err(),
            expected,
            "chain {i}"
        );
        // Everything before the edit still verifies: the break is where the
        // edit is.
        verify_chain(Some(*p), &events[..(*seq as usize - 1)], None).unwrap();
        match audit.verify(read, None).await {
            Err(Error::Audit(b)) => assert_eq!(b, expected, "chain {i}"),
            other => panic!("chain {i}: expected Error::Audit, got {other:?}"),
        }
        // With the head recorded before the edit as anchor: the same.
        let anchor = original.last().unwrap().head();
        match audit.verify(read, Some(anchor)).await {
            Err(Error::Audit(b)) => assert_eq!(b, expected, "chain {i}"),
            other => panic!("chain {i}: expected Error::Audit, got {other:?}"),
        }
    }
    // The edited kind reads back as written (the store does not repair it).
    let (p0, _, _, seq0) = &chains[0];
    let edited = all_events(&h.store, *p0).await;
    assert!(matches!(
        &edited[*seq0 as usize - 1].kind,
        EventKind::Config { id, .. } if id == "forged"
    ));

    // An unreadable kind: Corrupt, naming the chain and the seq.
    let (p3, read3, _, seq3) = &chains[3];
    let name = format!("chain {} seq {seq3}", hex::encode(p3.as_bytes()));
    let (table, row, problem) = corrupt(h.store.events(Some(*p3), 0, usize::MAX).await);
    assert_eq!((table, row.as_str()), ("audit_events", name.as_str()));
    assert!(problem.contains("kind"), "{problem}");
    let (table, row, _) = corrupt_via_service(audit.verify(read3, None).await);
    assert_eq!((table, row.as_str()), ("audit_events", name.as_str()));
    // The page before it still reads and verifies.
    let before = h
        .store
        .events(Some(*p3), 0, *seq3 as usize - 1)
        .await
        .unwrap();
    verify_chain(Some(*p3), &before, None).unwrap();
}

/// Projects: a negative `version` (the CHECK dropped) and a slug that does
/// not parse are `Corrupt` naming `projects` and the project, on every
/// path that reads the row — the voter included — and a change that locks
/// the row writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_negative_project_version_or_bad_slug_is_corrupt() {
    let Some(db) = test_database().await else {
        return;
    };
    let h = Harness::new(db.fresh_store().await.unwrap());
    let (p, owner) = h.project().await;
    let (q, q_owner) = h.project().await;
    let w = h.grant::<ConfigWrite>(&owner, &p).await;
    let p_hex = hex::encode(p.id.as_bytes());

    let set_version = "UPDATE projects SET version = -1 WHERE id = $1";
    drop_check(
        &h.store,
        "projects",
        "version",
        set_version,
        p.id.as_bytes(),
    )
    .await;
    assert_eq!(
        exec(&h.store, set_version, &[p.id.as_bytes()])
            .await
            .unwrap()
            .rows_affected(),
        1
    );

    let (table, row, problem) = corrupt(h.store.project(p.id).await);
    assert_eq!((table, row.as_str()), ("projects", p_hex.as_str()));
    assert!(problem.contains("version"), "{problem}");
    let (table, row, _) = corrupt(h.store.project_by_slug(&p.slug).await);
    assert_eq!((table, row.as_str()), ("projects", p_hex.as_str()));
    let (table, row, _) = corrupt(h.store.tree(p.id).await);
    assert_eq!((table, row.as_str()), ("projects", p_hex.as_str()));
    let (table, _, _) = corrupt(h.store.list_projects().await);
    assert_eq!(table, "projects");
    let (table, row, _) = corrupt_via_service(
        h.voter
            .authorize::<ConfigRead>(&owner, p.slug.as_str())
            .await,
    );
    assert_eq!((table, row.as_str()), ("projects", p_hex.as_str()));

    // A change under a grant taken before the edit: refused, nothing written.
    let head = h.store.head(Some(p.id)).await.unwrap();
    let (table, _, _) = corrupt_via_service(h.config.create_line(&w, "late").await);
    assert_eq!(table, "projects");
    assert_eq!(h.store.head(Some(p.id)).await.unwrap(), head);
    let lines: i64 = sqlx::query_scalar("SELECT count(*) FROM lines WHERE project = $1")
        .bind(&p.id.as_bytes()[..])
        .fetch_one(h.store.pool())
        .await
        .unwrap();
    assert_eq!(lines, 0);

    // The other project is its own row: unaffected.
    assert_eq!(h.store.project(q.id).await.unwrap().unwrap().version, 0);
    h.grant::<ConfigRead>(&q_owner, &q).await;

    // A slug that does not parse (collation and CHECK allow any text).
    exec(
        &h.store,
        "UPDATE projects SET slug = 'Not A Slug!' WHERE id = $1",
        &[q.id.as_bytes()],
    )
    .await
    .unwrap();
    let (table, row, problem) = corrupt(h.store.project(q.id).await);
    assert_eq!(
        (table, row.as_str()),
        ("projects", hex::encode(q.id.as_bytes()).as_str())
    );
    assert!(problem.contains("slug"), "{problem}");
}
