//! `echorelay-server`: the operator's binary. `--help` on every
//! subcommand. The store comes from the environment (`EchoRelay::from_env`):
//! in memory without `DATABASE_URL`, Postgres with it (build with feature
//! `pg`); `SECRET_KEY` (and `SECRET_KEY_PREVIOUS` during a rotation) is the
//! vault key.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use echorelay::core::audit::ChainVerifier;
use echorelay::core::rewrap::RewrapCursor;
use echorelay::prelude::*;
use echorelay_http::client::ProxyConfig;
use echorelay_http::{HttpConfig, router};

#[derive(Parser)]
#[command(
    name = "echorelay-server",
    version,
    about = "The echorelay HTTP API and its operator tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API.
    Serve(Serve),
    /// Apply pending Postgres migrations (DATABASE_URL), then exit.
    Migrate,
    /// Print a new SECRET_KEY (32 random bytes, hex).
    Keygen,
    /// Seal every stored secret again under the current SECRET_KEY (after
    /// a rotation; SECRET_KEY_PREVIOUS holds the old key), with progress.
    Rewrap {
        /// Records per page.
        #[arg(long, default_value_t = 500)]
        page: usize,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Create an account that owns a new project: enrolls TOTP in the
    /// terminal (QR code), prints its backup codes and a first owner API
    /// key, once. The password is read from ECHORELAY_OWNER_PASSWORD or
    /// standard input.
    CreateOwner {
        /// The owner's email.
        #[arg(long)]
        email: String,
        /// The project's slug.
        #[arg(long)]
        project: String,
        /// The project's display name (defaults to the slug).
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify every chain (the global one and each project's); names the
    /// first broken link and exits non-zero on one.
    Verify,
}

#[derive(Args)]
struct Serve {
    /// Address to listen on. Plain HTTP is refused on anything but
    /// loopback unless a trusted proxy terminates TLS (--trust-proxy).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// A proxy range (CIDR) whose forwarding headers are believed; repeat
    /// for several. TLS is then required (X-Forwarded-Proto: https).
    #[arg(long = "trust-proxy")]
    trust_proxy: Vec<ipnet::IpNet>,
    /// The header trusted proxies name the client in.
    #[arg(long, default_value = "x-forwarded-for")]
    client_ip_header: String,
    /// Terminate TLS here (PEM certificate chain); with --tls-key. TLS is
    /// then required, and HSTS sent.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The certificate's PEM private key.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Publish this security.txt (RFC 9116 `Field: value` lines) at
    /// /.well-known/security.txt; refused at start when it has expired or
    /// expires more than a year ahead.
    #[arg(long)]
    security_txt: Option<std::path::PathBuf>,
    /// In memory only: create a demo owner, a project `demo` and an owner
    /// API key at start, and print the key (for trying the API with curl).
    #[arg(long)]
    demo: bool,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let result = match cli.command {
        Command::Serve(s) => serve(s).await,
        Command::Migrate => migrate().await,
        Command::Keygen => keygen(),
        Command::Rewrap { page } => rewrap(page).await,
        Command::Audit {
            command: AuditCommand::Verify,
        } => audit_verify().await,
        Command::CreateOwner {
            email,
            project,
            name,
        } => create_owner(&email, &project, name.as_deref().unwrap_or(&project)).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("echorelay-server: {e}");
            ExitCode::FAILURE
        }
    }
}

type Outcome = Result<ExitCode, Box<dyn std::error::Error>>;

async fn serve(s: Serve) -> Outcome {
    let relay = EchoRelay::from_env().await?;
    let loopback = s.listen.ip().is_loopback();
    let proxies = if s.trust_proxy.is_empty() {
        ProxyConfig::none()
    } else {
        ProxyConfig::trusting(s.trust_proxy.clone(), s.client_ip_header.parse()?)
    };
    let tls = match (&s.tls_cert, &s.tls_key) {
        (Some(cert), Some(key)) => Some(echorelay_http::tls::config_from_pem(
            &std::fs::read(cert)?,
            &std::fs::read(key)?,
        )?),
        _ => None,
    };
    if !loopback && s.trust_proxy.is_empty() && tls.is_none() {
        return Err("plain HTTP is for loopback only: listen on 127.0.0.1 or ::1, terminate TLS here (--tls-cert, --tls-key), or put a TLS-terminating proxy in front (--trust-proxy)".into());
    }
    let config = HttpConfig {
        proxies,
        require_tls: !s.trust_proxy.is_empty() || tls.is_some(),
        security_txt: match &s.security_txt {
            Some(path) => Some(echorelay_http::security_txt::SecurityTxt::parse(
                &std::fs::read_to_string(path)?,
            )?),
            None => None,
        },
    };
    if s.demo {
        if !relay.store_type().ends_with("MemStore") {
            return Err("--demo is for the in-memory store only".into());
        }
        demo(&relay).await?;
    }
    let app = router(relay.clone(), config)?;
    let listener = tokio::net::TcpListener::bind(s.listen).await?;
    println!(
        "echorelay-server: listening on {}://{} ({} store{})",
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr()?,
        relay.store_type(),
        if relay.store_type().ends_with("MemStore") {
            ": nothing persists"
        } else {
            ""
        }
    );
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

async fn demo(relay: &EchoRelay) -> Result<(), Box<dyn std::error::Error>> {
    let owner = UserId::random();
    relay
        .config()
        .create_project(owner, None, "demo", "Demo project")
        .await?;
    let caller = Caller::dangerous_user_stepped_up(owner, None);
    let members = relay.voter().authorize::<Members>(&caller, "demo").await?;
    relay
        .config()
        .set_api_keys_manage_keys(&members, true)
        .await?;
    let key = owner_key(relay, &caller, "demo", Environment::Test, "demo").await?;
    println!("echorelay-server: demo project `demo`, owner API key (shown once):");
    println!("{key}");
    Ok(())
}

/// An owner API key for `slug`, minted by `caller`; its plaintext, to be
/// printed once.
async fn owner_key(
    relay: &EchoRelay,
    caller: &Caller,
    slug: &str,
    environment: Environment,
    label: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let grant = relay.voter().authorize::<Keys>(caller, slug).await?;
    let minted = relay
        .keys()
        .mint(
            &grant,
            MintRequest {
                environment,
                role: Role::Owner,
                label: label.into(),
            },
        )
        .await?;
    Ok(minted.plaintext.expose_secret().to_owned())
}

#[cfg(feature = "pg")]
async fn migrate() -> Outcome {
    let url = std::env::var("DATABASE_URL").map_err(|_| "migrate needs DATABASE_URL")?;
    echorelay::pg::PgStore::connect_with(echorelay::pg::PgOptions::new(&url).migrate(true)).await?;
    println!("echorelay-server: the schema is up to date");
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "pg"))]
async fn migrate() -> Outcome {
    Err("migrate needs Postgres: build with --features pg".into())
}

