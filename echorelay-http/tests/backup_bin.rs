//! `echorelay-server backup …` run as a process on Postgres (feature
//! `backup`), following RUNBOOK.md: a database filled through the library
//! is backed up to a directory target; the backup is listed and verified;
//! its dump decrypts with Debian's `age` tool; it is restored into an empty
//! database (a non-empty one is refused), where every table holds what the
//! source held, the API key verifies and the target's secret opens; and
//! `audit verify --against-backup` passes there, and names the chains a
//! restore of an older backup lost (a rollback). And `serve`'s backup
//! schedule, watched from outside: one backup per slot however many
//! servers run, the retention flags, the retry flag, and a refusal to
//! start when it could not back up.
#![cfg(feature = "backup")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server_process;

use std::path::Path;
use std::process::Command;

use echorelay::core::access::surface::{ConfigWrite, Keys};
use echorelay::core::keys::{Environment, MintRequest};
use echorelay::pg::{PgOptions, PgStore};
use echorelay::prelude::*;
use secrecy::ExposeSecret;
use server_process::{counts, run};
use sqlx::Connection;

const KEY: &str = "6a4e66c27687161095467ef0a963538822927a9e557405703abffe6271b315f6";
const TOKEN: &str = "outbound-bearer-token-Zq7x";

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
    let (id_path, recipient) = server_process::age_identity(&dir, "identity.txt");
    let id_path = id_path.as_str();
    let target_dir = dir.join("target");
    std::fs::create_dir_all(&target_dir).unwrap();
    let target_url = format!("file://{}", target_dir.display());
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
        verified.out.contains("verified 2 objects"),
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

/// A database of its own (migrated), a directory target, an age key pair,
/// and the environment `serve` and `backup` need to back it up.
struct Scratch {
    admin: sqlx::PgConnection,
    name: String,
    url: String,
    dir: std::path::PathBuf,
    target: std::path::PathBuf,
    recipient: String,
    /// The identity file of `recipient`.
    id_path: String,
}

impl Scratch {
    async fn new(tag: &str) -> Option<Self> {
        let db = echorelay::pg::test_database().await?;
        let (url, name, admin) = server_process::scratch_database(db.url(), tag).await;
        let suffix = &name[name.len() - 10..];
        let dir = std::env::temp_dir().join(format!("er-{tag}-{suffix}"));
        let target = dir.join("target");
        std::fs::create_dir_all(&target).unwrap();
        let (id_path, recipient) = server_process::age_identity(&dir, "identity.txt");
        let s = Scratch {
            admin,
            name,
            url,
            dir,
            target,
            recipient,
            id_path,
        };
        let m = run(&["migrate"], &s.env_refs(&s.env()));
        assert!(m.ok, "{}{}", m.out, m.err);
        Some(s)
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("DATABASE_URL".into(), self.url.clone()),
            ("SECRET_KEY".into(), KEY.into()),
            (
                "ECHORELAY_BACKUP_URL".into(),
                format!("file://{}", self.target.display()),
            ),
            ("ECHORELAY_BACKUP_RECIPIENTS".into(), self.recipient.clone()),
        ]
    }

    fn env_refs<'a>(&self, env: &'a [(String, String)]) -> Vec<(&'a str, &'a str)> {
        env.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect()
    }

    /// `echorelay-server ARGS` on this database and target.
    fn run(&self, args: &[&str]) -> server_process::Run {
        let env = self.env();
        run(args, &self.env_refs(&env))
    }

    /// `backup run`, which must succeed: the new backup's id.
    fn backup(&self) -> String {
        let r = self.run(&["backup", "run"]);
        assert!(r.ok, "{}{}", r.out, r.err);
        r.out.trim().to_owned()
    }

    /// `serve ARGS` on this database and target.
    fn serve(&self, args: &[&str]) -> server_process::Running {
        let env = self.env();
        server_process::serve(args, &self.env_refs(&env), None)
    }

    /// The ids of the complete backups in the target (a manifest
    /// exists), sorted: read off the directory, not through echorelay.
    fn complete(&self) -> Vec<String> {
        let Ok(dirs) = std::fs::read_dir(self.target.join("backups")) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = dirs
            .map(|d| d.unwrap().path())
            .filter(|p| p.join("manifest.age").is_file())
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        ids
    }

    async fn remove(mut self) {
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut self.admin)
        .await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `HH:MM:SS` of now (UTC) shifted by `secs`.
