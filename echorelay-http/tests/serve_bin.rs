//! `echorelay-server serve` as a process, seen from a client: with
//! `--tls-cert`/`--tls-key` it terminates TLS (a rustls client trusting
//! the test's certificate gets answers; plaintext to the port gets none);
//! each limit flag acts (`--header-timeout-secs`,
//! `--tls-handshake-timeout-secs`, `--idle-timeout-secs`,
//! `--max-connections`, `--max-requests-per-connection`); it survives
//! running out of file descriptors (`EMFILE` on accept) and serves again
//! once they are back; on Postgres, its scheduled maintenance auto-rotates
//! a due key (whose next answer carries `Deprecation` and `Sunset`), and
//! `maintain` does it once and prints the report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod probe;
mod server_process;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::http::{StatusCode, header};
use echorelay::prelude::*;
use probe::*;
use server_process::*;

/// The certificate and key, as files the binary reads.
struct CertFiles {
    dir: PathBuf,
}

impl CertFiles {
    fn new(tls: &Tls) -> Self {
        let dir = std::env::temp_dir().join(format!("er-tls-{}", UserId::random()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cert.pem"), &tls.cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &tls.key_pem).unwrap();
        CertFiles { dir }
    }

    fn args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            self.dir.join("cert.pem").display().to_string(),
            "--tls-key".into(),
            self.dir.join("key.pem").display().to_string(),
        ]
    }
}

impl Drop for CertFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn with<'a>(base: &'a [String], more: &[&'a str]) -> Vec<&'a str> {
    base.iter()
        .map(String::as_str)
        .chain(more.iter().copied())
        .collect()
}

#[tokio::test]
async fn serve_terminates_tls_with_the_configured_certificate() {
    let tls = Tls::new();
    let files = CertFiles::new(&tls);
    let args = files.args();
    let server = serve(&with(&args, &[]), &[], None);
    let (mut sender, _task) = client(tls.connect(server.addr).await.unwrap()).await;
    let (status, headers) = fetch(&mut sender, "/openapi.json").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(headers.contains_key(header::STRICT_TRANSPORT_SECURITY));
    // TLS is required, and these requests count as TLS: a project route
    // answers 401 (no key), not 403 tls_required.
    let (status, _) = fetch(&mut sender, "/v1/projects/demo/lines").await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    plaintext_to_tls_gets_no_http_answer(server.addr).await;
}

#[tokio::test]
async fn header_timeout_flag_cuts_a_trickled_head() {
    let server = serve(&["--header-timeout-secs", "1"], &[], None);
    assert_eq!(
        plain_get(server.addr, "/openapi.json").await,
        StatusCode::OK
    );
    trickled_head_gets_no_answer(
        tokio::net::TcpStream::connect(server.addr).await.unwrap(),
        Duration::from_secs(3),
    )
    .await;
}

#[tokio::test]
async fn tls_handshake_timeout_flag_closes_a_connection_without_client_hello() {
    let tls = Tls::new();
    let files = CertFiles::new(&tls);
    let args = files.args();
    let server = serve(
        &with(&args, &["--tls-handshake-timeout-secs", "1"]),
        &[],
        None,
    );
    silent_tls_connection_is_closed(server.addr).await;
}

#[tokio::test]
async fn idle_timeout_flag_cuts_a_stalled_body() {
    let server = serve(
        &["--idle-timeout-secs", "1", "--header-timeout-secs", "60"],
        &[],
        None,
    );
    stalled_body_is_cut(server.addr).await;
}

#[tokio::test]
async fn max_connections_flag_holds() {
    let server = serve(&["--max-connections", "2"], &[], None);
    connection_cap_holds(server.addr, 2).await;
}

#[tokio::test]
async fn max_requests_per_connection_flag_holds() {
    let server = serve(&["--max-requests-per-connection", "2"], &[], None);
    requests_per_connection_are_capped(server.addr, 2).await;
}

#[test]
fn out_of_range_limits_are_refused_at_start() {
    for bad in [
        ["--max-connections", "0"],
        ["--header-timeout-secs", "0"],
        ["--idle-timeout-secs", "0"],
        ["--tls-handshake-timeout-secs", "0"],
    ] {
        let out = Command::new(BIN)
            .env_remove("DATABASE_URL")
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(bad)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad:?}");
    }
}

