//! Faults and bad data under the Redis session store (issue 20), on a
//! private `redis-server` this test starts on a free port (no
//! persistence), so it can be stopped and restarted:
//!
//! - Redis unreachable: `authenticate`, a password login and a
//!   second-factor step answer `Unavailable`, never a success and never an
//!   unthrottled attempt; when Redis is back the store serves again without
//!   a new connection being made by hand.
//! - A restart without persistence ends every session and challenge: the
//!   old cookie is refused, a new login works.
//! - A key overwritten by hand with the wrong type, a session hash with a
//!   malformed field, a throttle key of the wrong type: typed errors, never
//!   a session accepted or an attempt let through; `SCRIPT FLUSH`: the
//!   scripts are loaded again by themselves.
//! - A malformed URL or prefix: a typed setup error.
//!
//! Needs `redis-server` on the PATH (skips without it unless
//! `ECHORELAY_REQUIRE_SERVICES=1`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use echorelay_core::Error;
use echorelay_core::account::AttemptScope;
use echorelay_core::account::service::SecondFactor;
use echorelay_core::error::StoreError;
use echorelay_core::ports::{Composed, SessionStore, ThrottleStore};
use echorelay_store_mem::MemStore;
use echorelay_store_redis::sessions::ConnectError;
use echorelay_store_redis::{RedisOptions, RedisSessions, SessionTtl};
use echorelay_testkit::Harness;
use secrecy::SecretString;

