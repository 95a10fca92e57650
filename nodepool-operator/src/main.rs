//! nodepool-operator: flags, telemetry, client; then the controllers and the HTTP server.
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use nodepool_operator::provider::VirtualSettings;
use nodepool_operator::{Config, Settings, run_operator};
use operator_kit::cli::{LogArgs, RunArgs, WriteArgs};
use operator_kit::leader::LeaderArgs;

/// Keeps each NodePool's nodes at spec.replicas.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    write: WriteArgs,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    leader: LeaderArgs,
    /// Where nodes come from (only `virtual`: Node objects with no machine behind them).
    #[arg(long, env = "PROVIDER", default_value = "virtual", value_parser = ["virtual"])]
    provider: String,
    /// Milliseconds from a node's creation to Ready.
    #[arg(long, env = "PROVISIONING_DELAY_MS", default_value_t = 2000)]
    provisioning_delay_ms: u64,
    /// Most nodes the provider hands out over all pools (default: unlimited).
    #[arg(long, env = "MAX_NODES")]
    max_nodes: Option<u32>,
    /// Seconds a node's drain may take before one that PodDisruptionBudgets block is
    /// reported on the Node (condition DrainBlocked and an event). The drain goes on; the
    /// pool's spec.template.terminationGracePeriodSeconds alone deletes the pods anyway.
    #[arg(long, env = "DRAIN_TIMEOUT_SECONDS", default_value_t = 60)]
    drain_timeout_seconds: u64,
    /// Seconds between renewals of each virtual node's Lease (the kubelet's 10).
    #[arg(long, env = "NODE_LEASE_RENEW_SECONDS", default_value_t = 10)]
    node_lease_renew_seconds: u64,
    /// Seconds a node Lease lasts unrenewed (the kubelet's 40).
    #[arg(long, env = "NODE_LEASE_DURATION_SECONDS", default_value_t = 40)]
    node_lease_duration_seconds: u64,
    /// Seconds between node status writes when nothing changed (the kubelet's 300).
    #[arg(long, env = "NODE_STATUS_REPORT_SECONDS", default_value_t = 300)]
    node_status_report_seconds: u64,
    /// Reconcile every pool at least this often, in seconds.
    #[arg(long, env = "RESYNC_SECONDS", default_value_t = 300)]
    resync_seconds: u64,
    /// Do not put the nodepool.dev/virtual:NoSchedule taint on virtual nodes.
    #[arg(long, env = "NO_VIRTUAL_TAINT")]
    no_virtual_taint: bool,
}

const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:8081";

// One thread: a reconcile waits on the API server, not the CPU; a second thread
// costs a malloc arena of its own (make bench-scale: 36.5 -> 35.1 MB, 3.7 -> 2.0 CPU-s).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let process = operator_kit::process::start(
        "nodepool_operator",
        &cli.log,
        &cli.run,
        DEFAULT_METRICS_ADDR,
    )
    .await
    .map_err(|e| anyhow::anyhow!(e))
    .context("starting")?;
    let config = Config {
        settings: Settings {
            max_nodes: cli.max_nodes,
            drain_timeout: Duration::from_secs(cli.drain_timeout_seconds),
            resync: Duration::from_secs(cli.resync_seconds),
            concurrency: cli.run.concurrency,
        },
        provider: VirtualSettings {
            provisioning_delay: Duration::from_millis(cli.provisioning_delay_ms),
            lease_renew_interval: Duration::from_secs(cli.node_lease_renew_seconds),
            lease_duration: Duration::from_secs(cli.node_lease_duration_seconds),
            status_report_interval: Duration::from_secs(cli.node_status_report_seconds),
            taint_nodes: !cli.no_virtual_taint,
        },
        strategy: cli.write.strategy(),
    };
    tracing::info!(strategy = config.strategy.name(), provider = %cli.provider, ?config.settings.max_nodes, "starting nodepool-operator");
    let lease = cli
        .leader
        .lease("nodepool-operator")
        .context("leader election flags")?;
    process
        .run(lease, |p| {
            run_operator(
                p.client,
                config,
                p.writes,
                p.reconciles,
                p.readiness,
                p.leadership,
            )
        })
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!("stopped");
    Ok(())
}
