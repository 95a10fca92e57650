//! autoscaler-operator: sizes each NodePool that an Autoscaler targets from the demand of
//! the pods that want the pool, and writes the pool's `spec.replicas`.
#![forbid(unsafe_code)]

pub mod controller;
pub mod decide;
pub mod fit;
pub mod node;
pub mod pod;

use std::sync::Arc;

use kube::Client;
use operator_kit::ConflictStrategy;
use operator_kit::http::Readiness;
use operator_kit::leader::Leadership;
use operator_kit::metrics::{ReconcileMetrics, WriteMetrics};
use shared_crd::field_manager;

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
    let watches = controller::watches(&client);
    let events = controller::Events {
        autoscalers: watches.autoscaler_watch.subscriptions(),
        pools: watches.pool_watch.subscriptions(),
        pods: watches.pod_watch.subscriptions(),
        nodes: watches.node_watch.subscriptions(),
    };
    let ctx = Context::new(client, writer, &watches, config.settings, reconciles);
    let controller::Watches {
        autoscaler_watch,
        pool_watch,
        pod_watch,
        node_watch,
        ..
    } = watches;
    let caches_ready = {
        let (a, p, pods, nodes) = (
            ctx.autoscalers.clone(),
            ctx.pools.clone(),
            ctx.pods.clone(),
            ctx.nodes.clone(),
        );
        async move {
            a.wait_until_ready().await.is_ok()
                && p.wait_until_ready().await.is_ok()
                && pods.wait_until_ready().await.is_ok()
                && nodes.wait_until_ready().await.is_ok()
        }
    };
    // Every replica keeps its caches and is Ready once they are full; only the leader runs
    // the controller.
    let writer = async move {
        if operator_kit::process::synced_then_leading(caches_ready, &readiness, &mut leadership)
            .await
        {
            controller::run(Arc::new(ctx), events).await;
        }
    };
    let watches = async {
        tokio::join!(
            autoscaler_watch.run(),
            pool_watch.run(),
            pod_watch.run(),
            node_watch.run()
        )
    };
    tokio::select! {
        () = writer => {}
        _ = watches => {}
    }
}
