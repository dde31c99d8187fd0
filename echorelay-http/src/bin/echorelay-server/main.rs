//! `echorelay-server`: the operator's binary. `--help` on every
//! subcommand. The store comes from the environment (`EchoRelay::from_env`):
//! in memory without `DATABASE_URL`, Postgres with it (build with feature
//! `pg`); `SECRET_KEY` (and `SECRET_KEY_PREVIOUS` during a rotation) is the
//! vault key.
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[cfg(feature = "backup")]
mod backup;
mod work;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use std::num::NonZeroUsize;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use echorelay::core::keys::RotationReport;
use echorelay::core::rewrap::RewrapCursor;
use echorelay::prelude::*;
use echorelay_http::client::ProxyConfig;
use echorelay_http::server::{ServeOptions, ServerLimits};
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
    /// Serve the HTTP API (and run the scheduled maintenance).
    Serve(Box<Serve>),
    /// Run the relay's delivery workers (the queue of DATABASE_URL or
    /// REDIS_URL, which the servers' inbound door writes to) until Ctrl-C
    /// or SIGTERM. With the in-memory store use `serve --work` instead.
    Work(work::WorkArgs),
    /// Run the scheduled maintenance once and print its report (for cron,
    /// when `serve --maintenance-interval-secs 0`): auto-rotate every key
    /// whose rotation is due, destroy expired unrevealed successors, purge
    /// expired sessions, login challenges and idempotency keys, delete the
    /// delivery log's old messages. Safe to run from many
    /// processes at once. Exits non-zero if any part failed.
    Maintain {
        /// Days the relay's delivery log keeps a message (its deliveries
        /// and attempts with it); older ones are deleted. 0: every
        /// message received before this pass.
        #[arg(long, default_value_t = 30)]
        delivery_log_days: u32,
    },
    /// Apply pending Postgres migrations (DATABASE_URL, as the role that
    /// owns the tables), then exit.
    Migrate {
        /// Then grant the existing login role ROLE what the service needs
        /// and no more (no DDL, no UPDATE/DELETE of audit events): run
        /// `serve` as ROLE, so a leaked service credential cannot rewrite
        /// the audit log.
        #[arg(long, value_name = "ROLE")]
        grant_to: Option<String>,
    },
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
    /// Encrypted backups (ECHORELAY_BACKUP_URL, ECHORELAY_BACKUP_RECIPIENTS;
    /// see RUNBOOK.md).
    #[cfg(feature = "backup")]
    Backup {
        #[command(subcommand)]
        command: backup::BackupCommand,
    },
    /// Create an account that owns a new project: enrolls TOTP in the
    /// terminal (QR code), prints its backup codes and a first owner API
    /// key, once. The password is asked for on the terminal, without echo,
    /// unless --password-stdin or --password-env says where else it is.
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
        /// Read the password from the first line of standard input (for
        /// scripts; the 6-digit code then follows on the next line). On a
        /// terminal it is read without echo.
        #[arg(long, conflicts_with = "password_env")]
        password_stdin: bool,
        /// Read the password from this environment variable (for
        /// automation that already keeps it there).
        #[arg(long, value_name = "VAR")]
        password_env: Option<String>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify every chain (the global one and each project's); names the
    /// first broken link and exits non-zero on one.
    Verify {
        /// Also compare the live chains with the heads recorded by the
        /// newest backup whose manifest verifies (ECHORELAY_BACKUP_URL),
        /// or by the backup given to --backup-id: names a chain rewritten
        /// or truncated since, even with every hash recomputed.
        #[cfg(feature = "backup")]
        #[arg(long, requires = "identity")]
        against_backup: bool,
        /// With --against-backup: this backup (after restoring an older
        /// one, the newest recorded heads the restore rolled back).
        #[cfg(feature = "backup")]
        #[arg(long, requires = "against_backup", value_name = "ID")]
        backup_id: Option<String>,
        /// The age identity file that decrypts the backups.
        #[cfg(feature = "backup")]
        #[arg(long, short = 'i')]
        identity: Option<std::path::PathBuf>,
    },
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
    /// Seconds a client has to send a whole request head (request line
    /// and headers), from when the server starts waiting for it; also how
    /// long a keep-alive connection may sit idle between requests. Past
    /// it the connection is closed without an answer (slowloris).
    #[arg(long, default_value_t = ServerLimits::default().header_read_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_secs: u64,
    /// Seconds a TLS handshake may take from the TCP accept (ClientHello
    /// included); past it the connection is closed.
    #[arg(long, default_value_t = ServerLimits::default().tls_handshake_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    tls_handshake_timeout_secs: u64,
    /// Seconds a connection may go without a byte read or written (a
    /// stalled request body, a client not reading its answer); past it
    /// the connection is closed.
    #[arg(long, default_value_t = ServerLimits::default().idle_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_secs: u64,
    /// Connections served at once (TLS handshakes included). At the cap
    /// the server stops accepting: new connections wait in the kernel's
    /// backlog until one closes. Keep it below `ulimit -n`.
    #[arg(long, default_value_t = ServerLimits::default().max_connections as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Requests one keep-alive connection may carry; the last answer says
    /// `Connection: close`. 0: no limit.
    #[arg(long, default_value_t = ServerLimits::default().max_requests_per_connection.map_or(0, NonZeroUsize::get))]
    max_requests_per_connection: usize,
    /// Seconds between scheduled maintenance passes (auto-rotation of due
    /// keys, expired reveals, expired sessions; see `maintain`), the first
    /// at start. 0: none here (run `maintain` from cron instead). Safe with
    /// many processes on one database.
    #[arg(long, default_value_t = 300)]
    maintenance_interval_secs: u64,
    /// Days the relay's delivery log keeps a message (its deliveries and
    /// attempts with it); the maintenance pass deletes older ones. 0:
    /// every message received before the pass.
    #[arg(long, default_value_t = 30)]
    delivery_log_days: u32,
    #[cfg(feature = "backup")]
    #[command(flatten)]
    backups: backup::ScheduleArgs,
    /// Also run the relay's delivery workers in this process (needed with
    /// the in-memory store, whose queue no other process can reach).
    #[arg(long)]
    work: bool,
    #[command(flatten)]
    workers: work::WorkArgs,
}

