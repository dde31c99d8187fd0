//! A tour of echorelay: API keys, the vault, roles, accounts and the audit
//! log.
//!
//! On the in-memory default, with no services and no variables:
//!
//! ```sh
//! cargo run --example quickstart
//! ```
//!
//! The same tour on Postgres (it creates its own project and account, with
//! a random suffix, so it can run again on the same database):
//!
//! ```sh
//! DATABASE_URL=postgres://root@127.0.0.1:5432/test ECHORELAY_MIGRATE=1 \
//!   SECRET_KEY=$(openssl rand -hex 32) cargo run --example quickstart --features pg
//! ```
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use chrono::Duration;
use echorelay::core::account::totp::{self, TotpParams, TotpSeed};
use echorelay::core::audit::{ChainVerifier, MAX_PAGE};
use echorelay::core::clock::ManualClock;
use echorelay::prelude::*;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    // Errors as their messages (a missing SECRET_KEY, a schema that is
    // behind: each says what to do), not as `Debug`.
    match tour().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn tour() -> Result<(), Box<dyn std::error::Error>> {
    // --- Wiring ---------------------------------------------------------
    // A deployment needs one line:
    //
    //     let relay = EchoRelay::from_env().await?;
    //
    // DATABASE_URL picks the store (unset: in memory), SECRET_KEY the
    // vault key (in memory it may be left out: a generated key then dies
    // with the process). The tour reads the same variables but moves time
    // by hand and hashes passwords at bcrypt cost 10 instead of 13 (~0.5 s
    // per hash), so it swaps those two parts on the builder.
    let clock = ManualClock::new(SystemClock.now());
    let relay = EchoRelayBuilder::from_env()
        .await?
        .clock(Arc::new(clock.clone()))
        .account_policy(AccountPolicy {
            password: PasswordPolicy::new(10)?,
            ..AccountPolicy::default()
        })
        .build()?;
    println!("== store: {}\n", relay.store_type());
    let (keys, config, voter, accounts) = (
        relay.keys(),
        relay.config(),
        relay.voter(),
        relay.accounts(),
    );
    // Unique per run, so a database can hold many tours.
    let run = &UserId::random().to_string()[4..12];
    let slug = format!("acme-{run}");

    let alice = UserId::random();
    let ip = Some("203.0.113.10".parse().unwrap());
    // In an application the caller comes from the session cookie:
    // `accounts.authenticate(cookie, ip).await?.caller(ip)`, which carries
    // whether alice re-proved a credential recently (step-up). Here alice
    // just signed in, so we say so.
    let me = Caller::dangerous_user_stepped_up(alice, ip);
    let project = config.create_project(alice, ip, &slug, "Acme Inc.").await?;
    println!(
        "== project {} ({}) created; alice is its owner\n",
        project.slug, project.id
    );

    // --- API keys -------------------------------------------------------
    println!("== API keys");
    let grant = voter.authorize::<Keys>(&me, &slug).await?;
    let minted = keys
        .mint(
            &grant,
            MintRequest {
                environment: Environment::Live,
                role: Role::Editor,
                label: "ci".into(),
            },
        )
        .await?;
    println!(
        "minted     {}   <- shown once; only its SHA-256 is stored",
        minted.plaintext.expose_secret()
    );
    println!("listed as  {}", minted.view.hint);
    let v = keys.verify(minted.plaintext.expose_secret()).await?;
    println!(
        "verify     ok: project {}, role {}, phase {:?}",
        v.project(),
        v.role(),
        v.phase()
    );

    let mut typo = minted.plaintext.expose_secret().as_bytes().to_vec();
    typo[12] = if typo[12] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();
    println!(
        "typo       {:?} (rejected by the checksum, no store access)",
        echorelay::core::keys::parse_key(&typo).err()
    );

    let successor = keys
        .rotate(
            &grant,
            minted.view.id,
            RotateOptions {
                overlap: Some(Duration::hours(1)),
                grace: Some(Duration::hours(24)),
            },
        )
        .await?;
    println!(
        "rotate     successor {} with a 1 h overlap",
        successor.view.hint
    );
    println!(
        "old key    {:?}",
        keys.verify(minted.plaintext.expose_secret()).await?.phase()
    );
    println!(
        "new key    {:?}",
        keys.verify(successor.plaintext.expose_secret())
            .await?
            .phase()
    );
    clock.advance(Duration::hours(2));
    println!(
        "+2 h old   {:?}",
        keys.verify(minted.plaintext.expose_secret()).await?.phase()
    );
    keys.revoke(&grant, successor.view.id).await?;
    println!("revoke     successor revoked");
    println!(
        "new key    {}",
        match keys.verify(successor.plaintext.expose_secret()).await {
            Ok(_) => "accepted (BUG)".to_string(),
            Err(e) => format!("rejected: {e}"),
        }
    );

    // --- Outbound secrets: sealed at rest, masked on read ----------------
    println!("\n== targets and secrets");
    let w = voter.authorize::<ConfigWrite>(&me, &slug).await?;
    let line = config.create_line(&w, "orders").await?;
    config.create_endpoint(&w, line.id, "shopify").await?;
    let target = NewTarget {
        name: "fulfilment".into(),
        url: "https://fulfilment.example.com/hooks".into(),
        auth: AuthInput::Bearer(SecretString::from("tok_live_9f8e7d6c5b4a3f2e1d0c")),
        signing_secret: None,
    };
    let created = config.create_target(&w, line.id, target).await?;
    let r = voter.authorize::<ConfigRead>(&me, &slug).await?;
    let read = config.target(&r, created.view.id).await?;
    if let AuthView::Bearer { token } = &read.auth {
        println!("bearer token read back as {token}");
    }
    println!("signing secret read back as {}", read.signing_secret);
    let export = config.export(&r).await?;
    println!(
        "stored form of the token: {}",
        export
            .lines()
            .find(|l| l.contains("\"token\""))
            .unwrap_or("")
            .trim()
    );

    // --- Roles ----------------------------------------------------------
    println!("\n== who may do what in {slug}");
    let m = voter.authorize::<Members>(&me, &slug).await?;
    let (bob, carol, mallory) = (UserId::random(), UserId::random(), UserId::random());
    config.set_member(&m, bob, Some(Role::Editor)).await?;
    config.set_member(&m, carol, Some(Role::Viewer)).await?;
    println!(
        "{:<22} {:>12} {:>13} {:>5} {:>8} {:>8} {:>11} {:>9}",
        "caller",
        "config read",
        "config write",
        "keys",
        "billing",
        "members",
        "audit read",
        "delivery"
    );
    for (name, user) in [
        ("alice (owner)", alice),
        ("bob (editor)", bob),
        ("carol (viewer)", carol),
        ("mallory (not member)", mallory),
    ] {
        let mut row = format!("{name:<22}");
        for (s, width) in Surface::ALL.iter().zip([13, 14, 6, 9, 9, 12, 10]) {
            let d = voter.decide(&Caller::user(user, None), &slug, *s).await?;
            let cell = if matches!(d, Decision::Allow { .. }) {
                "allow"
            } else {
                "deny"
            };
            row.push_str(&format!("{cell:>width$}"));
        }
        println!("{row}");
    }

    // --- Accounts: password + mandatory TOTP ------------------------------
    println!("\n== accounts: enrollment, then a login with TOTP");
    let pw = || SecretString::from("correct horse battery staple");
    let email = format!("dana-{run}@example.com");
    let dana = accounts.register(&email, pw(), ip).await?;
    println!("registered {email} ({dana})");
    let laptop: std::net::IpAddr = "198.51.100.7".parse().unwrap();
    let PasswordStep::EnrollmentRequired(ch) =
        accounts.login_password(&email, pw(), laptop, None).await?
    else {
        unreachable!("a new account must enroll")
    };
    println!("password ok -> enrollment required (no session without a second factor)");
    let offer = accounts
        .begin_enrollment(ch.token.expose_secret(), laptop)
        .await?;
    let uri = offer.otpauth_uri.expose_secret();
    println!(
        "scan: {}secret=••••&… (QR code: {} bytes of SVG)",
        &uri[..uri.find("secret=").unwrap_or(0)],
        offer.qr_svg.len()
    );
    // The authenticator app's side: it holds the seed and shows codes.
    let app = TotpSeed::from_base32(offer.secret_base32.expose_secret()).unwrap();
    let code_now = |clock: &ManualClock| {
        let p = TotpParams::default();
        let step = totp::step_at(&p, clock.now().timestamp() as u64);
        SecretString::from(totp::code_for_step(&app, &p, step).unwrap().as_str())
    };
    let enrolled = accounts
        .confirm_enrollment(ch.token.expose_secret(), &code_now(&clock), laptop, false)
        .await?;
    println!(
        "enrolled; {} backup codes shown once, e.g. {}",
        enrolled.backup_codes.len(),
        enrolled.backup_codes[0].expose_secret()
    );
    clock.advance(Duration::seconds(30));
    let PasswordStep::SecondFactorRequired(ch) =
        accounts.login_password(&email, pw(), laptop, None).await?
    else {
        unreachable!("TOTP is active now")
    };
    let login = accounts
        .login_second_factor(
            ch.token.expose_secret(),
            SecondFactor::Totp(code_now(&clock)),
            laptop,
            true,
        )
        .await?;
    println!(
        "login with password + TOTP -> session {} (trusted device {:?})",
        login.session.id,
        login.device.as_ref().map(|d| d.id)
    );
    let me_again = accounts
        .authenticate(login.session.token.expose_secret(), laptop)
        .await?;
    println!(
        "session cookie ok for {} pinned to {:?}",
        me_again.user, me_again.ip_family
    );
    let v6: std::net::IpAddr = "2001:db8::7".parse().unwrap();
    println!(
        "same cookie from IPv6: {}",
        match accounts
            .authenticate(login.session.token.expose_secret(), v6)
            .await
        {
            Ok(_) => "accepted (BUG)".to_string(),
            Err(e) => format!("{e} (session ended)"),
        }
    );

    // --- Audit log ------------------------------------------------------
    println!("\n== audit log of {slug}");
    let a = voter.authorize::<AuditRead>(&me, &slug).await?;
    let events = relay.audit().events(&a, 0, 100).await?;
    for e in &events {
        let what = match &e.kind {
            EventKind::Config { entity, op, .. } => format!("config {entity:?} {op:?}"),
            EventKind::Key { action, key_id, .. } => format!("key {action:?} {key_id}"),
            EventKind::Billing {
                billing,
                amount_minor,
                currency,
                ..
            } => format!("billing {billing:?} {amount_minor} {}", currency.as_str()),
            EventKind::Membership { user, role } => format!("member {user} -> {role:?}"),
            EventKind::Account { action, failure } => format!("account {action:?} {failure:?}"),
            EventKind::Rewrap { sealed, id } => format!("rewrap {sealed:?} {id}"),
            other => format!("{other:?}"),
        };
        println!(
            "#{:<2} {} {:?} from {:?}: {what}",
            e.seq,
            e.at.format("%H:%M:%S"),
            e.actor,
            e.ip
        );
    }
    match relay.audit().verify(&a, None).await {
        Ok(status) => println!(
            "chain verified: {} events, head {:?}",
            status.events,
            status.head.map(|h| h.hash)
        ),
        Err(e) => println!("chain BROKEN: {e}"),
    }

    // Account events live in the global chain (no project), read from the
    // store page by page; it holds every account, so print only dana's.
    println!("\n== dana's account events (global chain)");
    let mut chain = ChainVerifier::new(None, None);
    let (mut after, mut total) = (0, 0);
    loop {
        let page = relay.store().events(None, after, MAX_PAGE).await?;
        for e in &page {
            chain.push(e)?;
            total += 1;
            if e.subject != Some(dana) {
                continue;
            }
            if let EventKind::Account { action, failure } = &e.kind {
                println!(
                    "#{:<2} {} from {:?}: {action:?} {}",
                    e.seq,
                    e.at.format("%H:%M:%S"),
                    e.ip,
                    failure.map(|f| format!("({f:?})")).unwrap_or_default()
                );
            }
        }
        match page.last() {
            Some(last) if page.len() == MAX_PAGE => after = last.seq,
            _ => break,
        }
    }
    chain.finish()?;
    println!("chain verified: {total} events");
    Ok(())
}