/// With 32 file descriptors, connections that never finish their TLS
/// handshake use them all up: accept fails with EMFILE and is logged.
/// Once they close, the same process serves again.
#[tokio::test]
async fn serve_survives_running_out_of_file_descriptors() {
    let tls = Tls::new();
    let files = CertFiles::new(&tls);
    let args = files.args();
    let mut server = serve(
        &with(
            &args,
            &[
                "--max-connections",
                "10000",
                "--tls-handshake-timeout-secs",
                "60",
            ],
        ),
        &[],
        Some("ulimit -n 32"),
    );
    let (mut sender, _task) = client(tls.connect(server.addr).await.unwrap()).await;
    assert_eq!(
        fetch(&mut sender, "/openapi.json").await.unwrap().0,
        StatusCode::OK
    );
    drop(sender);
    let mut held = Vec::new();
    for _ in 0..64 {
        held.push(tokio::net::TcpStream::connect(server.addr).await.unwrap());
    }
    let start = tokio::time::Instant::now();
    while !server.logged("accept failed") {
        assert!(
            start.elapsed() < DEADLINE,
            "no accept error: {}",
            server.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        server.logged("Too many open files"),
        "{}",
        server.log.lock().unwrap()
    );
    drop(held);
    // The backlog drains (each connection closed, seen at once), then a
    // fresh client is served.
    let start = tokio::time::Instant::now();
    loop {
        let served = async {
            let io = tls.connect(server.addr).await.ok()?;
            let (mut sender, _task) = client(io).await;
            fetch(&mut sender, "/openapi.json").await.ok()
        };
        if let Ok(Some((status, _))) = tokio::time::timeout(Duration::from_secs(2), served).await {
            assert_eq!(status, StatusCode::OK);
            break;
        }
        assert!(start.elapsed() < DEADLINE, "never served again");
    }
    assert!(server.alive(), "the process is still running");
}

/// A Postgres schema of its own, migrated, and a relay on it holding a
/// project `ops` whose key policy makes a key due one second after it is
/// minted, and such a key: its plaintext and id.
#[cfg(feature = "pg")]
struct DueKey {
    url: String,
    schema: String,
    admin: sqlx::PgConnection,
    relay: EchoRelay,
    grant: Grant<Keys>,
    key: String,
    id: echorelay::core::ids::KeyId,
}

#[cfg(feature = "pg")]
const VAULT_KEY: &str = "6a4e66c27687161095467ef0a963538822927a9e557405703abffe6271b315f6";

#[cfg(feature = "pg")]
impl DueKey {
    async fn new() -> Option<Self> {
        use echorelay::core::keys::{LifecyclePolicy, MintRequest};
        use echorelay::pg::{PgOptions, PgStore};
        use sqlx::Connection;

        let db = echorelay::pg::test_database().await?;
        let schema = format!("er_mnt_{}", &UserId::random().to_string()[4..16]);
        let mut admin = sqlx::PgConnection::connect(db.url()).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let sep = if db.url().contains('?') { '&' } else { '?' };
        let url = format!("{}{sep}options[search_path]={schema}", db.url());
        let store = PgStore::connect_with(PgOptions::new(&url).migrate(true))
            .await
            .unwrap();
        let relay = EchoRelay::builder()
            .store(store)
            .keyring(Keyring::parse(VAULT_KEY, &[]).unwrap())
            .account_policy(echorelay_testkit::test_account_policy())
            .build()
            .unwrap();
        let owner = UserId::random();
        relay
            .config()
            .create_project(owner, None, "ops", "Ops")
            .await
            .unwrap();
        let caller = Caller::dangerous_user_stepped_up(owner, None);
        let grant = relay
            .voter()
            .authorize::<Keys>(&caller, "ops")
            .await
            .unwrap();
        // Due at mint + cadence - overlap: one second.
        let policy = LifecyclePolicy::new(
            chrono::Duration::hours(1),
            chrono::Duration::hours(1) - chrono::Duration::seconds(1),
            chrono::Duration::minutes(10),
        )
        .unwrap();
        relay.config().set_key_policy(&grant, policy).await.unwrap();
        let minted = relay
            .keys()
            .mint(
                &grant,
                MintRequest {
                    environment: Environment::Live,
                    role: Role::Viewer,
                    label: "due soon".into(),
                },
            )
            .await
            .unwrap();
        Some(DueKey {
            url,
            schema,
            admin,
            relay,
            grant,
            key: minted.plaintext.expose_secret().to_owned(),
            id: minted.view.id,
        })
    }

    fn env(&self) -> [(&str, &str); 2] {
        [
            ("DATABASE_URL", self.url.as_str()),
            ("SECRET_KEY", VAULT_KEY),
        ]
    }

    /// The successors the key has.
    async fn successors(&self) -> usize {
        let keys = self
            .relay
            .keys()
            .list_page(&self.grant, None, 500)
            .await
            .unwrap();
        keys.iter()
            .filter(|k| k.predecessor == Some(self.id))
            .count()
    }

    /// How many keys of the project are a successor of another.
    async fn rotated_keys(&self) -> usize {
        let keys = self
            .relay
            .keys()
            .list_page(&self.grant, None, 500)
            .await
            .unwrap();
        keys.iter().filter(|k| k.predecessor.is_some()).count()
    }

    async fn drop_schema(mut self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&mut self.admin)
            .await
            .unwrap();
    }
}

