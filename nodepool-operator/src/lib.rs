//! nodepool-operator: keeps each NodePool's nodes at `spec.replicas`, reports the pool's
//! status, and tells Autoscalers whether their pool can get nodes (`NodePoolReady`).
#![forbid(unsafe_code)]

pub mod binding;
pub mod controller;
pub mod decide;
pub mod drain;
pub mod provider;

pub use controller::{Context, Settings, run};

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use operator_kit::ConflictStrategy;
use operator_kit::http::Readiness;
use operator_kit::metrics::{ReconcileMetrics, WriteMetrics};
use shared_crd::{NodePool, field_manager};

/// Everything the operator needs to run, from flags.
#[derive(Clone, Debug)]
pub struct Config {
    pub settings: Settings,
    pub provider: provider::VirtualSettings,
    pub strategy: ConflictStrategy,
}

/// Runs both controllers (NodePool, and the `NodePoolReady` condition on Autoscalers)
/// until the process gets SIGTERM or Ctrl-C. `readiness` turns ready once the caches
/// have synced.
pub async fn run_operator(
    client: Client,
    config: Config,
    writes: Arc<WriteMetrics>,
    reconciles: Arc<ReconcileMetrics>,
    readiness: Readiness,
) {
    let writer = operator_kit::Writer::new(config.strategy, field_manager::NODEPOOL_OPERATOR)
        .with_metrics(writes);
    let provider = Arc::new(provider::VirtualProvider::new(
        client.clone(),
        config.provider.clone(),
    ));
    let watches = controller::watches(&client);
    let (pools, nodes) = (watches.pools.clone(), watches.nodes.clone());
    let ctx = Arc::new(Context {
        client: client.clone(),
        writer: writer.clone(),
        recorder: Recorder::new(client.clone(), controller::reporter()),
        provider,
        nodes: nodes.clone(),
        settings: config.settings.clone(),
        metrics: reconciles.clone(),
        last_scaled: Default::default(),
    });

    // The Autoscaler side reads pools from a cache of its own: it needs every pool
    // change that affects readiness, including deletions, which the NodePool
    // controller's generation-filtered stream leaves out.
    let (binding_pools, binding_writer) = reflector::store::<NodePool>();
    let binding_pool_events = watcher(
        kube::Api::<NodePool>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(binding_writer);
    let binding_ctx = Arc::new(binding::BindingContext {
        client: client.clone(),
        writer,
        pools: binding_pools.clone(),
        metrics: reconciles,
        concurrency: config.settings.concurrency,
    });

    let ready = {
        let (pools, nodes, binding_pools) = (pools.clone(), nodes.clone(), binding_pools.clone());
        async move {
            let synced = pools.wait_until_ready().await.is_ok()
                && nodes.wait_until_ready().await.is_ok()
                && binding_pools.wait_until_ready().await.is_ok();
            if synced {
                tracing::info!("caches synced; ready");
                readiness.set_ready();
            }
        }
    };
    // The controllers stop on SIGTERM or Ctrl-C; the pod finisher is a plain watch and
    // goes with them.
    let controllers = async {
        tokio::join!(
            controller::run(ctx, watches),
            binding::run(binding_ctx, binding_pool_events),
            ready,
        )
    };
    tokio::select! {
        _ = controllers => {}
        () = provider::finish_terminating_pods(client.clone(), nodes.clone()) => {}
    }
}
