//! nodepool-operator's flags (each with an environment variable too), and the process they
//! describe.
use std::time::Duration;

use clap::Parser;
use operator_kit::cli::CommonArgs;
use operator_kit::process::{BoxError, Operator};
use shared_crd::field_manager;

use crate::provider::VirtualSettings;
use crate::{Config, Settings, run_operator};

/// This operator, to its process: beside autoscaler-operator's 8082, so both run on one
/// machine with their defaults.
const OPERATOR: Operator = Operator {
    name: field_manager::NODEPOOL_OPERATOR,
    metrics_prefix: "nodepool_operator",
    default_metrics_addr: "127.0.0.1:8081",
};

/// Keeps each NodePool's nodes at spec.replicas.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    #[command(flatten)]
    common: CommonArgs,
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

impl Cli {
    /// Runs the operator these flags describe until SIGTERM, Ctrl-C or a lost lease.
    pub async fn run(self) -> Result<(), BoxError> {
        let config = self.config();
        operator_kit::process::run(&OPERATOR, &self.common, |p| {
            tracing::info!(provider = %self.provider, max_nodes = ?config.settings.max_nodes, "nodes");
            run_operator(p, config)
        })
        .await
    }

    fn config(&self) -> Config {
        Config {
            settings: Settings {
                max_nodes: self.max_nodes,
                drain_timeout: Duration::from_secs(self.drain_timeout_seconds),
                resync: Duration::from_secs(self.resync_seconds),
                concurrency: self.common.run.concurrency,
            },
            provider: VirtualSettings {
                provisioning_delay: Duration::from_millis(self.provisioning_delay_ms),
                lease_renew_interval: Duration::from_secs(self.node_lease_renew_seconds),
                lease_duration: Duration::from_secs(self.node_lease_duration_seconds),
                status_report_interval: Duration::from_secs(self.node_status_report_seconds),
                taint_nodes: !self.no_virtual_taint,
            },
            strategy: self.common.write.strategy(),
        }
    }
}