impl Serve {
    fn limits(&self) -> ServerLimits {
        ServerLimits {
            header_read_timeout: Duration::from_secs(self.header_timeout_secs),
            tls_handshake_timeout: Duration::from_secs(self.tls_handshake_timeout_secs),
            idle_timeout: Duration::from_secs(self.idle_timeout_secs),
            max_requests_per_connection: NonZeroUsize::new(self.max_requests_per_connection),
            // Bounded by the parser's range.
            max_connections: usize::try_from(self.max_connections).unwrap_or(usize::MAX),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::INFO)
        .init();
    let result = match cli.command {
        Command::Serve(s) => serve(*s).await,
        Command::Maintain { delivery_log_days } => maintain(delivery_log_days).await,
        Command::Work(args) => work_command(args).await,
        Command::Migrate { grant_to } => migrate(grant_to.as_deref()).await,
        Command::Keygen => keygen(),
        Command::Rewrap { page } => rewrap(page).await,
        #[cfg(not(feature = "backup"))]
        Command::Audit {
            command: AuditCommand::Verify {},
        } => audit_verify().await,
        #[cfg(feature = "backup")]
        Command::Audit {
            command:
                AuditCommand::Verify {
                    against_backup,
                    identity,
                    backup_id,
                },
        } => match audit_verify().await {
            Ok(code) if against_backup && code == ExitCode::SUCCESS => match identity {
                Some(path) => match EchoRelay::from_env().await {
                    Ok(relay) => {
                        backup::audit_against_backup(&relay, &path, backup_id.as_deref()).await
                    }
                    Err(e) => Err(e.into()),
                },
                None => Err("--against-backup needs --identity".into()),
            },
            other => other,
        },
        #[cfg(feature = "backup")]
        Command::Backup { command } => backup::run(command).await,
        Command::CreateOwner {
            email,
            project,
            name,
            password_stdin,
            password_env,
        } => {
            let source = match (password_stdin, password_env) {
                (_, Some(var)) => PasswordSource::Env(var),
                (true, None) => PasswordSource::Stdin,
                (false, None) => PasswordSource::Terminal,
            };
            create_owner(
                &email,
                &project,
                name.as_deref().unwrap_or(&project),
                source,
            )
            .await
        }
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
    #[cfg(feature = "backup")]
    if s.backups.restores() {
        if s.demo {
            return Err(
                "--demo and --restore-backup do not go together: the restore needs an empty store"
                    .into(),
            );
        }
        backup::restore_at_start(&relay, &s.backups).await?;
    }
    if s.demo {
        if !relay.store_type().ends_with("MemStore") {
            return Err("--demo is for the in-memory store only".into());
        }
        demo(&relay).await?;
    }
    #[cfg(feature = "backup")]
    let backups = backup::scheduler(&relay, &s.backups)?;
    let app = router(relay.clone(), config)?;
    let listener = tokio::net::TcpListener::bind(s.listen).await?;
    println!(
        "echorelay-server: listening on {}://{} ({} store{}{})",
        if tls.is_some() { "https" } else { "http" },
        listener.local_addr()?,
        relay.store_type(),
        if relay.store_type().ends_with("MemStore") {
            ": nothing persists"
        } else {
            ""
        },
        if relay.sessions_type() == relay.store_type() {
            String::new()
        } else {
            format!(
                "; sessions, challenges and throttles: {}",
                relay.sessions_type()
            )
        }
    );
    if s.maintenance_interval_secs > 0 {
        let every = Duration::from_secs(s.maintenance_interval_secs);
        tokio::spawn(maintenance_schedule(
            relay.clone(),
            every,
            s.delivery_log_days,
        ));
    }
    #[cfg(feature = "backup")]
    if let Some(task) = backups {
        tokio::spawn(task);
    }
    let (stop_workers, workers_stopped) = tokio::sync::oneshot::channel::<()>();
    let workers = match s.work {
        true => {
            let transport = s.workers.transport()?;
            Some(tokio::spawn(work::run(
                relay.clone(),
                s.workers.clone(),
                transport,
                async {
                    let _ = workers_stopped.await;
                },
            )))
        }
        false => None,
    };
    let options = ServeOptions {
        tls,
        limits: s.limits(),
    };
    echorelay_http::server::serve(listener, app, options, shutdown_signal()).await?;
    let _ = stop_workers.send(());
    if let Some(w) = workers {
        let _ = w.await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn work_command(args: work::WorkArgs) -> Outcome {
    let relay = EchoRelay::from_env().await?;
    if relay.queue_type().ends_with("MemQueue") {
        return Err("`work` needs the queue the servers write to (DATABASE_URL or REDIS_URL); with the in-memory store run `serve --work`".into());
    }
    let transport = args.transport()?;
    work::run(relay, args, transport, shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

/// What one maintenance pass did; each part runs even when the other
/// failed.
struct Maintenance {
    rotation: Result<RotationReport, Error>,
    purged: Result<usize, Error>,
    idempotency: Result<usize, echorelay::core::relay::RelayError>,
    delivery_log: Result<usize, Error>,
}

impl Maintenance {
    /// One pass. Both parts are conditional writes in the store (a key is
    /// rotated only while it is still current; a purge deletes what has
    /// expired), so passes from many processes on one database at once
    /// make one successor per key and purge each row once.
    async fn run(relay: &EchoRelay, log_days: u32) -> Self {
        Self {
            rotation: relay.keys().rotate_due().await,
            purged: relay.accounts().purge_expired().await,
            idempotency: relay.relay().purge_idempotency_keys().await,
            delivery_log: relay
                .operations()
                .purge_log(chrono::Duration::days(i64::from(log_days)))
                .await,
        }
    }

    fn ok(&self) -> bool {
        matches!(&self.rotation, Ok(r) if r.errors == 0)
            && self.purged.is_ok()
            && self.idempotency.is_ok()
            && self.delivery_log.is_ok()
    }

    fn log(&self) {
        match &self.rotation {
            Ok(r) => tracing::info!(
                rotated = r.rotated,
                lost_races = r.lost_races,
                reveals_expired = r.reveals_expired,
                errors = r.errors,
                "maintenance: key rotation pass"
            ),
            Err(e) => tracing::error!(error = %e, "maintenance: key rotation pass failed"),
        }
        match &self.purged {
            Ok(n) => tracing::info!(
                purged = n,
                "maintenance: expired sessions and challenges purged"
            ),
            Err(e) => tracing::error!(error = %e, "maintenance: purge failed"),
        }
        match &self.idempotency {
            Ok(n) => tracing::info!(purged = n, "maintenance: expired idempotency keys purged"),
            Err(e) => tracing::error!(error = %e, "maintenance: idempotency key purge failed"),
        }
        match &self.delivery_log {
            Ok(n) => tracing::info!(
                purged = n,
                "maintenance: old messages purged from the delivery log"
            ),
            Err(e) => tracing::error!(error = %e, "maintenance: delivery log purge failed"),
        }
    }
}

/// Maintenance every `every`, the first pass at once (a restart catches
/// up), for as long as the server runs. A pass that takes longer than
/// `every` delays the next rather than overlapping it.
async fn maintenance_schedule(relay: EchoRelay, every: Duration, log_days: u32) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        Maintenance::run(&relay, log_days).await.log();
    }
}

async fn maintain(delivery_log_days: u32) -> Outcome {
    let relay = EchoRelay::from_env().await?;
    let pass = Maintenance::run(&relay, delivery_log_days).await;
    match &pass.rotation {
        Ok(r) => println!(
            "rotation: {} rotated, {} lost races, {} reveals expired, {} errors",
            r.rotated, r.lost_races, r.reveals_expired, r.errors
        ),
        Err(e) => println!("rotation: failed: {e}"),
    }
    match &pass.purged {
        Ok(n) => println!("purge: {n} expired sessions and challenges removed"),
        Err(e) => println!("purge: failed: {e}"),
    }
    match &pass.idempotency {
        Ok(n) => println!("idempotency keys: {n} expired removed"),
        Err(e) => println!("idempotency keys: failed: {e}"),
    }
    match &pass.delivery_log {
        Ok(n) => println!("delivery log: {n} messages older than {delivery_log_days} days removed"),
        Err(e) => println!("delivery log: failed: {e}"),
    }
    Ok(if pass.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
async fn migrate(grant_to: Option<&str>) -> Outcome {
    let url = std::env::var("DATABASE_URL").map_err(|_| "migrate needs DATABASE_URL")?;
    let store =
        echorelay::pg::PgStore::connect_with(echorelay::pg::PgOptions::new(&url).migrate(true))
            .await?;
    println!("echorelay-server: the schema is up to date");
    if let Some(role) = grant_to {
        store.grant_service_role(role).await?;
        println!(
            "echorelay-server: {role} may now run the service, and cannot rewrite the audit log"
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "pg"))]
async fn migrate(_grant_to: Option<&str>) -> Outcome {
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
    // Audit chains: each verified head sealed under the current key, so
    // the chains stay verifiable once the previous keys are gone.
    let mut chains: Vec<(Option<ProjectId>, String)> = vec![(None, "global".into())];
    for p in relay.store().list_projects().await? {
        chains.push((Some(p.id), p.slug.to_string()));
    }
    let (mut resealed, mut broken) = (0usize, 0usize);
    for (chain, name) in chains {
        match relay.audit().reseal(chain).await {
            Ok(true) => resealed += 1,
            Ok(false) => {}
            Err(echorelay::core::Error::Audit(b)) => {
                broken += 1;
                println!(
                    "audit: {name}: BROKEN at seq {}: {}; its head is left as it is",
                    b.seq, b.problem
                );
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("audit: {resealed} chain heads sealed under the current key, {broken} broken");
    let usage = rewrap.key_usage(page).await?;
    for id in relay.vault().key_ids().skip(1) {
        println!(
            "previous key {id}: {}",
            if usage.in_use(id) || broken > 0 {
                "still in use"
            } else {
                "unused: it can go"
            }
        );
    }
    Ok(if failed + conflicts + broken == 0 {
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
        match relay.audit().verify_chain(chain, None).await {
            Ok(status) => println!(
                "{name}: {} events, verified{}",
                status.events,
                if status.keyed {
                    ""
                } else {
                    " (hashes only: the store has no audit keys)"
                }
            ),
            Err(echorelay::core::Error::Audit(b)) => {
                broken = true;
                println!("{name}: BROKEN at seq {}: {}", b.seq, b.problem);
            }
            Err(e) => return Err(e.into()),
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

/// Where create-owner reads the owner's password.
enum PasswordSource {
    /// The controlling terminal (`/dev/tty`), without echo: the default,
    /// so a password never sits in the shell's history, the process
    /// environment or the scrollback.
    Terminal,
    /// The first line of standard input (`--password-stdin`).
    Stdin,
    /// An environment variable the operator named (`--password-env`).
    Env(String),
}

const PASSWORD_PROMPT: &str = "password (12+ characters, not easy to guess): ";

impl PasswordSource {
    fn read(&self) -> Result<SecretString, Box<dyn std::error::Error>> {
        use std::io::IsTerminal;
        Ok(SecretString::from(match self {
            PasswordSource::Stdin if !std::io::stdin().is_terminal() => {
                read_line("password (from standard input): ")?
            }
            PasswordSource::Terminal | PasswordSource::Stdin => {
                rpassword::prompt_password(PASSWORD_PROMPT).map_err(|e| {
                    format!(
                        "cannot read the password from the terminal ({e}): without one, pass --password-stdin or --password-env VAR"
                    )
                })?
            }
            PasswordSource::Env(var) => std::env::var(var)
                .map_err(|_| format!("--password-env: {var} is not set (or not UTF-8)"))?,
        }))
    }
}

async fn create_owner(email: &str, slug: &str, name: &str, source: PasswordSource) -> Outcome {
    let relay = EchoRelay::from_env().await?;
    if relay.store_type().ends_with("MemStore") {
        eprintln!(
            "echorelay-server: warning: in-memory store: the account dies with this process (set DATABASE_URL)"
        );
    }
    let password = source.read()?;
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
    // Minting needs a recent step-up: the owner has just proved the
    // password and a TOTP code at this terminal.
    let caller = Caller::dangerous_user_stepped_up(user, Some(ip));
    let key = owner_key(&relay, &caller, slug, Environment::Live, "first key").await?;
    println!("Project `{slug}` created. Its first API key (owner; shown only now):");
    println!("{key}");
    Ok(ExitCode::SUCCESS)
}
