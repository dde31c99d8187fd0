//! The operator's binary, run as a process: `serve --demo` answers the
//! key it printed, plain HTTP is refused off loopback, `keygen` prints a
//! key `SECRET_KEY` accepts, `audit verify` passes on a fresh store,
//! `create-owner` reads the password from the terminal without echo, and
//! from standard input or a variable only when a flag says so; on
//! Postgres, `migrate` sets up a new schema, `rewrap` moves every secret
//! to a new `SECRET_KEY`, and `audit verify` names the first broken link
//! of a chain edited behind the database's triggers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use echorelay::prelude::*;

const BIN: &str = env!("CARGO_BIN_EXE_echorelay-server");

fn server() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("DATABASE_URL")
        .env_remove("SECRET_KEY")
        .env_remove("REDIS_URL");
    c
}

#[tokio::test]
async fn serve_demo_answers_with_the_key_it_printed() {
    let mut child = server()
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut key = None;
    let mut addr = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if line.starts_with("er_test_") {
            key = Some(line);
        } else if let Some(rest) = line.strip_prefix("echorelay-server: listening on http://") {
            addr = Some(rest.split_whitespace().next().unwrap().to_owned());
            break;
        }
    }
    let (key, addr) = (key.unwrap(), addr.unwrap());
    let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = |auth: Option<&str>| {
        let mut r = axum::http::Request::get("/v1/projects/demo/keys").header("host", "localhost");
        if let Some(k) = auth {
            r = r.header("authorization", format!("Bearer {k}"));
        }
        r.body(http_body_util::Full::new(axum::body::Bytes::new()))
            .unwrap()
    };
    let ok = sender.send_request(req(Some(&key))).await.unwrap();
    assert_eq!(ok.status(), 200);
    let denied = sender.send_request(req(None)).await.unwrap();
    assert_eq!(denied.status(), 401);
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn plain_http_off_loopback_is_refused_at_start() {
    let out = server()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}

#[test]
fn keygen_prints_a_key_that_parses() {
    let out = server().arg("keygen").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(SecretKey::parse(text.trim()).is_ok(), "{text:?}");
}

#[test]
fn audit_verify_and_every_help() {
    let out = server().args(["audit", "verify"]).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("global: 0 events, verified"));
    for sub in [
        "serve",
        "migrate",
        "keygen",
        "rewrap",
        "audit",
        "create-owner",
        "maintain",
    ] {
        let out = server().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{sub}"
        );
    }
}

/// Runs `create-owner` with `extra` arguments and `env`, writing
/// `password` (if any) as the first line of its standard input; answers
/// the code prompt with the authenticator's code for the secret it prints.
/// Asserts the enrollment went through: a QR code, ten backup codes, a
/// first live key.
fn create_owner_with(extra: &[&str], env: &[(&str, &str)], password: Option<&str>) {
    use std::io::Write;
    let mut child = server()
        .args([
            "create-owner",
            "--email",
            "ops@example.com",
            "--project",
            "ops",
        ])
        .args(extra)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    if let Some(p) = password {
        writeln!(stdin, "{p}").unwrap();
    }
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let secret = first
        .trim_end()
        .strip_suffix("):")
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("{first:?}"))
        .to_owned();
    let seed = echorelay::core::account::totp::TotpSeed::from_base32(&secret).unwrap();
    let params = echorelay::core::account::totp::TotpParams::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let step = echorelay::core::account::totp::step_at(&params, now);
    let code = echorelay::core::account::totp::code_for_step(&seed, &params, step).unwrap();
    writeln!(stdin, "{}", code.as_str()).unwrap();
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
    assert!(
        rest.contains("\u{2580}") || rest.contains("\u{2584}") || rest.contains("\u{2588}"),
        "a QR code in block characters"
    );
    let codes = rest
        .split("Backup codes")
        .nth(1)
        .unwrap()
        .split("Project")
        .next()
        .unwrap();
    assert_eq!(
        codes.lines().filter(|l| l.starts_with("  ")).count(),
        10,
        "ten backup codes: {codes}"
    );
    assert!(rest.lines().any(|l| l.starts_with("er_live_")), "{rest}");
}

