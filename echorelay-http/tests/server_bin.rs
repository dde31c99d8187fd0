//! The operator's binary, run as a process: `serve --demo` answers the
//! key it printed, plain HTTP is refused off loopback, `keygen` prints a
//! key `SECRET_KEY` accepts, `audit verify` passes on a fresh store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use echorelay::prelude::*;

const BIN: &str = env!("CARGO_BIN_EXE_echorelay-server");

fn server() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("DATABASE_URL").env_remove("SECRET_KEY");
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
    ] {
        let out = server().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage:"),
            "{sub}"
        );
    }
}

#[test]
fn create_owner_enrolls_in_the_terminal_and_prints_a_first_key() {
    use std::io::Write;
    // The code must be the authenticator's: read the secret the binary
    // prints, compute the code, answer the prompt.
    let mut child = server()
        .args([
            "create-owner",
            "--email",
            "ops@example.com",
            "--project",
            "ops",
        ])
        .env(
            "ECHORELAY_OWNER_PASSWORD",
            "correct horse battery staple 2026",
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let secret = first
        .trim_end()
        .strip_suffix("):")
        .and_then(|l| l.rsplit(' ').next())
        .unwrap()
        .to_owned();
    let seed = echorelay::core::account::totp::TotpSeed::from_base32(&secret).unwrap();
    let params = echorelay::core::account::totp::TotpParams::default();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let step = echorelay::core::account::totp::step_at(&params, now);
    let code = echorelay::core::account::totp::code_for_step(&seed, &params, step).unwrap();
    writeln!(child.stdin.take().unwrap(), "{}", code.as_str()).unwrap();
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