fn time_of_day(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .format("%H:%M:%S")
        .to_string()
}

/// Polls `done` every 100 ms for up to 60 s; on a timeout, shows what
/// `servers` logged.
async fn until(what: &str, servers: &[&server_process::Running], mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        if start.elapsed() > std::time::Duration::from_secs(60) {
            let logs: Vec<String> = servers
                .iter()
                .map(|r| r.log.lock().unwrap().clone())
                .collect();
            panic!("timed out waiting for {what}:\n{}", logs.join("\n---\n"));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

const MADE: &str = "backup: made the slot's backup";
const COVERED: &str = "backup: the slot is covered";
const BUSY: &str = "backup: another process holds the backup lock";

/// Three servers started at once on one database, with no backup yet
/// (the last slot, a minute ago, was missed): exactly one backs up and
/// the others find the slot covered or the lock held. Then two servers
/// whose `--backup-at` is seconds ahead: at start the slot is
/// covered; when it comes, exactly one more backup is made.
#[tokio::test]
async fn serve_backs_up_once_per_slot_however_many_servers_run() {
    let Some(s) = Scratch::new("sched").await else {
        return;
    };
    let missed = time_of_day(-60);
    let servers: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| scope.spawn(|| s.serve(&["--backup-at", &missed])))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all: Vec<&server_process::Running> = servers.iter().collect();
    until("each server's first pass", &all, || {
        servers
            .iter()
            .all(|r| r.logged(MADE) || r.logged(COVERED) || r.logged(BUSY))
    })
    .await;
    until("the backup", &all, || s.complete().len() == 1).await;
    let made: usize = servers.iter().map(|r| r.count(MADE)).sum();
    assert_eq!(made, 1, "one server backs up the missed slot");
    assert_eq!(s.complete().len(), 1);
    let first = s.complete();
    drop(servers);

    // The next slot comes while two servers run.
    // Eight seconds: time for both to start and find the slot covered first.
    let soon = time_of_day(8);
    let servers: Vec<_> = (0..2).map(|_| s.serve(&["--backup-at", &soon])).collect();
    let all: Vec<&server_process::Running> = servers.iter().collect();
    until("the covered first pass", &all, || {
        servers.iter().all(|r| r.logged(COVERED))
    })
    .await;
    until("the slot's backup", &all, || {
        servers.iter().any(|r| r.logged(MADE))
    })
    .await;
    until("both servers' pass at the slot", &all, || {
        servers
            .iter()
            .all(|r| r.count(COVERED) + r.count(MADE) + r.count(BUSY) >= 2)
    })
    .await;
    let made: usize = servers.iter().map(|r| r.count(MADE)).sum();
    assert_eq!(made, 1, "one backup for the slot");
    // Default retention keeps the newest backup of each day: the slot's
    // backup replaced the morning's.
    let now = s.complete();
    assert_eq!(now.len(), 1);
    assert_ne!(now, first);
    let listed = s.run(&["backup", "list"]);
    assert!(
        listed.ok && listed.out.contains(&now[0]),
        "{}{}",
        listed.out,
        listed.err
    );
    drop(servers);
    s.remove().await;
}

/// `--backup-keep-daily/weekly/monthly` decide what the scheduled pass
/// prunes: backups dated over 40 past days (copies of a real one under
/// older ids) are cut to what those flags keep, which differs from what
/// the defaults keep.
#[tokio::test]
async fn serve_prunes_by_its_retention_flags() {
    use echorelay::core::backup::service::{BackupListing, Retention};
    let Some(s) = Scratch::new("keep").await else {
        return;
    };
    let real = s.target.join("backups").join(s.backup());
    let today = chrono::Utc::now();
    for day in 1..=40 {
        let at = today - chrono::Duration::days(day);
        let id = format!("{}-{:08x}", at.format("%Y%m%dT%H%M%SZ"), day);
        let copy = s.target.join("backups").join(&id);
        std::fs::create_dir_all(&copy).unwrap();
        for f in ["pg_dump.age", "manifest.age"] {
            std::fs::copy(real.join(f), copy.join(f)).unwrap();
        }
    }
    let before = s.complete();
    assert_eq!(before.len(), 41);
    let listing: Vec<BackupListing> = before
        .iter()
        .map(|id| BackupListing {
            id: id.clone(),
            started_at: echorelay::core::backup::manifest::started_at(id).unwrap(),
            size: 0,
        })
        .collect();
    let flags = Retention {
        daily: 2,
        weekly: 3,
        monthly: 2,
    };
    let mut expected: Vec<String> = flags.keep(&listing).into_iter().map(String::from).collect();
    expected.sort();
    let mut by_default: Vec<String> = Retention::default()
        .keep(&listing)
        .into_iter()
        .map(String::from)
        .collect();
    by_default.sort();
    assert_ne!(expected, by_default, "the flags must make a difference");

    // The real backup covers the slot (a minute ago): the pass prunes only.
    let server = s.serve(&[
        "--backup-at",
        &time_of_day(-60),
        "--backup-keep-daily",
        "2",
        "--backup-keep-weekly",
        "3",
        "--backup-keep-monthly",
        "2",
    ]);
    until("the pass", &[&server], || server.logged(COVERED)).await;
    assert_eq!(s.complete(), expected);
    assert!(
        server.logged(&format!("pruned={}", 41 - expected.len())),
        "{}",
        server.log.lock().unwrap()
    );
    drop(server);
    s.remove().await;
}

/// A scheduled backup that fails (the target's `backups` is a file, not
/// a directory) is tried again after `--backup-retry-secs`, and succeeds
/// once the target is usable; the server keeps serving meanwhile.
#[tokio::test]
async fn serve_retries_a_failed_backup_after_its_retry_interval() {
    let Some(s) = Scratch::new("retry").await else {
        return;
    };
    let blocker = s.target.join("backups");
    std::fs::write(&blocker, b"not a directory").unwrap();
    let mut server = s.serve(&["--backup-at", &time_of_day(-60), "--backup-retry-secs", "1"]);
    until("the failure", &[&server], || {
        server.logged("backup: the scheduled backup failed")
    })
    .await;
    assert!(s.complete().is_empty());
    std::fs::remove_file(&blocker).unwrap();
    until("the retried backup", &[&server], || {
        s.complete().len() == 1 && server.logged(MADE)
    })
    .await;
    assert!(server.alive());
    drop(server);
    s.remove().await;
}

/// With ECHORELAY_BACKUP_URL set, `serve` refuses to start when it could
/// not back up: no recipients, malformed ones, or the in-memory store
/// (no other process can back it up).
#[tokio::test]
async fn serve_refuses_to_start_with_backups_it_cannot_make() {
    let dir = std::env::temp_dir().join(format!(
        "er-refuse-{}",
        &UserId::random().to_string()[4..14]
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let target = format!("file://{}", dir.display());
    let cases: [(&[(&str, &str)], &str); 2] = [
        (&[("ECHORELAY_BACKUP_URL", &target)], "recipients"),
        (
            &[
                ("ECHORELAY_BACKUP_URL", &target),
                ("ECHORELAY_BACKUP_RECIPIENTS", "age1notakey"),
            ],
            "recipients",
        ),
    ];
    for (env, says) in cases {
        let r = run(&["serve", "--listen", "127.0.0.1:0"], env);
        assert!(!r.ok, "{}{}", r.out, r.err);
        assert!(r.err.contains(says), "{says}: {}", r.err);
        assert!(!r.out.contains("listening"), "{}", r.out);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The status of `GET /v1/projects/demo/lines` with `key` as the bearer.
async fn demo_lines_status(addr: std::net::SocketAddr, key: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!(
            "GET /v1/projects/demo/lines HTTP/1.1\r\nHost: localhost\r\n\
             Authorization: Bearer {key}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// An in-memory server backs its store up on its schedule (the missed
/// slot at start), and a new in-memory server started with
/// `--restore-backup newest` serves what the first one held: the demo
/// owner key minted by the first works on the second. A restore with the
/// wrong identity, or under another SECRET_KEY, does not start.
#[tokio::test]
async fn a_memory_server_backs_up_and_a_new_one_restores_it_at_start() {
    let dir = std::env::temp_dir().join(format!(
        "er-memrestore-{}",
        &UserId::random().to_string()[4..14]
    ));
    let target = dir.join("target");
    std::fs::create_dir_all(&target).unwrap();
    let (id_path, recipient) = server_process::age_identity(&dir, "identity.txt");
    let (other_id, _) = server_process::age_identity(&dir, "other.txt");
    let url = format!("file://{}", target.display());
    let env = [
        ("SECRET_KEY", KEY),
        ("ECHORELAY_BACKUP_URL", url.as_str()),
        ("ECHORELAY_BACKUP_RECIPIENTS", recipient.as_str()),
    ];
    let at = time_of_day(-60);
    let first = server_process::serve(&["--demo", "--backup-at", &at], &env, None);
    let key = first
        .banner
        .iter()
        .find(|l| l.starts_with("er_test_"))
        .expect("--demo prints its key")
        .clone();
    assert!(demo_lines_status(first.addr, &key).await.contains(" 200 "));
    until("the first server's backup", &[&first], || {
        first.logged(MADE)
    })
    .await;
    drop(first);

    let restore = ["--restore-backup", "newest", "--restore-identity", &id_path];
    let second = server_process::serve(&restore, &env, None);
    assert!(
        second
            .banner
            .iter()
            .any(|l| l.contains("restored backup") && l.contains("1 projects")),
        "{:?}",
        second.banner
    );
    assert!(demo_lines_status(second.addr, &key).await.contains(" 200 "));
    let wrong = format!("{}x", &key[..key.len() - 1]);
    assert!(
        demo_lines_status(second.addr, &wrong)
            .await
            .contains(" 401 ")
    );
    drop(second);

    let r = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--restore-backup",
            "newest",
            "--restore-identity",
            &other_id,
        ],
        &env,
    );
    assert!(
        !r.ok
            && r.err
                .contains("not encrypted to any of the given identities"),
        "{}{}",
        r.out,
        r.err
    );
    let other_key = "3c1f9a0e5b7d2c84e6a1f03b9d5c7e2a41b8f6d09c3e7a5b2d4f6e8a0c1b3d5f";
    let r = run(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--restore-backup",
            "newest",
            "--restore-identity",
            &id_path,
        ],
        &[
            ("SECRET_KEY", other_key),
            ("ECHORELAY_BACKUP_URL", url.as_str()),
            ("ECHORELAY_BACKUP_RECIPIENTS", recipient.as_str()),
        ],
    );
    assert!(
        !r.ok && !r.out.contains("listening") && r.err.contains("does not verify"),
        "{}{}",
        r.out,
        r.err
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// `backup restore` streams the dump once, checked as it goes, and never
/// commits one that does not check out: a dump swapped for another
/// backup's (a valid age file for the same key, a valid pg_dump: only its
/// hash tells) and one with a flipped byte are both refused, and the
/// empty destination database stays empty.
#[tokio::test]
async fn restore_never_commits_a_dump_that_does_not_verify() {
    let Some(mut s) = Scratch::new("swap").await else {
        return;
    };
    let id_path = s.id_path.clone();
    let id_path = id_path.as_str();
    let older = s.backup();
    // More rows, a newer backup.
    let mut c = sqlx::PgConnection::connect(&s.url).await.unwrap();
    sqlx::query("CREATE TABLE extra AS SELECT g FROM generate_series(1, 50000) g")
        .execute(&mut c)
        .await
        .unwrap();
    drop(c);
    let newer = s.backup();
    let dump = |id: &str| s.target.join("backups").join(id).join("pg_dump.age");
    let original = std::fs::read(dump(&newer)).unwrap();

    let dst_name = format!("{}_dst", s.name);
    sqlx::query(&format!("CREATE DATABASE {dst_name}"))
        .execute(&mut s.admin)
        .await
        .unwrap();
    let dst = format!("{}_dst", s.url);
    let relations = || async { echorelay::pg::backup::user_relations(&dst).await.unwrap() };
    // `backup restore` of the newer backup into the destination.
    let restore = || {
        let env = s.env();
        let mut env = s.env_refs(&env);
        env.retain(|(k, _)| *k != "DATABASE_URL");
        env.push(("DATABASE_URL", &dst));
        run(&["backup", "restore", "-i", id_path, newer.as_str()], &env)
    };
    let mut swapped = std::fs::read(dump(&older)).unwrap();
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x01;
    for (what, bytes) in [("swapped", &mut swapped), ("flipped", &mut flipped)] {
        std::fs::write(dump(&newer), &bytes).unwrap();
        let r = restore();
        assert!(!r.ok, "{what}: {}{}", r.out, r.err);
        assert!(r.err.contains("does not verify"), "{what}: {}", r.err);
        assert_eq!(relations().await, 0, "{what}: nothing committed");
    }
    // The real dump restores.
    std::fs::write(dump(&newer), &original).unwrap();
    let r = restore();
    assert!(r.ok, "{}{}", r.out, r.err);
    assert!(relations().await > 0);
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {dst_name} WITH (FORCE)"))
        .execute(&mut s.admin)
        .await;
    s.remove().await;
}
