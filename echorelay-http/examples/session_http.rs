//! The session benchmark's server (`scripts/bench_session_http.sh` drives
//! it with wrk, issue 20): registers an account, enrolls its TOTP factor
//! (the code computed from the seed, as an authenticator app would), and
//! serves the real router on a free loopback port. It prints the session
//! cookie and the URL of a cookie-authenticated GET, `GET /v1/me/sessions`
//! (the session checked through `AccountService::authenticate`, then the
//! account's sessions and trusted devices listed).
//!
//! The stores come from the environment, as `echorelay-server` takes them:
//! nothing set, everything in memory; `DATABASE_URL` + `REDIS_URL` (features
//! `pg`, `redis`, with `SECRET_KEY`), the durable ports on Postgres and
//! sessions, challenges and throttles on Redis. Passwords hash at bcrypt
//! cost 10 (setup speed only; no request of the benchmark hashes one).
//!
//! ```sh
//! cargo run --release -p echorelay-http --features pg,redis --example session_http
//! ```
#![allow(clippy::print_stdout)]

use std::net::{IpAddr, SocketAddr};

use echorelay::core::account::totp::{self, TotpSeed};
use echorelay::prelude::*;
use echorelay_http::{HttpConfig, cookies, router};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let relay = EchoRelayBuilder::from_env()
        .await?
        .account_policy(AccountPolicy {
            password: PasswordPolicy::new(10)?,
            ..AccountPolicy::default()
        })
        .build()?;
    let accounts = relay.accounts();
    // wrk connects from 127.0.0.1: the session's IP family.
    let ip: IpAddr = "127.0.0.1".parse()?;
    let email = format!("bench-{}@example.com", &UserId::random().to_string()[4..14]);
    let pw = || SecretString::from("correct horse battery staple");
    accounts.register(&email, pw(), Some(ip)).await?;
    let PasswordStep::EnrollmentRequired(ch) =
        accounts.login_password(&email, pw(), ip, None).await?
    else {
        return Err("a new account must enroll first".into());
    };
    let offer = accounts
        .begin_enrollment(ch.token.expose_secret(), ip)
        .await?;
    let seed = TotpSeed::from_base32(offer.secret_base32.expose_secret())
        .map_err(|_| "the offered seed does not parse")?;
    let params = accounts.policy().totp;
    let now = u64::try_from(SystemClock.now().timestamp())?;
    let code = totp::code_for_step(&seed, &params, totp::step_at(&params, now))
        .map_err(|_| "no code for the current step")?;
    let done = accounts
        .confirm_enrollment(
            ch.token.expose_secret(),
            &SecretString::from(code.as_str()),
            ip,
            false,
        )
        .await?;
    let cookie = done.login.session.token.expose_secret().to_owned();
    // The cookie works before the load starts.
    accounts.authenticate(&cookie, ip).await?;

    let app = router(relay.clone(), HttpConfig::local())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("cookie {}={cookie}", cookies::SESSION);
    println!("url http://{}/v1/me/sessions", listener.local_addr()?);
    println!(
        "store {} sessions {} throttles {}",
        relay.store_type(),
        relay.sessions_type(),
        relay.throttles_type()
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await?;
    Ok(())
}
