//! `echorelay-server` as a process, for the tests that watch it from
//! outside: `serve` (running, its log collected) and one-shot commands.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

pub const BIN: &str = env!("CARGO_BIN_EXE_echorelay-server");

/// A running `serve`, killed when dropped; what it logged so far.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
    /// What it printed on stdout before it said where it listens.
    pub banner: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    pub fn logged(&self, what: &str) -> bool {
        self.log.lock().unwrap().contains(what)
    }

    /// How many lines of the log contain `what`.
    pub fn count(&self, what: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .lines()
            .filter(|l| l.contains(what))
            .count()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

/// `serve --listen 127.0.0.1:0 ARGS` (through `wrap`, a shell prefix, if
/// any), once it says where it listens. `DATABASE_URL`, `SECRET_KEY` and
/// `REDIS_URL` come from `env` only.
pub fn serve(args: &[&str], env: &[(&str, &str)], wrap: Option<&str>) -> Running {
    let mut c = match wrap {
        None => Command::new(BIN),
        Some(script) => {
            let mut c = Command::new("sh");
            c.args(["-c", &format!("{script}; exec \"$0\" \"$@\""), BIN]);
            c
        }
    };
    c.env_remove("DATABASE_URL")
        .env_remove("SECRET_KEY")
        .env_remove("REDIS_URL")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut banner = Vec::new();
    let addr = loop {
        let Some(Ok(line)) = stdout.next() else {
            let _ = child.wait();
            panic!("serve did not start: {}", log.lock().unwrap());
        };
        if let Some(rest) = line.strip_prefix("echorelay-server: listening on ") {
            let (_, rest) = rest.split_once("://").unwrap();
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
        banner.push(line);
    };
    // Keep draining stdout, so a later line never meets a closed pipe.
    std::thread::spawn(move || for _ in stdout {});
    Running {
        child,
        addr,
        log,
        banner,
    }
}

/// What a one-shot command did.
pub struct Run {
    pub ok: bool,
    pub out: String,
    pub err: String,
}

/// `echorelay-server ARGS` to completion, with `env` (and no
/// `DATABASE_URL` or `SECRET_KEY` unless `env` sets them).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(BIN);
    c.env_remove("DATABASE_URL")
        .env_remove("SECRET_KEY")
        .env_remove("REDIS_URL")
        .args(args)
        .envs(env.iter().copied());
    let o = c.output().unwrap();
    Run {
        ok: o.status.success(),
        out: String::from_utf8_lossy(&o.stdout).into_owned(),
        err: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[cfg(feature = "pg")]
/// A new, empty database on the test server at `server_url`, named
/// `er_{tag}_` and 10 random hex digits: its URL, its name, and a
/// connection to the server's own database (to drop it afterwards).
pub async fn scratch_database(server_url: &str, tag: &str) -> (String, String, sqlx::PgConnection) {
    use sqlx::Connection;
    let suffix = &echorelay::core::ids::UserId::random().to_string()[4..14];
    let name = format!("er_{tag}_{suffix}");
    let mut admin = sqlx::PgConnection::connect(server_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let base = server_url.split('?').next().unwrap();
    let url = format!("{}/{name}", &base[..base.rfind('/').unwrap()]);
    (url, name, admin)
}

#[cfg(feature = "pg")]
/// Counts of every table in `public`.
pub async fn counts(url: &str) -> Vec<(String, i64)> {
    use sqlx::Connection;
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

#[cfg(feature = "backup")]
/// A new age X25519 key pair: the identity written to `dir/NAME`, its
/// path and the recipient (`age1…`) returned.
pub fn age_identity(dir: &std::path::Path, name: &str) -> (String, String) {
    use secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let path = dir.join(name);
    std::fs::write(
        &path,
        format!("# test\n{}\n", identity.to_string().expose_secret()),
    )
    .unwrap();
    (
        path.to_str().unwrap().to_owned(),
        identity.to_public().to_string(),
    )
}
