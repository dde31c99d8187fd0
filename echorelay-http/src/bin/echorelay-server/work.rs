//! `echorelay-server work` and `serve --work`: the relay's delivery
//! workers. Each of `--concurrency` loops reserves one due delivery job,
//! delivers it (signed, through the SSRF guard) and acks, retries or
//! dead-letters it, so a slow target holds up one loop, not the others.
//! On Ctrl-C / SIGTERM the loops stop reserving and finish what they hold.

use std::sync::Arc;
use std::time::Duration;

use echorelay::core::egress::EgressPolicy;
use echorelay::core::relay::{AttemptOutcome, DeliveryService, Transport};
use echorelay::prelude::*;
use echorelay_http::delivery::HttpTransport;

/// The delivery workers' flags.
#[derive(clap::Args, Debug, Clone)]
pub struct WorkArgs {
    /// Deliveries in flight at once (each loop holds one job).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Deliver to plain `http://` targets too (default: `https` only).
    #[arg(long)]
    pub allow_http: bool,
    /// Deliver to this network although it is internal (loopback,
    /// private, …): an SSRF guard exception, e.g. 10.1.2.0/24 for an
    /// internal receiver. Repeat for several.
    #[arg(long = "allow-net", value_name = "CIDR")]
    pub allow_net: Vec<ipnet::IpNet>,
}

impl WorkArgs {
    /// The delivery client these flags describe.
    pub fn transport(&self) -> Result<HttpTransport, echorelay::core::relay::TransportError> {
        HttpTransport::new(self.policy())
    }

    fn policy(&self) -> EgressPolicy {
        let mut p = EgressPolicy::default().allow_http(self.allow_http);
        for net in &self.allow_net {
            p = p.allow(*net);
        }
        p
    }
}

/// Runs the workers until `stop` resolves, then lets every loop finish
/// the job it holds.
pub async fn run(
    relay: EchoRelay,
    args: WorkArgs,
    transport: HttpTransport,
    stop: impl std::future::Future<Output = ()>,
) {
    let worker = Arc::new(relay.delivery(transport));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut loops = Vec::new();
    for _ in 0..args.concurrency {
        let worker = worker.clone();
        let rx = rx.clone();
        loops.push(tokio::spawn(async move {
            // The stop is looked at between deliveries, never during one:
            // a delivery in flight finishes and is recorded. A loop waits
            // at most a second for a job, so it notices the stop within a
            // second of its last delivery.
            while !*rx.borrow() {
                if !one(&worker).await {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }));
    }
    tracing::info!(concurrency = args.concurrency, allow_http = args.allow_http, allow_net = ?args.allow_net, "relay: delivery workers running");
    stop.await;
    tracing::info!("relay: stopping; finishing the deliveries in flight");
    let _ = tx.send(true);
    for l in loops {
        let _ = l.await;
    }
}

/// One reservation and its delivery; `false` when the queue failed.
async fn one<S, V, Q, T>(worker: &DeliveryService<S, V, Q, T>) -> bool
where
    S: echorelay::core::ports::ConfigStore
        + echorelay::core::ports::MembershipStore
        + echorelay::core::ports::AuditSink
        + echorelay::core::ports::DeliveryLog
        + Clone,
    V: echorelay::core::vault::SecretVault,
    Q: echorelay::core::queue::Queue,
    T: Transport,
{
    match worker.run_wait(1, Duration::from_secs(1)).await {
        Ok(attempts) => {
            for a in attempts {
                let message = a.message.map(|m| m.to_string()).unwrap_or_default();
                let target = a.target.map(|t| t.to_string()).unwrap_or_default();
                let latency_ms = u64::try_from(a.latency.as_millis()).unwrap_or(u64::MAX);
                match a.outcome {
                    AttemptOutcome::Delivered => tracing::info!(
                        %message, %target, attempt = a.attempt, status = a.status, latency_ms,
                        "relay: delivered"
                    ),
                    AttemptOutcome::Retrying(at) => tracing::warn!(
                        %message, %target, attempt = a.attempt, status = a.status,
                        class = a.class.as_deref().unwrap_or(""), retry_at = %at,
                        "relay: delivery failed, will retry"
                    ),
                    AttemptOutcome::Dead => tracing::warn!(
                        %message, %target, attempt = a.attempt, status = a.status,
                        class = a.class.as_deref().unwrap_or(""),
                        "relay: delivery dead-lettered"
                    ),
                    AttemptOutcome::LeaseLost => tracing::warn!(
                        %message, %target, attempt = a.attempt,
                        "relay: lease lost before the outcome was recorded"
                    ),
                }
            }
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "relay: could not reserve deliveries");
            false
        }
    }
}