const OWNER_PASSWORD: &str = "correct horse battery staple 2026";

#[test]
fn create_owner_enrolls_in_the_terminal_and_prints_a_first_key() {
    // The code must be the authenticator's: read the secret the binary
    // prints, compute the code, answer the prompt.
    create_owner_with(&["--password-stdin"], &[], Some(OWNER_PASSWORD));
}

#[test]
fn create_owner_reads_the_environment_only_when_told_which_variable() {
    create_owner_with(
        &["--password-env", "OPS_PASSWORD"],
        &[("OPS_PASSWORD", OWNER_PASSWORD)],
        None,
    );
    let out = server()
        .args(["create-owner", "--email", "a@example.com", "--project", "a"])
        .args(["--password-env", "NOT_SET_ANYWHERE"])
        .env_remove("NOT_SET_ANYWHERE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NOT_SET_ANYWHERE is not set"));
}

/// Without a flag the password comes from the terminal alone, without
/// echo: neither the old variable nor standard input is read. Run in a
/// new session (`setsid`), so there is no terminal to open even when the
/// tests run in one.
#[test]
fn create_owner_reads_the_password_from_the_terminal_only_by_default() {
    use std::io::Write;
    let mut child = Command::new("setsid")
        .args(["--wait", BIN])
        .args(["create-owner", "--email", "b@example.com", "--project", "b"])
        .env_remove("DATABASE_URL")
        .env_remove("SECRET_KEY")
        .env("ECHORELAY_OWNER_PASSWORD", OWNER_PASSWORD)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = writeln!(stdin, "{OWNER_PASSWORD}");
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stderr.contains("--password-stdin"), "{stderr}");
    assert!(!stdout.contains("Scan this"), "{stdout}");
}

