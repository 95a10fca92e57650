//! autoscaler-operator: sizes each NodePool that an Autoscaler targets from the demand of
//! the pods that want the pool, and writes the pool's `spec.replicas`.
#![forbid(unsafe_code)]

pub mod caches;
pub mod cli;
pub mod controller;

use std::sync::Arc;

use kube::Client;
use operator_kit::ConflictStrategy;
use operator_kit::controller::RunnerSettings;
use operator_kit::events::Recorder;
use operator_kit::http::Readiness;
use operator_kit::leader::Leadership;
use operator_kit::metrics::{ReconcileMetrics, WriteMetrics};
use operator_kit::watch::Watches;
use shared_crd::field_manager;

pub use caches::Caches;
pub use cli::Cli;
pub use controller::{Context, Settings};

/// Everything the operator needs to run, from flags.
#[derive(Clone, Debug)]
pub struct Config {
    pub settings: Settings,
    pub strategy: ConflictStrategy,
}

/// Runs the controller until SIGTERM or Ctrl-C. `readiness` turns ready once the caches
/// have synced; the controller starts once `leadership` is acquired.
pub async fn run_operator(
    client: Client,
    config: Config,
    writes: Arc<WriteMetrics>,
    reconciles: Arc<ReconcileMetrics>,
    readiness: Readiness,
    mut leadership: Leadership,
) {
    let writer = operator_kit::Writer::new(config.strategy, field_manager::AUTOSCALER_OPERATOR)
        .with_metrics(writes);
    // The process's one event recorder: the watches report unreadable objects with it,
    // the controller its decisions.
    let recorder = Recorder::new(client.clone(), controller::reporter());
    let mut watches = Watches::new(client.clone(), recorder.clone());
    let caches = Caches::watch(&mut watches);
    let runner = RunnerSettings {
        metrics: reconciles,
        concurrency: config.settings.concurrency,
    };
    let leading = move || {
        let ctx = Context::new(client, writer, recorder, caches, config.settings);
        controller::runner(ctx, &runner).run()
    };
    watches.serve(&readiness, &mut leadership, leading).await;
}