/// A `redis-server` of this test's own, killed when dropped.
struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts one on a free port, or `None` (skip) without `redis-server`.
    fn start() -> Option<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = PrivateRedis { port, child: None };
        if !r.run() {
            let required = std::env::var("ECHORELAY_REQUIRE_SERVICES").is_ok_and(|v| v == "1");
            assert!(
                !required,
                "ECHORELAY_REQUIRE_SERVICES=1 but redis-server cannot start"
            );
            eprintln!("session_faults: redis-server not available; skipped");
            return None;
        }
        Some(r)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on the same port, without persistence, and
    /// waits until it answers.
    fn run(&mut self) -> bool {
        let Ok(child) = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            return false;
        };
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs a command by hand, as an operator (or an attacker with Redis
/// access) would.
async fn by_hand(conn: &mut redis::aio::MultiplexedConnection, cmd: &str, args: &[&str]) {
    let _: redis::Value = redis::cmd(cmd).arg(args).query_async(conn).await.unwrap();
}

fn ip() -> IpAddr {
    "198.51.100.40".parse().unwrap()
}

async fn sessions(url: &str) -> RedisSessions {
    RedisSessions::connect_with(
        RedisOptions::new(url)
            .prefix("faults")
            .response_timeout(Duration::from_secs(1))
            .connection_timeout(Duration::from_millis(500)),
        SessionTtl::default(),
    )
    .await
    .unwrap()
}

fn unavailable<T>(r: Result<T, Error>) -> bool {
    matches!(r, Err(Error::Unavailable))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_and_a_restart_ends_every_session() {
    let Some(mut redis) = PrivateRedis::start() else {
        return;
    };
    let hot = sessions(&redis.url()).await;
    let h = Harness::new(Composed::new(MemStore::new(), hot.clone(), hot));
    let a = h.enrolled(ip(), false).await;
    let cookie = a.login.session.token.expose_secret().to_owned();
    h.accounts.authenticate(&cookie, ip()).await.unwrap();
    // A second-factor challenge made before the outage.
    h.clock.advance(chrono::Duration::seconds(30));
    let PasswordStepChallenge(ch) = challenge(&h, &a.email).await;

    redis.kill();
    assert!(
        unavailable(h.accounts.authenticate(&cookie, ip()).await),
        "authenticate during an outage must be Unavailable"
    );
    let login = h
        .accounts
        .login_password(&a.email, SecretString::from(PASSWORD), ip(), None)
        .await;
    assert!(
        unavailable(login.map(|_| ())),
        "a password login during an outage"
    );
    let code = h.totp_code(&a.seed, 0);
    let step = h
        .accounts
        .login_second_factor(&ch, SecondFactor::Totp(code), ip(), false)
        .await;
    assert!(
        unavailable(step.map(|_| ())),
        "a second-factor step during an outage"
    );

    // Back, empty (no persistence): the connection recovers by itself;
    // the old session and challenge are gone, and nothing else is lost.
    assert!(redis.run());
    let start = Instant::now();
    let after = loop {
        match h.accounts.authenticate(&cookie, ip()).await {
            Err(Error::Unavailable) if start.elapsed() < Duration::from_secs(15) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other,
        }
    };
    assert!(
        matches!(after, Err(Error::Unauthenticated)),
        "after a restart without persistence the old session must be refused: {after:?}"
    );
    let code = h.totp_code(&a.seed, 0);
    assert!(matches!(
        h.accounts
            .login_second_factor(&ch, SecondFactor::Totp(code), ip(), false)
            .await,
        Err(Error::Unauthenticated)
    ));
    h.clock.advance(chrono::Duration::seconds(30));
    let again = h.totp_login(&a, ip(), false).await;
    h.accounts
        .authenticate(again.session.token.expose_secret(), ip())
        .await
        .unwrap();
}

const PASSWORD: &str = "correct horse battery staple";

struct PasswordStepChallenge(String);

async fn challenge(
    h: &Harness<Composed<MemStore, RedisSessions, RedisSessions>>,
    email: &str,
) -> PasswordStepChallenge {
    use echorelay_core::account::service::PasswordStep;
    match h
        .accounts
        .login_password(email, SecretString::from(PASSWORD), ip(), None)
        .await
        .unwrap()
    {
        PasswordStep::SecondFactorRequired(ch) => {
            PasswordStepChallenge(ch.token.expose_secret().to_owned())
        }
        _ => panic!("expected a second-factor challenge"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_in_redis_is_an_error_never_a_session_or_a_free_attempt() {
    let Some(redis) = PrivateRedis::start() else {
        return;
    };
    let url = redis.url();
    let store = sessions(&url).await;
    let h = Harness::new(Composed::new(MemStore::new(), store.clone(), store.clone()));
    let a = h.enrolled(ip(), false).await;
    let cookie = a.login.session.token.expose_secret().to_owned();
    let session = h.store.sessions_of(a.user).await.unwrap().remove(0);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{{faults}}:s:{}", hex::encode(session.id.as_bytes()));

    // SCRIPT FLUSH: the next call loads its script again.
    by_hand(&mut conn, "SCRIPT", &["FLUSH"]).await;
    h.accounts.authenticate(&cookie, ip()).await.unwrap();

    // A malformed field: Corrupt, and the session is refused.
    by_hand(&mut conn, "HSET", &[key.as_str(), "u", "zz"]).await;
    assert!(matches!(
        store.session_by_token(&session.token_hash).await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(h.accounts.authenticate(&cookie, ip()).await.is_err());
    // An unknown IP family, or a missing field: the same.
    let user_hex = hex::encode(a.user.as_bytes());
    by_hand(
        &mut conn,
        "HSET",
        &[key.as_str(), "u", &user_hex, "f", "v5"],
    )
    .await;
    assert!(matches!(
        store.session_by_token(&session.token_hash).await,
        Err(StoreError::Corrupt { .. })
    ));
    by_hand(&mut conn, "HDEL", &[key.as_str(), "f"]).await;
    assert!(h.accounts.authenticate(&cookie, ip()).await.is_err());

    // The session key overwritten with a string: Corrupt from every
    // method that reads it, nothing accepted.
    by_hand(&mut conn, "SET", &[key.as_str(), "x"]).await;
    assert!(matches!(
        store.session_by_token(&session.token_hash).await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(
        store
            .touch_session(session.id, h.clock_now())
            .await
            .is_err()
    );
    assert!(store.sessions_of(a.user).await.is_err());
    assert!(h.accounts.authenticate(&cookie, ip()).await.is_err());

    // A throttle key of the wrong type: the reservation fails, so the
    // attempt is refused, never let through unthrottled; the value is
    // left as it was (the script failed before writing).
    let scope = AttemptScope::SecondFactor(a.user);
    let tkey = format!("{{faults}}:t:{}", scope.key());
    by_hand(&mut conn, "SET", &[tkey.as_str(), "x"]).await;
    let now = h.clock_now();
    assert!(
        store
            .reserve_attempt(&scope, now, now - chrono::Duration::minutes(15), 5)
            .await
            .is_err()
    );
    let left: String = redis::cmd("GET")
        .arg(&tkey)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, "x");
    h.clock.advance(chrono::Duration::seconds(30));
    let ch = challenge(&h, &a.email).await.0;
    let code = h.totp_code(&a.seed, 0);
    assert!(
        h.accounts
            .login_second_factor(&ch, SecondFactor::Totp(code), ip(), false)
            .await
            .is_err()
    );
    // Another account is untouched by all of it.
    let other = h.enrolled(ip(), false).await;
    h.accounts
        .authenticate(other.login.session.token.expose_secret(), ip())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_malformed_url_or_prefix_is_a_typed_setup_error() {
    assert!(matches!(
        RedisSessions::connect("not a url").await,
        Err(ConnectError::Url)
    ));
    assert!(matches!(
        RedisSessions::connect_with(
            RedisOptions::new("redis://127.0.0.1:1").prefix("bad prefix{}"),
            SessionTtl::default()
        )
        .await,
        Err(ConnectError::Prefix)
    ));
    let err = RedisSessions::connect_with(
        RedisOptions::new("redis://:hunter2@127.0.0.1:1")
            .connection_timeout(Duration::from_millis(200)),
        SessionTtl::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ConnectError::Unreachable(_)));
    assert!(!err.to_string().contains("hunter2"), "{err}");
}
