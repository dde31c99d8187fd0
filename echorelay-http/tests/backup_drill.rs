//! The restore drill (issue 18): RUNBOOK.md followed end to end with the
//! operator's binary, on Postgres and the S3 server of `ECHORELAY_S3_URL`
//! (feature `backup`). A database filled through the library (three
//! accounts with TOTP, each owning a project with lines, endpoints,
//! targets with sealed secrets and API keys, and over a thousand audit
//! events) is backed up, listed and verified (sections 1 and 2); the
//! database is dropped and restored as section 3 says, command by command.
//! On the restored database every table holds what it held, every chain
//! verifies up to the head it had, every key verifies, every secret opens,
//! every account logs in with its password and a fresh TOTP code (the
//! code last used before the backup stays spent), and nothing the binary
//! printed holds a secret.
//!
//! Skips without `DATABASE_URL` or `ECHORELAY_S3_URL`, unless
//! `ECHORELAY_REQUIRE_SERVICES=1` (then it fails).
#![cfg(feature = "backup")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server_process;

use std::cell::RefCell;
use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use echorelay::core::account::totp::{TotpSeed, code_for_step, step_at};
use echorelay::core::backup::service::audit_heads;
use echorelay::core::clock::ManualClock;
use echorelay::core::ids::TargetId;
use echorelay::pg::{PgOptions, PgStore};
use echorelay::prelude::*;
use secrecy::ExposeSecret;
use server_process::{counts, run};
use sqlx::Connection;

const KEY: &str = "0c9f4b1d8e2a7c6f5b3e9d1a4c8f2e7b6a5d3c9e1f8b4a2d7c6e5f3b9a1d8c4e";

/// What a user knows and holds.
struct Account {
    email: String,
    password: String,
    ip: IpAddr,
    seed: TotpSeed,
    backup_codes: Vec<SecretString>,
    session: String,
}

/// A target and the secrets it was given.
struct SealedTarget {
    project: ProjectId,
    id: TargetId,
    auth: AuthInput,
    signing_secret: SecretString,
}

