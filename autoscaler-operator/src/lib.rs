//! autoscaler-operator: sizes each NodePool that an Autoscaler targets from the demand of
//! the pods that want the pool, and writes the pool's `spec.replicas`.
#![forbid(unsafe_code)]

pub mod controller;
pub mod decide;
pub mod pod;

use std::sync::Arc;

use kube::Client;
use operator_kit::ConflictStrategy;
use operator_kit::http::Readiness;
use operator_kit::metrics::{ReconcileMetrics, WriteMetrics};
use shared_crd::field_manager;

pub use controller::{Context, Settings};

/// Everything the operator needs to run, from flags.
#[derive(Clone, Debug)]
pub struct Config {
    pub settings: Settings,
    pub strategy: ConflictStrategy,
}

/// Runs the controller until SIGTERM or Ctrl-C; `readiness` turns ready once the caches
/// have synced.
pub async fn run_operator(
    client: Client,
    config: Config,
    writes: Arc<WriteMetrics>,
    reconciles: Arc<ReconcileMetrics>,
    readiness: Readiness,
) {
    let writer = operator_kit::Writer::new(config.strategy, field_manager::AUTOSCALER_OPERATOR)
        .with_metrics(writes);
    let watches = controller::watches(&client);
    let ctx = Arc::new(Context::new(
        client,
        writer,
        &watches,
        config.settings,
        reconciles,
    ));
    let ready = {
        let (a, p, pods) = (
            watches.autoscalers.clone(),
            watches.pools.clone(),
            watches.pods.clone(),
        );
        async move {
            if a.wait_until_ready().await.is_ok()
                && p.wait_until_ready().await.is_ok()
                && pods.wait_until_ready().await.is_ok()
            {
                tracing::info!("caches synced; ready");
                readiness.set_ready();
            }
        }
    };
    tokio::join!(controller::run(ctx, watches), ready);
}
