//! `echorelay-server backup …` run as a process on Postgres (feature
//! `backup`), following RUNBOOK.md: a database filled through the library
//! is backed up to a directory target; the backup is listed and verified;
//! its dump decrypts with Debian's `age` tool; it is restored into an empty
//! database (a non-empty one is refused), where every table holds what the
//! source held, the API key verifies and the target's secret opens; and
//! `audit verify --against-backup` passes there, and names the chains a
//! restore of an older backup lost (a rollback).
#![cfg(feature = "backup")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use echorelay::core::access::surface::{ConfigWrite, Keys};
use echorelay::core::keys::{Environment, MintRequest};
use echorelay::pg::{PgOptions, PgStore};
use echorelay::prelude::*;
use secrecy::ExposeSecret;
use sqlx::Connection;

const BIN: &str = env!("CARGO_BIN_EXE_echorelay-server");
const KEY: &str = "6a4e66c27687161095467ef0a963538822927a9e557405703abffe6271b315f6";
const TOKEN: &str = "outbound-bearer-token-Zq7x";

struct Run {
    ok: bool,
    out: String,
    err: String,
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(BIN);
    c.env_remove("DATABASE_URL")
        .env_remove("SECRET_KEY")
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    Run {
        ok: o.status.success(),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// Counts of every table in `public`.
async fn counts(url: &str) -> Vec<(String, i64)> {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut out = Vec::new();
    for t in tables {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM public.\"{t}\""))
            .fetch_one(&mut c)
            .await
            .unwrap();
        out.push((t, n));
    }
    out
}

fn age_available() -> bool {
    let found = Command::new("age").arg("--version").output().is_ok();
    if !found && std::env::var("ECHORELAY_REQUIRE_SERVICES").is_ok_and(|v| v == "1") {
        panic!(
            "ECHORELAY_REQUIRE_SERVICES=1 but the age tool is not installed (apt-get install age)"
        );
    }
    found
}

