//! Least privilege (issue 16, finding 6a): the migrations run as the
//! owner; a service role given `PgStore::grant_service_role` runs every
//! operation the suite needs, and cannot alter, disable the triggers of,
//! update or delete the audit log, or delete a chain's head. Skips without
//! `DATABASE_URL` (unless `ECHORELAY_REQUIRE_SERVICES=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use echorelay_core::access::surface::Keys;
use echorelay_core::keys::{Environment, MintRequest};
use echorelay_core::ports::AuditLog;
use echorelay_store_pg::test_database;
use rand::RngCore;

/// `url` connecting as `user` (the user info replaced, the rest kept).
fn as_user(url: &str, user: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let rest = rest.split_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}@{rest}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_role_runs_the_service_and_cannot_rewrite_the_audit_log() {
    let Some(db) = test_database().await else {
        return;
    };
    let owner = db.fresh_store().await.unwrap();
    assert!(
        owner.runs_as_owner().await.unwrap(),
        "the migrating role owns the tables"
    );
    let mut b = [0u8; 6];
    rand::rngs::OsRng.fill_bytes(&mut b);
    let role = format!("er_svc_{}", hex::encode(b));
    sqlx::query(&format!("CREATE ROLE {role} LOGIN"))
        .execute(owner.pool())
        .await
        .unwrap();
    owner.grant_service_role(&role).await.unwrap();
    owner.grant_service_role(&role).await.unwrap(); // idempotent

    let svc = db
        .another_process_at(&owner, &as_user(db.url(), &role), |o| o)
        .await
        .unwrap();
    assert!(!svc.runs_as_owner().await.unwrap());

    // The service works: a project, a key minted, verified and revoked,
    // every event in the chain.
    let h = echorelay_testkit::Harness::new(svc.clone());
    let (p, caller) = h.project().await;
    let grant = h.grant::<Keys>(&caller, &p).await;
    let minted = h
        .keys
        .mint(
            &grant,
            MintRequest {
                environment: Environment::Live,
                role: echorelay_core::access::Role::Viewer,
                label: "svc".into(),
            },
        )
        .await
        .unwrap();
    h.keys
        .verify(minted.plaintext.expose_secret())
        .await
        .unwrap();
    h.keys.revoke(&grant, minted.view.id).await.unwrap();
    let events = svc.events(Some(p.id), 0, 100).await.unwrap();
    assert!(events.len() >= 3);

    // The queue runs as the service too: every operation of the port, and
    // the LISTEN connection.
    {
        use echorelay_core::queue::{
            ErrorClass, JobId, LeaseNonce, NackOutcome, NewJob, Queue, QueueName, Retry,
        };
        let now = chrono::Utc::now();
        let q = QueueName::new("svc").unwrap();
        let job = |key: Option<&str>| NewJob {
            id: JobId::random(),
            payload: b"p".to_vec(),
            run_at: now,
            max_attempts: 1,
            dedup_key: key.map(|k| echorelay_core::queue::DedupKey::new(k).unwrap()),
        };
        svc.enqueue(&q, vec![job(Some("k")), job(None)], now)
            .await
            .unwrap();
        let until = now + chrono::TimeDelta::seconds(30);
        let r = svc
            .reserve(&q, 2, LeaseNonce::random(), until, now)
            .await
            .unwrap();
        svc.extend(&r[0].token, until, now).await.unwrap();
        svc.ack(&r[0].token, now).await.unwrap();
        let class = ErrorClass::new("x").unwrap();
        assert_eq!(
            svc.nack(&r[1].token, Retry::Never, &class, now)
                .await
                .unwrap(),
            NackOutcome::Dead
        );
        let dead = svc.dead_jobs(&q, None, 10).await.unwrap();
        svc.redrive(&q, dead[0].id, now).await.unwrap();
        let r = svc
            .reserve(&q, 1, LeaseNonce::random(), until, now)
            .await
            .unwrap();
        svc.ack_many(&[r[0].token], now).await.unwrap()[0]
            .clone()
            .unwrap();
        svc.enqueue(&q, vec![job(None)], now).await.unwrap();
        let r = svc
            .reserve(&q, 1, LeaseNonce::random(), until, now)
            .await
            .unwrap();
        svc.nack(&r[0].token, Retry::Never, &class, now)
            .await
            .unwrap();
        assert_eq!(svc.redrive_dead(&q, 10, now).await.unwrap(), 1);
        let r = svc
            .reserve(&q, 1, LeaseNonce::random(), until, now)
            .await
            .unwrap();
        svc.nack(&r[0].token, Retry::Never, &class, now)
            .await
            .unwrap();
        assert_eq!(svc.purge_dead(&q, 10).await.unwrap(), 1);
        assert_eq!(svc.stats(&q, now).await.unwrap(), Default::default());
        svc.wait_for_jobs(&q, std::time::Duration::from_secs(5))
            .await
            .unwrap();
        assert!(svc.queue_listener_connected());
    }

    // And it cannot rewrite the log, by permission (not only the trigger).
    let pid = hex::encode(p.id.as_bytes());
    for statement in [
        format!("UPDATE audit_events SET ip = '198.51.100.1' WHERE project = '\\x{pid}'"),
        format!("DELETE FROM audit_events WHERE project = '\\x{pid}'"),
        "TRUNCATE audit_events".to_owned(),
        "ALTER TABLE audit_events DISABLE TRIGGER ALL".to_owned(),
        format!("DELETE FROM audit_heads WHERE chain = '\\x{pid}'"),
        "TRUNCATE audit_heads".to_owned(),
        "TRUNCATE queue_jobs".to_owned(),
        "ALTER TABLE queue_jobs SET UNLOGGED".to_owned(),
        "SET session_replication_role = replica".to_owned(),
        "DELETE FROM _sqlx_migrations".to_owned(),
    ] {
        let err = sqlx::query(&statement)
            .execute(svc.pool())
            .await
            .expect_err(&statement);
        let text = err.to_string();
        assert!(
            text.contains("permission denied") || text.contains("must be owner"),
            "{statement}: {text}"
        );
    }
    assert_eq!(svc.events(Some(p.id), 0, 100).await.unwrap(), events);

    drop((h, svc));
    for cleanup in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::query(&cleanup).execute(owner.pool()).await.unwrap();
    }
}