/// The operator's Postgres runbook, each step a process: `migrate` on a
/// new schema (twice: the second run has nothing to do), `rewrap` after a
/// `SECRET_KEY` rotation (it reports what it moved and that the old key
/// can go; the secret then opens under the new key alone), and `audit
/// verify`, which passes, then names the first broken link once an event
/// was edited by a superuser with the append-only triggers switched off.
#[cfg(feature = "pg")]
#[tokio::test]
async fn operator_commands_on_postgres() {
    use echorelay::core::access::surface::ConfigWrite;
    use echorelay::pg::{PgOptions, PgStore};
    use sqlx::Connection;

    const OLD: &str = "6a4e66c27687161095467ef0a963538822927a9e557405703abffe6271b315f6";
    const NEW: &str = "917675fc9f29ce9cf2ae80cbfbca06f4f7134968364dc754e7b13d778df84265";
    const TOKEN: &str = "outbound-bearer-token-Zq7x";

    let Some(db) = echorelay::pg::test_database().await else {
        return;
    };
    let schema = format!("er_bin_{}", &UserId::random().to_string()[4..16]);
    let mut admin = sqlx::PgConnection::connect(db.url()).await.unwrap();
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let sep = if db.url().contains('?') { '&' } else { '?' };
    let url = format!("{}{sep}options[search_path]={schema}", db.url());
    let run = |args: &[&str], keys: &[(&str, &str)]| {
        let mut c = server();
        c.env("DATABASE_URL", &url).args(args);
        for (var, value) in keys {
            c.env(var, value);
        }
        let out = c.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.success(),
            text,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // migrate: a new schema, then nothing left to do.
    for _ in 0..2 {
        let (ok, out, err) = run(&["migrate"], &[]);
        assert!(ok && out.contains("the schema is up to date"), "{out}{err}");
    }

    // Data sealed under the old key, written by the library.
    let store = PgStore::connect_with(PgOptions::new(&url)).await.unwrap();
    let relay = |key: &str| {
        EchoRelay::builder()
            .store(store.clone())
            .keyring(Keyring::parse(key, &[]).unwrap())
            .account_policy(echorelay_testkit::test_account_policy())
            .build()
            .unwrap()
    };
    let old = relay(OLD);
    let (owner, ip) = (UserId::random(), Some("203.0.113.10".parse().unwrap()));
    let project = old
        .config()
        .create_project(owner, ip, "ops", "Ops")
        .await
        .unwrap();
    let write = old
        .voter()
        .authorize::<ConfigWrite>(&Caller::user(owner, ip), "ops")
        .await
        .unwrap();
    let line = old.config().create_line(&write, "orders").await.unwrap();
    let target = old
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

    // rewrap under the new key, the old one as previous.
    let rotated = [("SECRET_KEY", NEW), ("SECRET_KEY_PREVIOUS", OLD)];
    let (ok, out, err) = run(&["rewrap"], &rotated);
    assert!(ok, "{out}{err}");
    let summary = out.lines().rfind(|l| l.starts_with("rewrap: ")).unwrap();
    let moved: usize = summary["rewrap: ".len()..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(moved >= 1, "{out}");
    assert!(summary.ends_with("0 failed, 0 conflicts"), "{out}");
    let old_id = SecretKey::parse(OLD).unwrap().id();
    assert!(
        out.contains(&format!("previous key {old_id}: unused: it can go")),
        "{out}"
    );
    assert!(!format!("{out}{err}").contains(OLD) && !format!("{out}{err}").contains(NEW));
    // Again: everything is current already.
    let (ok, out, _) = run(&["rewrap"], &rotated);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("rewrap: 0 rewrapped, {moved} already current")),
        "{out}"
    );
    // The new key alone opens the secret.
    let new = relay(NEW);
    let delivery = new
        .voter()
        .dangerous_delivery_grant(project.id)
        .await
        .unwrap();
    let secrets = new
        .config()
        .delivery_secrets(&delivery, target.view.id)
        .await
        .unwrap();
    let AuthInput::Bearer(token) = &secrets.auth else {
        panic!("a bearer target")
    };
    assert_eq!(token.expose_secret(), TOKEN);

    // Least privilege: `migrate --grant-to` gives a login role the
    // service's rights and no more. As the tables' owner the binary warns;
    // as that role it does not, and the role verifies the log.
    let svc = format!("er_svc_{}", &UserId::random().to_string()[4..16]);
    sqlx::query(&format!("CREATE ROLE {svc} LOGIN"))
        .execute(&mut admin)
        .await
        .unwrap();
    let (ok, out, err) = run(&["migrate", "--grant-to", &svc], &[]);
    assert!(
        ok && out.contains(&format!("{svc} may now run the service")),
        "{out}{err}"
    );
    let svc_url = {
        let (scheme, rest) = url.split_once("://").unwrap();
        let host = rest.split_once('@').map_or(rest, |(_, h)| h);
        format!("{scheme}://{svc}@{host}")
    };
    let (ok, out, err) = run(&["audit", "verify"], &[("SECRET_KEY", NEW)]);
    assert!(ok && err.contains("owns the tables"), "{out}{err}");
    let (ok, out, err) = run(
        &["audit", "verify"],
        &[("SECRET_KEY", NEW), ("DATABASE_URL", &svc_url)],
    );
    assert!(ok && !err.contains("owns the tables"), "{out}{err}");

    // audit verify: intact, then broken at the edited event.
    let (ok, out, err) = run(&["audit", "verify"], &[("SECRET_KEY", NEW)]);
    assert!(ok, "{out}{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("ops: ") && l.ends_with(" events, verified")),
        "{out}"
    );
    let mut tx = admin.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    let edited = sqlx::query(&format!(
        "UPDATE {schema}.audit_events SET ip = '198.51.100.66' WHERE project = $1 AND seq = 2"
    ))
    .bind(project.id.as_bytes().as_slice())
    .execute(&mut *tx)
    .await
    .unwrap();
    assert_eq!(edited.rows_affected(), 1);
    tx.commit().await.unwrap();
    let (ok, out, _) = run(&["audit", "verify"], &[("SECRET_KEY", NEW)]);
    assert!(!ok, "a broken chain fails the command: {out}");
    assert!(
        out.lines().any(|l| l.starts_with("ops: BROKEN at seq 2: ")),
        "{out}"
    );
    assert!(
        out.contains("global: "),
        "every chain is still checked: {out}"
    );

    // A database owner's forgery: the edited event re-hashed with the
    // public `seal`, every later link and the head row rewritten to match
    // (a chain a hashes-only check accepts), then the newest event cut
    // off with the head row moved back. Without SECRET_KEY no tag checks.
    use echorelay::core::audit::{AuditDraft, seal};
    use echorelay::core::ports::AuditLog;
    let events = store.events(Some(project.id), 0, 1000).await.unwrap();
    let mut prev = None;
    let mut forged = Vec::new();
    for e in &events {
        let draft = AuditDraft {
            project: e.project,
            at: e.at,
            actor: e.actor,
            ip: e.ip,
            subject: e.subject,
            kind: e.kind.clone(),
        };
        let f = seal(draft, prev);
        prev = Some(f.head());
        forged.push(f);
    }
    assert!(
        echorelay::core::audit::verify_chain(Some(project.id), &forged, None).is_ok(),
        "the forgery passes a hashes-only check"
    );
    let db_url = db.url().to_owned();
    let rewrite = |cut: usize| {
        let (forged, schema, project, db_url) = (&forged, &schema, project.id, db_url.clone());
        async move {
            let mut admin = sqlx::PgConnection::connect(&db_url).await.unwrap();
            let mut tx = admin.begin().await.unwrap();
            sqlx::query("SET LOCAL session_replication_role = replica")
                .execute(&mut *tx)
                .await
                .unwrap();
            for f in &forged[..forged.len() - cut] {
                sqlx::query(&format!(
                    "UPDATE {schema}.audit_events SET id = $3, prev_hash = $4, hash = $5, ip = $6 \
                     WHERE project = $1 AND seq = $2"
                ))
                .bind(project.as_bytes().as_slice())
                .bind(f.seq as i64)
                .bind(f.id.as_bytes().as_slice())
                .bind(&f.prev_hash.0[..])
                .bind(&f.hash.0[..])
                .bind(f.ip.map(|ip| ip.to_string()))
                .execute(&mut *tx)
                .await
                .unwrap();
            }
            if cut > 0 {
                sqlx::query(&format!(
                    "DELETE FROM {schema}.audit_events WHERE project = $1 AND seq > $2"
                ))
                .bind(project.as_bytes().as_slice())
                .bind((forged.len() - cut) as i64)
                .execute(&mut *tx)
                .await
                .unwrap();
            }
            let head = &forged[forged.len() - cut - 1];
            sqlx::query(&format!(
                "UPDATE {schema}.audit_heads SET seq = $2, hash = $3 WHERE chain = $1"
            ))
            .bind(project.as_bytes().as_slice())
            .bind(head.seq as i64)
            .bind(&head.hash.0[..])
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
        }
    };
    rewrite(0).await;
    let (ok, out, _) = run(&["audit", "verify"], &[("SECRET_KEY", NEW)]);
    assert!(!ok, "a re-hashed chain fails the command: {out}");
    assert!(
        out.lines().any(|l| l.starts_with("ops: BROKEN at seq ")),
        "{out}"
    );
    rewrite(1).await;
    let (ok, out, _) = run(&["audit", "verify"], &[("SECRET_KEY", NEW)]);
    assert!(!ok, "a cut-off chain fails the command: {out}");
    assert!(
        out.lines().any(|l| l.starts_with("ops: BROKEN at seq ")),
        "{out}"
    );

    drop((old, new, store));
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut admin)
        .await
        .unwrap();
    for cleanup in [format!("DROP OWNED BY {svc}"), format!("DROP ROLE {svc}")] {
        sqlx::query(&cleanup).execute(&mut admin).await.unwrap();
    }
}
