//! autoscaler-operator: flags, telemetry, client; then the controller and the HTTP server.
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use autoscaler_operator::{Config, Settings, run_operator};
use clap::Parser;
use operator_kit::cli::{LogArgs, RunArgs, WriteArgs};
use operator_kit::http::{self, Readiness};
use tracing_subscriber::Layer;

/// Sizes NodePools from the demand of the pods that target them.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    write: WriteArgs,
    #[command(flatten)]
    log: LogArgs,
    /// Reconcile every Autoscaler at least this often, in seconds.
    #[arg(long, env = "RESYNC_SECONDS", default_value_t = 30)]
    resync_seconds: u64,
}

/// Beside nodepool-operator's 8081, so both run on one machine with their defaults.
const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:8082";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let metrics = operator_kit::metrics::operator_metrics("autoscaler_operator");
    let triggers = operator_kit::observe::TriggerLayer(metrics.observe.clone());
    operator_kit::telemetry::init(
        &cli.log,
        triggers.with_filter(operator_kit::observe::TriggerLayer::filter()),
    );
    let client = cli
        .run
        .client(metrics.observe.clone())
        .await
        .map_err(|e| anyhow::anyhow!(e))
        .context("building a Kubernetes client")?;
    let readiness = Readiness::default();
    let addr: SocketAddr = cli
        .run
        .metrics_addr
        .unwrap_or_else(|| DEFAULT_METRICS_ADDR.parse().expect("valid default"));
    let config = Config {
        settings: Settings {
            resync: Duration::from_secs(cli.resync_seconds),
            concurrency: cli.run.concurrency,
        },
        strategy: cli.write.strategy(),
    };
    tracing::info!(
        strategy = config.strategy.name(),
        "starting autoscaler-operator"
    );
    let server = http::serve(addr, Arc::new(metrics.registry), readiness.clone());
    tokio::select! {
        () = run_operator(client, config, metrics.writes, metrics.reconciles, readiness) => {}
        result = server => result.with_context(|| format!("serving metrics on {addr}"))?,
    }
    tracing::info!("stopped");
    Ok(())
}
