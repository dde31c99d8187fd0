//! The authentication-overhead benchmark's server (`scripts/bench_http.sh`
//! drives it with wrk): one project with a line and a target, one viewer
//! key, and the same router served twice — on one port every request's
//! key is verified through core (the real router), on the other the key
//! is taken as verified once at start (`bench_router_preauthenticated`).
//! The difference between the two is what per-request authentication
//! costs. In memory by default; Postgres with `DATABASE_URL` (feature
//! `pg`, with `SECRET_KEY`).
//!
//! ```sh
//! cargo run --release -p echorelay-http --features bench --example auth_overhead
//! ```
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;

use echorelay::prelude::*;
use echorelay_http::{HttpConfig, bench_router_preauthenticated, router};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let relay = EchoRelay::from_env().await?;
    let owner = UserId::random();
    // A slug of its own, so runs against one database do not collide.
    let slug = format!("bench-{}", &owner.to_string()[4..12]);
    let config = relay.config();
    config
        .create_project(owner, None, &slug, "Benchmark")
        .await?;
    let caller = Caller::dangerous_user_stepped_up(owner, None);
    let write = relay
        .voter()
        .authorize::<ConfigWrite>(&caller, &slug)
        .await?;
    let line = config.create_line(&write, "orders").await?;
    config
        .create_target(
            &write,
            line.id,
            NewTarget {
                name: "shop".into(),
                url: "https://shop.example.com/hook".into(),
                auth: AuthInput::Bearer(SecretString::from("outbound-token-0123456789")),
                signing_secret: None,
            },
        )
        .await?;
    let keys = relay.voter().authorize::<Keys>(&caller, &slug).await?;
    let minted = relay
        .keys()
        .mint(
            &keys,
            MintRequest {
                environment: Environment::Test,
                role: Role::Viewer,
                label: "bench".into(),
            },
        )
        .await?;
    let key = minted.plaintext.expose_secret().to_owned();
    let verified = relay.keys().verify(&key).await?;
    let real = router(relay.clone(), HttpConfig::local())?;
    let pre = bench_router_preauthenticated(relay.clone(), HttpConfig::local(), verified)?;
    let a = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let b = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("key {key}");
    println!(
        "authenticated http://{}/v1/projects/{slug}/lines",
        a.local_addr()?
    );
    println!(
        "unauthenticated http://{}/v1/projects/{slug}/lines",
        b.local_addr()?
    );
    println!("store {}", relay.store_type());
    let serve_a = axum::serve(a, real.into_make_service_with_connect_info::<SocketAddr>());
    let serve_b = axum::serve(b, pre.into_make_service_with_connect_info::<SocketAddr>());
    tokio::try_join!(async { serve_a.await }, async { serve_b.await })?;
    Ok(())
}
