//! Sessions and throttles shared by separate `echorelay-server serve`
//! processes over one Postgres database and one Redis (issue 20, S15):
//!
//! - a session made through process A is ended by `logout-everywhere`
//!   through process B, and A's next request with it is 401;
//! - the second-factor limit holds for the sum of the failures made
//!   through both processes, not per process: after 3 failures through A
//!   and 2 through B (the limit is 5), the right code is refused through
//!   either.
//!
//! Needs Postgres and Redis (skips without them unless
//! `ECHORELAY_REQUIRE_SERVICES=1`).
#![cfg(all(feature = "pg", feature = "redis"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod server_process;

use axum::http::{Method, StatusCode};
use common::{Answer, Server, set_cookie};
use echorelay::core::account::totp::{TotpSeed, code_for_step, step_at};
use echorelay::prelude::*;
use serde_json::{Value, json};

const KEY: &str = "9b1d7f0e4c3a2b5d6e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d";
const PASSWORD: &str = "correct horse battery staple 2026";

/// A browser's cookies, sent to whichever process it talks to.
#[derive(Default)]
struct Cookies {
    session: Option<String>,
    csrf: Option<String>,
}

impl Cookies {
    async fn call(
        &mut self,
        to: &Server,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let mut c = to.connect().await;
        let cookie = self
            .session
            .iter()
            .map(|s| format!("__Host-er_session={s}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut extra: Vec<(&str, &str)> = Vec::new();
        if !cookie.is_empty() {
            extra.push(("cookie", &cookie));
        }
        if let Some(t) = &self.csrf {
            extra.push(("x-csrf-token", t));
        }
        let body = body.map(|b| ("application/json", serde_json::to_vec(&b).unwrap()));
        let a = c.send(method, path, None, &extra, body).await;
        if let Some(s) = set_cookie(&a, "__Host-er_session") {
            self.session = Some(s).filter(|s| !s.is_empty());
        }
        if let Some(t) = set_cookie(&a, "__Host-er_csrf") {
            self.csrf = Some(t).filter(|t| !t.is_empty());
        }
        a
    }
}

/// The code an authenticator shows now, `offset` steps on.
fn code(seed: &TotpSeed, offset: u64) -> String {
    let params = AccountPolicy::default().totp;
    let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap();
    code_for_step(seed, &params, step_at(&params, now) + offset)
        .unwrap()
        .to_string()
}

/// A wrong code: the right one's digits shifted.
fn wrong(seed: &TotpSeed) -> String {
    let right = code(seed, 0);
    right
        .chars()
        .map(|c| char::from(b'0' + (c as u8 - b'0' + 1) % 10))
        .collect()
}

/// Signs `email` in through `at` and enrolls TOTP; returns the seed.
async fn enroll(at: &Server, b: &mut Cookies, email: &str) -> TotpSeed {
    let challenge = password_step(at, b, email, "enrollment").await;
    let offer = b
        .call(
            at,
            Method::POST,
            "/v1/auth/enrollment",
            Some(json!({"challenge": challenge})),
        )
        .await;
    assert_eq!(offer.status, StatusCode::OK, "{}", offer.text());
    let seed = TotpSeed::from_base32(offer.json()["secret"].as_str().unwrap()).unwrap();
    let done = b
        .call(
            at,
            Method::POST,
            "/v1/auth/enrollment/confirm",
            Some(json!({"challenge": challenge, "code": code(&seed, 0)})),
        )
        .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
    assert!(b.session.is_some() && b.csrf.is_some());
    seed
}

/// A second-factor challenge for `email`, through `at`.
async fn challenge(at: &Server, email: &str) -> String {
    password_step(at, &mut Cookies::default(), email, "second_factor").await
}

/// The password step for `email` through `at`: the challenge of the
/// expected next `step`.
async fn password_step(at: &Server, b: &mut Cookies, email: &str, step: &str) -> String {
    let login = b
        .call(
            at,
            Method::POST,
            "/v1/auth/login",
            Some(json!({"email": email, "password": PASSWORD})),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    assert_eq!(login.json()["step"], step, "{}", login.text());
    login.json()["challenge"].as_str().unwrap().to_owned()
}

async fn second_factor(at: &Server, email: &str, code: String) -> StatusCode {
    let ch = challenge(at, email).await;
    Cookies::default()
        .call(
            at,
            Method::POST,
            "/v1/auth/second-factor",
            Some(json!({"challenge": ch, "code": code})),
        )
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_throttles_are_shared_by_every_process() {
    let Some(db) = echorelay::pg::test_database().await else {
        return;
    };
    let Some(redis) = echorelay::redis::test_redis().await else {
        return;
    };
    // A database of its own, migrated by the binary.
    let (url, name, mut admin) = server_process::scratch_database(db.url(), "sessions").await;
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("SECRET_KEY", KEY),
        ("REDIS_URL", redis.url()),
    ];
    let m = server_process::run(&["migrate"], &env);
    assert!(m.ok, "{}{}", m.out, m.err);
    let relay = EchoRelayBuilder::from_env_vars(|n| {
        env.iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| (*v).to_owned())
    })
    .await
    .unwrap()
    .build()
    .unwrap();
    let ip = "192.0.2.30".parse().unwrap();
    let suffix = &UserId::random().to_string()[4..14];
    let (kim, lee) = (
        format!("kim-{suffix}@example.com"),
        format!("lee-{suffix}@example.com"),
    );
    for email in [&kim, &lee] {
        relay
            .accounts()
            .register(email, secrecy::SecretString::from(PASSWORD), Some(ip))
            .await
            .unwrap();
    }

    // Two processes, alive until the end of the test.
    let (pa, pb) = (
        server_process::serve(&[], &env, None),
        server_process::serve(&[], &env, None),
    );
    let (a, b) = (Server { addr: pa.addr }, Server { addr: pb.addr });

    // A session made through A works through B, and logging out
    // everywhere through B ends it in A.
    let mut browser = Cookies::default();
    let kim_seed = enroll(&a, &mut browser, &kim).await;
    for at in [&a, &b] {
        let me = browser.call(at, Method::GET, "/v1/me/sessions", None).await;
        assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    }
    let out = browser
        .call(
            &b,
            Method::POST,
            "/v1/auth/logout-everywhere",
            Some(json!({})),
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.text());
    let session = browser.session.clone();
    let mut stale = Cookies {
        session,
        csrf: browser.csrf.clone(),
    };
    let after = stale.call(&a, Method::GET, "/v1/me/sessions", None).await;
    assert_eq!(
        after.status,
        StatusCode::UNAUTHORIZED,
        "A still knew the session"
    );
    // Kim can sign in again through A: nothing else was lost. (The next
    // step's code: the enrollment used this step's, and a code is accepted
    // once.)
    assert_eq!(
        second_factor(&a, &kim, code(&kim_seed, 1)).await,
        StatusCode::OK
    );

    // The second-factor limit (5 per window) counts failures made through
    // both processes together.
    let mut lee_browser = Cookies::default();
    let lee_seed = enroll(&b, &mut lee_browser, &lee).await;
    let limit = AccountPolicy::default().max_second_factor_failures;
    assert_eq!(limit, 5);
    for at in [&a, &a, &a, &b, &b] {
        assert_eq!(
            second_factor(at, &lee, wrong(&lee_seed)).await,
            StatusCode::UNAUTHORIZED
        );
    }
    // Through A, which saw only 3 of the 5 failures, the right code (the
    // next step's, which Kim's sign-in above shows is accepted) is refused:
    // the limit is shared.
    assert_eq!(
        second_factor(&a, &lee, code(&lee_seed, 1)).await,
        StatusCode::UNAUTHORIZED,
        "a process counted only its own failures"
    );
    assert_eq!(
        second_factor(&b, &lee, code(&lee_seed, 1)).await,
        StatusCode::UNAUTHORIZED
    );
    drop((pa, pb));
    drop(relay);
    let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await;
}