fn keygen() -> Outcome {
    let key = SecretKey::generate();
    let text = key.to_hex();
    println!("{}", text.expose_secret());
    Ok(ExitCode::SUCCESS)
}

async fn rewrap(page: usize) -> Outcome {
    let relay = EchoRelay::from_env().await?;
    let rewrap = relay.rewrap();
    let mut cursor = Some(RewrapCursor::start());
    let (mut moved, mut current, mut failed, mut conflicts) = (0, 0, 0, 0);
    while let Some(c) = cursor {
        let p = rewrap.page(&c, page).await?;
        moved += p.rewrapped;
        current += p.current;
        failed += p.failed.len();
        conflicts += p.conflicts.len();
        for r in p.failed.iter().chain(&p.conflicts) {
            eprintln!("echorelay-server: left as it is: {r:?}");
        }
        println!(
            "rewrap: {moved} rewrapped, {current} already current, {failed} failed, {conflicts} conflicts"
        );
        cursor = p.next;
    }
    let usage = rewrap.key_usage(page).await?;
    for id in relay.vault().key_ids().skip(1) {
        println!(
            "previous key {id}: {}",
            if usage.in_use(id) {
                "still in use"
            } else {
                "unused: it can go"
            }
        );
    }
    Ok(if failed + conflicts == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn audit_verify() -> Outcome {
    let relay = EchoRelay::from_env().await?;
    let store = relay.store();
    let mut chains: Vec<(Option<ProjectId>, String)> = vec![(None, "global".into())];
    for p in store.list_projects().await? {
        chains.push((Some(p.id), p.slug.to_string()));
    }
    let mut broken = false;
    for (chain, name) in chains {
        let mut v = ChainVerifier::new(chain, None);
        let (mut after, mut count) = (0, 0u64);
        let outcome = loop {
            let page = store.events(chain, after, 500).await?;
            if let Some(e) = page.iter().find_map(|e| v.push(e).err()) {
                break Err(e);
            }
            count += page.len() as u64;
            match page.last() {
                Some(last) if page.len() == 500 => after = last.seq,
                _ => break v.finish().map(|_| ()),
            }
        };
        match outcome {
            Ok(()) => println!("{name}: {count} events, verified"),
            Err(b) => {
                broken = true;
                println!("{name}: BROKEN at seq {}: {}", b.seq, b.problem);
            }
        }
    }
    Ok(if broken {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn read_line(prompt: &str) -> Result<String, std::io::Error> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn create_owner(email: &str, slug: &str, name: &str) -> Outcome {
    let relay = EchoRelay::from_env().await?;
    if relay.store_type().ends_with("MemStore") {
        eprintln!(
            "echorelay-server: warning: in-memory store: the account dies with this process (set DATABASE_URL)"
        );
    }
    let password = match std::env::var("ECHORELAY_OWNER_PASSWORD") {
        Ok(p) => SecretString::from(p),
        Err(_) => SecretString::from(read_line("password (12+ characters, not easy to guess): ")?),
    };
    // The registration runs from the operator's own machine.
    let ip = std::net::IpAddr::from([127, 0, 0, 1]);
    let accounts = relay.accounts();
    let user = accounts.register(email, password.clone(), Some(ip)).await?;
    let PasswordStep::EnrollmentRequired(challenge) =
        accounts.login_password(email, password, ip, None).await?
    else {
        return Err("a new account must enroll its second factor first".into());
    };
    let offer = accounts
        .begin_enrollment(challenge.token.expose_secret(), ip)
        .await?;
    let qr = qrcode::QrCode::new(offer.otpauth_uri.expose_secret().as_bytes())?;
    let picture = qr
        .render::<qrcode::render::unicode::Dense1x2>()
        .quiet_zone(true)
        .build();
    println!(
        "Scan this with an authenticator app (or type {}):",
        offer.secret_base32.expose_secret()
    );
    println!("{picture}");
    let code = SecretString::from(read_line("the 6-digit code it shows: ")?);
    let enrolled = accounts
        .confirm_enrollment(challenge.token.expose_secret(), &code, ip, false)
        .await?;
    println!("Backup codes (each works once; shown only now):");
    for c in &enrolled.backup_codes {
        println!("  {}", c.expose_secret());
    }
    relay
        .config()
        .create_project(user, Some(ip), slug, name)
        .await?;
    let caller = Caller::user(user, Some(ip));
    let key = owner_key(&relay, &caller, slug, Environment::Live, "first key").await?;
    println!("Project `{slug}` created. Its first API key (owner; shown only now):");
    println!("{key}");
    Ok(ExitCode::SUCCESS)
}