#[tokio::test]
async fn backup_run_verify_restore_and_against_backup_on_postgres() {
    let Some(db) = echorelay::pg::test_database().await else {
        return;
    };
    // Two new databases on the test server: the source and the restore.
    let suffix = &UserId::random().to_string()[4..14];
    let (src_db, dst_db) = (format!("er_bk_src_{suffix}"), format!("er_bk_dst_{suffix}"));
    let mut admin = sqlx::PgConnection::connect(db.url()).await.unwrap();
    for d in [&src_db, &dst_db] {
        sqlx::query(&format!("CREATE DATABASE {d}"))
            .execute(&mut admin)
            .await
            .unwrap();
    }
    let base = db.url().split('?').next().unwrap();
    let base = &base[..base.rfind('/').unwrap()];
    let (src, dst) = (format!("{base}/{src_db}"), format!("{base}/{dst_db}"));

    let dir = std::env::temp_dir().join(format!("er-backup-{suffix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let identity = age::x25519::Identity::generate();
    let id_file = dir.join("identity.txt");
    std::fs::write(
        &id_file,
        format!("# test\n{}\n", identity.to_string().expose_secret()),
    )
    .unwrap();
    let target_dir = dir.join("target");
    std::fs::create_dir_all(&target_dir).unwrap();
    let target_url = format!("file://{}", target_dir.display());
    let recipient = identity.to_public().to_string();
    let id_path = id_file.to_str().unwrap();
    let env = |url: &str| -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), url.into()),
            ("SECRET_KEY".into(), KEY.into()),
            ("ECHORELAY_BACKUP_URL".into(), target_url.clone()),
            ("ECHORELAY_BACKUP_RECIPIENTS".into(), recipient.clone()),
        ]
    };
    let go = |args: &[&str], url: &str| {
        let e = env(url);
        let e: Vec<(&str, &str)> = e.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        run(args, &e)
    };

    // The source, filled through the library: a project, a line, a target
    // with a sealed secret, an API key, their audit events.
    assert!(go(&["migrate"], &src).ok);
    let store = PgStore::connect_with(PgOptions::new(&src)).await.unwrap();
    let relay = EchoRelay::builder()
        .store(store.clone())
        .keyring(Keyring::parse(KEY, &[]).unwrap())
        .build()
        .unwrap();
    let owner = UserId::random();
    let ip = Some("203.0.113.10".parse().unwrap());
    let project = relay
        .config()
        .create_project(owner, ip, "ops", "Ops")
        .await
        .unwrap();
    let caller = Caller::user(owner, ip);
    let write = relay
        .voter()
        .authorize::<ConfigWrite>(&caller, "ops")
        .await
        .unwrap();
    let line = relay.config().create_line(&write, "orders").await.unwrap();
    let target = relay
        .config()
        .create_target(
            &write,
            line.id,
            NewTarget {
                name: "shop".into(),
                url: "https://shop.example.com/hook".into(),
                auth: AuthInput::Bearer(SecretString::from(TOKEN)),
                signing_secret: None,
            },
        )
        .await
        .unwrap();
    let keys = relay
        .voter()
        .authorize::<Keys>(&Caller::dangerous_user_stepped_up(owner, ip), "ops")
        .await
        .unwrap();
    let minted = relay
        .keys()
        .mint(
            &keys,
            MintRequest {
                environment: Environment::Test,
                role: Role::Viewer,
                label: "ci".into(),
            },
        )
        .await
        .unwrap();

    // backup run, list, verify.
    let first = go(&["backup", "run"], &src);
    assert!(first.ok, "{}{}", first.out, first.err);
    let first_id = first.out.trim().to_owned();
    let listed = go(&["backup", "list"], &src);
    assert!(
        listed.ok && listed.out.contains(&first_id),
        "{}{}",
        listed.out,
        listed.err
    );
    let verified = go(&["backup", "verify", "-i", id_path, &first_id], &src);
    assert!(verified.ok, "{}{}", verified.out, verified.err);
    assert!(
        verified.out.contains("verified 1 objects"),
        "{}",
        verified.out
    );
    // No key material in anything printed.
    for text in [&first.out, &first.err, &verified.out, &verified.err] {
        assert!(!text.contains(KEY) && !text.contains("AGE-SECRET-KEY"));
    }

    // The standard age tool decrypts the dump: a pg_dump custom archive.
    if age_available() {
        let object = target_dir.join(format!("backups/{first_id}/pg_dump.age"));
        let out = Command::new("age")
            .args(["--decrypt", "-i", id_path])
            .arg(&object)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout.starts_with(b"PGDMP"),
            "a pg_dump custom-format archive"
        );
        let manifest = Command::new("age")
            .args(["--decrypt", "-i", id_path])
            .arg(target_dir.join(format!("backups/{first_id}/manifest.age")))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&manifest.stdout);
        assert!(text.contains("echorelay.backup-envelope.v1"), "{text}");
    }

    // More events, a second backup.
    relay.config().create_line(&write, "refunds").await.unwrap();
    let second = go(&["backup", "run"], &src);
    assert!(second.ok, "{}{}", second.out, second.err);

    // Restore the newest into the empty database: same tables, same rows;
    // the key verifies and the secret opens there.
    let second_id = second.out.trim().to_owned();
    let restored = go(&["backup", "restore", "-i", id_path, &second_id], &dst);
    assert!(restored.ok, "{}{}", restored.out, restored.err);
    assert_eq!(counts(&dst).await, counts(&src).await);
    let again = go(&["backup", "restore", "-i", id_path, &second_id], &dst);
    assert!(
        !again.ok && again.err.contains("not empty"),
        "{}{}",
        again.out,
        again.err
    );
    let up = go(&["migrate"], &dst);
    assert!(
        up.ok && up.out.contains("up to date"),
        "{}{}",
        up.out,
        up.err
    );
    let restored_relay = EchoRelay::builder()
        .store(PgStore::connect_with(PgOptions::new(&dst)).await.unwrap())
        .keyring(Keyring::parse(KEY, &[]).unwrap())
        .build()
        .unwrap();
    restored_relay
        .keys()
        .verify(minted.plaintext.expose_secret())
        .await
        .unwrap();
    let delivery = restored_relay
        .voter()
        .dangerous_delivery_grant(project.id)
        .await
        .unwrap();
    let secrets = restored_relay
        .config()
        .delivery_secrets(&delivery, target.view.id)
        .await
        .unwrap();
    let AuthInput::Bearer(token) = &secrets.auth else {
        panic!("a bearer target")
    };
    assert_eq!(token.expose_secret(), TOKEN);
    let against = go(
        &["audit", "verify", "--against-backup", "-i", id_path],
        &dst,
    );
    assert!(against.ok, "{}{}", against.out, against.err);
    assert!(
        against
            .out
            .contains("chain heads it recorded are in the live chains"),
        "{}",
        against.out
    );

    // A rollback: the first (older) backup restored over it. The newest
    // backup's heads are past the live chains: named, and the command fails.
    let rolled = go(
        &["backup", "restore", "--force", "-i", id_path, &first_id],
        &dst,
    );
    assert!(rolled.ok, "{}{}", rolled.out, rolled.err);
    let against = go(
        &["audit", "verify", "--against-backup", "-i", id_path],
        &dst,
    );
    assert!(!against.ok, "{}{}", against.out, against.err);
    assert!(
        against.out.contains(&format!("{}: truncated", project.id)),
        "{}",
        against.out
    );

    drop(store);
    drop(restored_relay);
    for d in [&src_db, &dst_db] {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {d} WITH (FORCE)"))
            .execute(&mut admin)
            .await;
    }
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}
