//! autoscaler-operator's flags (each with an environment variable too), and the process
//! they describe.
use std::time::Duration;

use clap::Parser;
use operator_kit::cli::CommonArgs;
use operator_kit::process::{BoxError, Operator};
use shared_crd::field_manager;

use crate::{Config, Settings, run_operator};

/// This operator, to its process: beside nodepool-operator's 8081, so both run on one
/// machine with their defaults.
const OPERATOR: Operator = Operator {
    name: field_manager::AUTOSCALER_OPERATOR,
    metrics_prefix: "autoscaler_operator",
    default_metrics_addr: "127.0.0.1:8082",
};

/// Sizes NodePools from the demand of the pods that target them.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Reconcile every Autoscaler at least this often, in seconds.
    #[arg(long, env = "RESYNC_SECONDS", default_value_t = 30)]
    resync_seconds: u64,
}

impl Cli {
    /// Runs the operator these flags describe until SIGTERM, Ctrl-C or a lost lease.
    pub async fn run(self) -> Result<(), BoxError> {
        let config = Config {
            settings: Settings {
                resync: Duration::from_secs(self.resync_seconds),
                concurrency: self.common.run.concurrency,
            },
            strategy: self.common.write.strategy(),
        };
        operator_kit::process::run(&OPERATOR, &self.common, |p| run_operator(p, config)).await
    }
}
