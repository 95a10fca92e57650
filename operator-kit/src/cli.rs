//! Flags both operators take (each with an environment variable too).
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::backoff::{Backoff, DEFAULT_BACKOFF};
use crate::write::ConflictStrategy;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyName {
    /// PUT from the cache; a 409 requeues the whole reconcile.
    Lazy,
    /// Retry-on-conflict: re-read, re-apply, retry with backoff.
    Retry,
    /// Server-side apply with this operator's field manager.
    Apply,
}

/// How writes to shared objects handle conflicts.
#[derive(Clone, Debug, Args)]
pub struct WriteArgs {
    /// lazy | retry | apply
    #[arg(long, env = "CONFLICT_STRATEGY", value_enum, default_value = "apply")]
    pub conflict_strategy: StrategyName,
    /// retry: attempts in all (client-go DefaultBackoff: 4).
    #[arg(long, env = "RETRY_STEPS", default_value_t = DEFAULT_BACKOFF.steps)]
    pub retry_steps: u32,
    /// retry: first sleep in milliseconds (DefaultBackoff: 10).
    #[arg(long, env = "RETRY_DURATION_MS", default_value_t = 10)]
    pub retry_duration_ms: u64,
    /// retry: each sleep is the previous one times this (DefaultBackoff: 5.0).
    #[arg(long, env = "RETRY_FACTOR", default_value_t = DEFAULT_BACKOFF.factor)]
    pub retry_factor: f64,
    /// retry: random extra fraction of each sleep (DefaultBackoff: 0.1).
    #[arg(long, env = "RETRY_JITTER", default_value_t = DEFAULT_BACKOFF.jitter)]
    pub retry_jitter: f64,
    /// retry: longest sleep in milliseconds; reaching it ends the retries (0: no cap).
    #[arg(long, env = "RETRY_CAP_MS", default_value_t = 0)]
    pub retry_cap_ms: u64,
}

impl WriteArgs {
    pub fn strategy(&self) -> ConflictStrategy {
        match self.conflict_strategy {
            StrategyName::Lazy => ConflictStrategy::Lazy,
            StrategyName::Apply => ConflictStrategy::Apply,
            StrategyName::Retry => ConflictStrategy::Retry(Backoff {
                steps: self.retry_steps.max(1),
                duration: Duration::from_millis(self.retry_duration_ms),
                factor: self.retry_factor,
                jitter: self.retry_jitter,
                cap: (self.retry_cap_ms > 0).then(|| Duration::from_millis(self.retry_cap_ms)),
            }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Logging.
#[derive(Clone, Debug, Args)]
pub struct LogArgs {
    /// pretty | json
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,kube=debug` (RUST_LOG is honoured too).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

/// The flags every operator takes: how it runs, writes, logs and elects a leader.
#[derive(Clone, Debug, Args)]
pub struct CommonArgs {
    #[command(flatten)]
    pub run: RunArgs,
    #[command(flatten)]
    pub write: WriteArgs,
    #[command(flatten)]
    pub log: LogArgs,
    #[command(flatten)]
    pub leader: crate::leader::LeaderArgs,
}

/// Process-wide run settings.
#[derive(Clone, Debug, Args)]
pub struct RunArgs {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Reconciles running at once, per controller (0: unbounded).
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
    /// Kubeconfig context to use (default: the current one; in a pod, the service account).
    #[arg(long, env = "KUBE_CONTEXT")]
    pub context: Option<String>,
}

impl RunArgs {
    /// A kube client from the usual config loading (KUBECONFIG, then in-cluster), or from
    /// the kubeconfig context `--context`, counting its requests in `metrics`, retrying
    /// as client-go does ([`crate::client`]).
    pub async fn client(
        &self,
        metrics: std::sync::Arc<crate::observe::ObserveMetrics>,
    ) -> Result<kube::Client, Box<dyn std::error::Error + Send + Sync>> {
        let config = match &self.context {
            Some(context) => {
                let options = kube::config::KubeConfigOptions {
                    context: Some(context.clone()),
                    ..Default::default()
                };
                kube::Config::from_kubeconfig(&options).await?
            }
            None => kube::Config::infer().await?,
        };
        Ok(crate::client::build(config, metrics)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        write: WriteArgs,
    }

    #[test]
    fn retry_defaults_are_client_go_default_backoff() {
        let cli = Cli::parse_from(["x", "--conflict-strategy", "retry"]);
        assert_eq!(
            cli.write.strategy(),
            ConflictStrategy::Retry(DEFAULT_BACKOFF)
        );
    }

    #[test]
    fn default_strategy_is_apply() {
        assert_eq!(
            Cli::parse_from(["x"]).write.strategy(),
            ConflictStrategy::Apply
        );
    }

    #[test]
    fn cap_flag_sets_the_cap() {
        let cli = Cli::parse_from(["x", "--conflict-strategy=retry", "--retry-cap-ms=100"]);
        let ConflictStrategy::Retry(b) = cli.write.strategy() else {
            panic!()
        };
        assert_eq!(b.cap, Some(Duration::from_millis(100)));
    }
}