#[tokio::test]
async fn restore_drill_follows_the_runbook() {
    let Some(db) = echorelay::pg::test_database().await else {
        return;
    };
    let Some(s3) = echorelay::s3::test_s3().await else {
        return;
    };
    let started = Instant::now();
    let suffix = &UserId::random().to_string()[4..14];
    let name = format!("er_drill_{suffix}");
    let svc = format!("er_drill_svc_{suffix}");
    let mut admin = sqlx::PgConnection::connect(db.url()).await.unwrap();
    let base = db.url().split('?').next().unwrap();
    let base = &base[..base.rfind('/').unwrap()];
    let url = format!("{base}/{name}");
    let svc_url = {
        let (scheme, rest) = base.split_once("://").unwrap();
        let host = rest.split_once('@').map_or(rest, |(_, h)| h);
        format!("{scheme}://{svc}@{host}/{name}")
    };

    // RUNBOOK 0: the key pair (the identity stays with the operator, the
    // server gets the recipient), the target, SECRET_KEY.
    let dir = std::env::temp_dir().join(format!("er-drill-{suffix}"));
    std::fs::create_dir_all(&dir).unwrap();
    let (id_path, recipient) = server_process::age_identity(&dir, "backup-identity.txt");
    let id_path = id_path.as_str();
    let backup_url = format!("{}/drill-{suffix}", s3.url().trim_end_matches('/'));
    let env: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), url.clone()),
        ("SECRET_KEY".into(), KEY.into()),
        ("ECHORELAY_BACKUP_URL".into(), backup_url.clone()),
        ("ECHORELAY_BACKUP_RECIPIENTS".into(), recipient.clone()),
    ];
    // Every command must succeed; all they print is kept for the check
    // that no secret is in it.
    let printed = RefCell::new(String::new());
    let go = |args: &[&str]| -> String {
        let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = run(args, &pairs);
        printed
            .borrow_mut()
            .push_str(&format!("{}{}", r.out, r.err));
        assert!(r.ok, "echorelay-server {args:?}:\n{}{}", r.out, r.err);
        r.out
    };

    // The live deployment: a new database, migrated by the binary.
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(&format!("CREATE ROLE {svc} LOGIN"))
        .execute(&mut admin)
        .await
        .unwrap();
    go(&["migrate"]);

    // Filled through the library, on a test clock that stands still: the
    // TOTP steps used are known.
    let clock = ManualClock::new(chrono::Utc::now());
    let relay = EchoRelay::builder()
        .store(PgStore::connect_with(PgOptions::new(&url)).await.unwrap())
        .keyring(Keyring::parse(KEY, &[]).unwrap())
        .clock(Arc::new(clock.clone()))
        .account_policy(echorelay_testkit::test_account_policy())
        .build()
        .unwrap();
    let params = relay.accounts().policy().totp;
    let step_now = || step_at(&params, u64::try_from(clock.now().timestamp()).unwrap());
    let code = |seed: &TotpSeed, step: u64| {
        SecretString::from(code_for_step(seed, &params, step).unwrap().as_str())
    };

    let mut accounts = Vec::new();
    let mut projects = Vec::new();
    let mut minted = Vec::new();
    let mut targets = Vec::new();
    for i in 0..3u8 {
        // An account: registered, TOTP enrolled and active.
        let ip: IpAddr = format!("203.0.113.{}", 10 + i).parse().unwrap();
        let email = format!("drill{i}-{suffix}@example.com");
        let password = format!("tangerine lighthouse {suffix} gravel {i} orbit");
        relay
            .accounts()
            .register(&email, SecretString::from(password.as_str()), Some(ip))
            .await
            .unwrap();
        let PasswordStep::EnrollmentRequired(ch) = relay
            .accounts()
            .login_password(&email, SecretString::from(password.as_str()), ip, None)
            .await
            .unwrap()
        else {
            panic!("a new account enrolls first")
        };
        let offer = relay
            .accounts()
            .begin_enrollment(ch.token.expose_secret(), ip)
            .await
            .unwrap();
        let seed = TotpSeed::from_base32(offer.secret_base32.expose_secret()).unwrap();
        let enrolled = relay
            .accounts()
            .confirm_enrollment(
                ch.token.expose_secret(),
                &code(&seed, step_now()),
                ip,
                false,
            )
            .await
            .unwrap();
        let session = enrolled.login.session.token.expose_secret().to_owned();

        // Its project: lines with an endpoint, a bearer and a basic-auth
        // target each (sealed secrets), API keys minted in its session.
        let slug = format!("drill-{i}");
        let project = relay
            .config()
            .create_project(enrolled.login.session.user, Some(ip), &slug, "Drill")
            .await
            .unwrap();
        let caller = relay
            .accounts()
            .authenticate(&session, ip)
            .await
            .unwrap()
            .caller(Some(ip));
        let write = relay
            .voter()
            .authorize::<ConfigWrite>(&caller, &slug)
            .await
            .unwrap();
        let mut lines = Vec::new();
        for line_name in ["orders", "refunds", "payouts"] {
            let line = relay.config().create_line(&write, line_name).await.unwrap();
            relay
                .config()
                .create_endpoint(&write, line.id, "inbound")
                .await
                .unwrap();
            let bearer = SecretString::from(format!("bearer-{line_name}-{i}-{suffix}-Zq7x"));
            let created = relay
                .config()
                .create_target(
                    &write,
                    line.id,
                    NewTarget {
                        name: "shop".into(),
                        url: format!("https://shop{i}.example.com/{line_name}"),
                        auth: AuthInput::Bearer(bearer.clone()),
                        signing_secret: None,
                    },
                )
                .await
                .unwrap();
            targets.push(SealedTarget {
                project: project.id,
                id: created.view.id,
                auth: AuthInput::Bearer(bearer),
                signing_secret: created.signing_secret,
            });
            let basic = AuthInput::Basic {
                username: format!("relay{i}"),
                password: SecretString::from(format!("basic-{line_name}-{i}-{suffix}-p4ss")),
            };
            let signing = SecretString::from(format!("whsec_drill{i}{line_name}{suffix}"));
            let created = relay
                .config()
                .create_target(
                    &write,
                    line.id,
                    NewTarget {
                        name: "ledger".into(),
                        url: format!("https://ledger{i}.example.com/{line_name}"),
                        auth: basic.clone(),
                        signing_secret: Some(signing.clone()),
                    },
                )
                .await
                .unwrap();
            targets.push(SealedTarget {
                project: project.id,
                id: created.view.id,
                auth: basic,
                signing_secret: signing,
            });
            lines.push(line);
        }
        let keys = relay
            .voter()
            .authorize::<Keys>(&caller, &slug)
            .await
            .unwrap();
        for (role, environment) in [
            (Role::Viewer, Environment::Test),
            (Role::Editor, Environment::Live),
            (Role::Owner, Environment::Live),
        ] {
            let key = relay
                .keys()
                .mint(
                    &keys,
                    MintRequest {
                        environment,
                        role,
                        label: format!("drill {role:?}"),
                    },
                )
                .await
                .unwrap();
            minted.push(key);
        }
        // Further activity, to grow the chain: line renames.
        for round in 0..110 {
            for line in &lines {
                relay
                    .config()
                    .rename_line(&write, line.id, &format!("{}-{round}", line.name))
                    .await
                    .unwrap();
            }
        }
        projects.push(project);
        accounts.push(Account {
            email,
            password,
            ip,
            seed,
            backup_codes: enrolled.backup_codes,
            session,
        });
    }
    // A TOTP login of each account, one step after enrollment: the step
    // each account used last before the backup.
    clock.advance(chrono::Duration::seconds(30));
    let last_step = step_now();
    for a in &accounts {
        let PasswordStep::SecondFactorRequired(ch) = relay
            .accounts()
            .login_password(
                &a.email,
                SecretString::from(a.password.as_str()),
                a.ip,
                None,
            )
            .await
            .unwrap()
        else {
            panic!("an enrolled account is asked for its second factor")
        };
        relay
            .accounts()
            .login_second_factor(
                ch.token.expose_secret(),
                SecondFactor::Totp(code(&a.seed, last_step)),
                a.ip,
                false,
            )
            .await
            .unwrap();
    }

    // What the restore must bring back: every table's row count, every
    // chain's head (and its verification through the library).
    let before = counts(&url).await;
    let events = before.iter().find(|(t, _)| t == "audit_events").unwrap().1;
    assert!(events >= 1000, "{events} audit events");
    let heads = audit_heads(relay.store().as_ref()).await.unwrap();
    assert_eq!(heads.len(), 1 + projects.len(), "{heads:?}");
    let chains: Vec<Option<ProjectId>> = std::iter::once(None)
        .chain(projects.iter().map(|p| Some(p.id)))
        .collect();
    let mut statuses = Vec::new();
    for &chain in &chains {
        let status = relay.audit().verify_chain(chain, None).await.unwrap();
        assert!(
            status.keyed && status.head.is_some(),
            "{chain:?}: {status:?}"
        );
        statuses.push(status);
    }
    assert_eq!(
        statuses.iter().map(|s| s.events).sum::<u64>(),
        u64::try_from(events).unwrap()
    );

    // RUNBOOK 1 and 2: backup run, list, verify.
    let id = go(&["backup", "run"]).trim().to_owned();
    assert!(go(&["backup", "list"]).contains(&id));
    let verified = go(&["backup", "verify", "-i", id_path, &id]);
    assert!(
        verified.contains(&format!("{id}: verified 2 objects"))
            && verified.contains(&format!("{} audit chain heads", heads.len())),
        "{verified}"
    );

    // The incident: the database is lost.
    drop(relay);
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    let restore_started = Instant::now();

    // RUNBOOK 3.1: every process that writes is stopped (the relay above).
    // RUNBOOK 3.2: an empty database, made with createdb.
    let made = Command::new("createdb")
        .arg(format!("--maintenance-db={}", db.url()))
        .arg(&name)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // RUNBOOK 3.3: list, restore (with DATABASE_URL naming the empty
    // database: `backup list` does not open it).
    assert!(go(&["backup", "list"]).contains(&id));
    let restored = go(&["backup", "restore", "-i", id_path, &id]);
    assert!(restored.contains(&format!("restored {id}")), "{restored}");
    // RUNBOOK 3.4: migrate, with the service role's grants.
    let migrated = go(&["migrate", "--grant-to", &svc]);
    assert!(
        migrated.contains("up to date") && migrated.contains(&format!("{svc} may now run")),
        "{migrated}"
    );
    // RUNBOOK 3.5: the audit log, against itself and the backup's heads.
    let against = go(&["audit", "verify", "--against-backup", "-i", id_path]);
    assert!(
        against.contains(&format!(
            "against backup {id}: all {} chain heads it recorded are in the live chains",
            heads.len()
        )),
        "{against}"
    );
    let plain = go(&["audit", "verify"]);
    let names =
        std::iter::once("global".to_owned()).chain(projects.iter().map(|p| p.slug.to_string()));
    for (name, s) in names.zip(&statuses) {
        let line = format!("{name}: {} events, verified", s.events);
        assert!(plain.lines().any(|l| l == line), "{line}\n{plain}");
    }
    let restore_took = restore_started.elapsed();

    // Every table holds what it held.
    assert_eq!(counts(&url).await, before);

    // RUNBOOK 3.6: the service starts, as the service role, with the same
    // SECRET_KEY; its clock one TOTP step past the last one used.
    clock.advance(chrono::Duration::seconds(30));
    let relay = EchoRelay::builder()
        .store(
            PgStore::connect_with(PgOptions::new(&svc_url))
                .await
                .unwrap(),
        )
        .keyring(Keyring::parse(KEY, &[]).unwrap())
        .clock(Arc::new(clock.clone()))
        .account_policy(echorelay_testkit::test_account_policy())
        .build()
        .unwrap();
    // Every chain verifies and ends where it ended.
    assert_eq!(audit_heads(relay.store().as_ref()).await.unwrap(), heads);
    for (&chain, before) in chains.iter().zip(&statuses) {
        let status = relay
            .audit()
            .verify_chain(chain, before.head)
            .await
            .unwrap();
        assert_eq!(&status, before, "{chain:?}");
    }
    // Every key verifies; every sealed secret opens to what it was.
    for key in &minted {
        let verified = relay
            .keys()
            .verify(key.plaintext.expose_secret())
            .await
            .unwrap();
        assert_eq!(verified.key_id(), key.view.id);
    }
    for t in &targets {
        let grant = relay
            .voter()
            .dangerous_delivery_grant(t.project)
            .await
            .unwrap();
        let opened = relay.config().delivery_secrets(&grant, t.id).await.unwrap();
        assert_eq!(
            opened.signing_secret.expose_secret(),
            t.signing_secret.expose_secret()
        );
        match (&opened.auth, &t.auth) {
            (AuthInput::Bearer(a), AuthInput::Bearer(b)) => {
                assert_eq!(a.expose_secret(), b.expose_secret());
            }
            (
                AuthInput::Basic { username, password },
                AuthInput::Basic {
                    username: u,
                    password: p,
                },
            ) => {
                assert_eq!(username, u);
                assert_eq!(password.expose_secret(), p.expose_secret());
            }
            _ => panic!("target {} came back with another kind of auth", t.id),
        }
    }
    // Every account: its session was restored; the code it last used stays
    // spent; password + a fresh code logs in, and so does a backup code.
    for a in &accounts {
        relay
            .accounts()
            .authenticate(&a.session, a.ip)
            .await
            .unwrap();
        let challenge = || async {
            match relay
                .accounts()
                .login_password(
                    &a.email,
                    SecretString::from(a.password.as_str()),
                    a.ip,
                    None,
                )
                .await
                .unwrap()
            {
                PasswordStep::SecondFactorRequired(ch) => ch.token.expose_secret().to_owned(),
                other => panic!("expected a second-factor challenge, got {other:?}"),
            }
        };
        let replay = relay
            .accounts()
            .login_second_factor(
                &challenge().await,
                SecondFactor::Totp(code(&a.seed, last_step)),
                a.ip,
                false,
            )
            .await;
        assert!(replay.is_err(), "a TOTP step used before the backup");
        relay
            .accounts()
            .login_second_factor(
                &challenge().await,
                SecondFactor::Totp(code(&a.seed, step_now())),
                a.ip,
                false,
            )
            .await
            .unwrap();
        relay
            .accounts()
            .login_second_factor(
                &challenge().await,
                SecondFactor::BackupCode(a.backup_codes[0].clone()),
                a.ip,
                false,
            )
            .await
            .unwrap();
    }

    // Nothing the binary printed holds a secret.
    let printed = printed.into_inner();
    let mut secrets: Vec<String> = vec![KEY.into(), "AGE-SECRET-KEY".into()];
    for a in &accounts {
        secrets.push(a.password.clone());
        secrets.push(a.seed.to_base32().expose_secret().to_owned());
        secrets.extend(a.backup_codes.iter().map(|c| c.expose_secret().to_owned()));
        secrets.push(a.session.clone());
    }
    for k in &minted {
        secrets.push(k.plaintext.expose_secret().to_owned());
    }
    for t in &targets {
        secrets.push(t.signing_secret.expose_secret().to_owned());
        match &t.auth {
            AuthInput::Bearer(s) | AuthInput::Basic { password: s, .. } => {
                secrets.push(s.expose_secret().to_owned());
            }
            AuthInput::None => {}
        }
    }
    for s in &secrets {
        assert!(!printed.contains(s.as_str()), "the binary printed a secret");
    }
    eprintln!(
        "drill: {events} audit events in {} chains; restore (RUNBOOK 3.2 to 3.5) took {:.1} s; the whole drill {:.1} s",
        heads.len(),
        restore_took.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );

    // Clean up: the database, the role, the backup's objects, the identity.
    drop(relay);
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query(&format!("DROP ROLE {svc}"))
        .execute(&mut admin)
        .await
        .unwrap();
    let target = echorelay::s3::S3Target::from_url(&backup_url).unwrap();
    for o in target.list(None).await.unwrap() {
        target.delete(&o.path).await.unwrap();
    }
    assert!(target.list(None).await.unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