/// The key's answer on `/v1/projects/ops/lines`: status and headers.
#[cfg(feature = "pg")]
async fn lines_with(addr: SocketAddr, key: &str) -> (StatusCode, axum::http::HeaderMap) {
    use http_body_util::BodyExt;
    let (mut sender, _task) = client(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
    let req = axum::http::Request::get("/v1/projects/ops/lines")
        .header(header::HOST, "localhost")
        .header(header::AUTHORIZATION, format!("Bearer {key}"))
        .body(http_body_util::Full::new(axum::body::Bytes::new()))
        .unwrap();
    sender.ready().await.unwrap();
    let res = sender.send_request(req).await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    res.into_body().collect().await.unwrap();
    (status, headers)
}

/// The server's scheduled maintenance rotates a key once its rotation is
/// due, with nobody calling anything: the key's next answer carries
/// `Deprecation` and `Sunset`, and it has exactly one successor.
#[cfg(feature = "pg")]
#[tokio::test]
async fn serve_rotates_a_due_key_on_its_maintenance_schedule() {
    let Some(due) = DueKey::new().await else {
        return;
    };
    let server = serve(&["--maintenance-interval-secs", "1"], &due.env(), None);
    let start = tokio::time::Instant::now();
    let headers = loop {
        let (status, headers) = lines_with(server.addr, &due.key).await;
        assert_eq!(status, StatusCode::OK, "the key works throughout");
        if headers.contains_key("deprecation") {
            break headers;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "never rotated: {}",
            server.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(headers.contains_key("sunset"), "{headers:?}");
    assert_eq!(due.successors().await, 1);
    assert!(server.logged("rotated=1"), "{}", server.log.lock().unwrap());
    drop(server);
    due.drop_schema().await;
}

/// `maintain` runs one pass and prints it: a due key gets one successor;
/// three passes at once on the same database still make one, and a later
/// pass does not make another.
#[cfg(feature = "pg")]
#[tokio::test]
async fn maintain_rotates_a_due_key_once_and_prints_the_report() {
    let Some(due) = DueKey::new().await else {
        return;
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let maintain = || {
        Command::new(BIN)
            .arg("maintain")
            .envs(due.env())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let rotated_by = |out: &std::process::Output| -> usize {
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .find(|l| l.starts_with("rotation: "))
            .unwrap_or_else(|| panic!("{text}{}", String::from_utf8_lossy(&out.stderr)));
        assert!(line.ends_with(", 0 errors"), "{line}");
        assert!(text.lines().any(|l| l.starts_with("purge: ")), "{text}");
        assert!(out.status.success(), "{text}");
        line["rotation: ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let at_once: Vec<_> = (0..3).map(|_| maintain()).collect();
    let rotated: usize = at_once
        .into_iter()
        .map(|c| rotated_by(&c.wait_with_output().unwrap()))
        .sum();
    // The key got one successor whoever won. A pass that started more
    // than a second late (a loaded machine) may also find that successor
    // due under the one-second policy and rotate it: another key. So every
    // rotation the reports count is one key with a predecessor, and the
    // due key has exactly one.
    assert_eq!(due.successors().await, 1, "three passes at once");
    assert_eq!(
        rotated,
        due.rotated_keys().await,
        "the reports counted {rotated} rotations"
    );
    // Later passes never rotate it again (its successor, under the same
    // one-second policy, may be due by then: that is another key).
    let again = maintain().wait_with_output().unwrap();
    rotated_by(&again);
    assert_eq!(due.successors().await, 1);
    due.drop_schema().await;
}

/// `maintain --delivery-log-days N` deletes the delivery log's messages
/// older than N days (their deliveries with them) and says so; the
/// default keeps 30 days.
#[cfg(feature = "pg")]
#[tokio::test]
async fn maintain_purges_the_delivery_log_by_its_days_flag() {
    use echorelay::core::deliveries::{DeliveryRecord, DeliveryState, MessageRecord};
    use echorelay::core::ids::{EndpointId, MessageId, ProjectId, TargetId};
    use echorelay::core::ports::DeliveryLog;
    let Some(due) = DueKey::new().await else {
        return;
    };
    let project = ProjectId::random();
    let now = chrono::Utc::now();
    let mut ids = Vec::new();
    for age in [
        chrono::Duration::days(40),
        chrono::Duration::days(2),
        chrono::Duration::hours(1),
    ] {
        let m = MessageRecord {
            id: MessageId::random(),
            project,
            endpoint: EndpointId::random(),
            received_at: now - age,
            content_type: None,
            size: 1,
        };
        let d = DeliveryRecord {
            message: m.id,
            project,
            target: TargetId::random(),
            state: DeliveryState::Dead,
            attempts: 0,
            job: None,
            updated_at: m.received_at,
            next_attempt_at: None,
            last_status: None,
            last_class: None,
        };
        ids.push(m.id);
        due.relay.store().record_message(m, vec![d]).await.unwrap();
    }
    let maintain = |extra: &[&str]| {
        let out = Command::new(BIN)
            .arg("maintain")
            .args(extra)
            .envs(due.env())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let left = || async {
        let mut n = Vec::new();
        for id in &ids {
            n.push(
                due.relay
                    .store()
                    .message(project, *id)
                    .await
                    .unwrap()
                    .is_some(),
            );
        }
        n
    };
    let text = maintain(&[]);
    assert!(
        text.contains("delivery log: 1 messages older than 30 days removed"),
        "{text}"
    );
    assert_eq!(left().await, [false, true, true]);
    let text = maintain(&["--delivery-log-days", "1"]);
    assert!(
        text.contains("delivery log: 1 messages older than 1 days removed"),
        "{text}"
    );
    assert_eq!(left().await, [false, false, true]);
    let text = maintain(&["--delivery-log-days", "0"]);
    assert!(
        text.contains("delivery log: 1 messages older than 0 days removed"),
        "{text}"
    );
    assert_eq!(left().await, [false, false, false]);
    due.drop_schema().await;
}
