//! nodepool-operator: keeps each NodePool's nodes at `spec.replicas`, reports the pool's
//! status, plays the kubelet for its virtual nodes, and tells Autoscalers whether their
//! pool can get nodes (`NodePoolReady`).
//!
//! One watch per kind (NodePools, its Nodes, bound Pods, Autoscalers: `caches`), each
//! feeding one cache, a few indexes and every controller that needs it:
//! - `pool`: a pool's nodes to `spec.replicas`, and its status;
//! - `lifecycle`: one node's end (drain, then the finalizer goes) and its pods' start and
//!   end where this operator plays their kubelet;
//! - `nodepool_ready`: the `NodePoolReady` condition on Autoscalers.
//!
//! Nodes come from a `provider`; the virtual one plays their kubelet too (heartbeats on a
//! task of their own). The decisions are nodepool-core's.
#![forbid(unsafe_code)]

pub mod caches;
pub mod cli;
pub mod eviction;
pub mod lifecycle;
pub mod nodepool_ready;
pub mod pool;
pub mod provider;

pub use caches::Caches;
pub use cli::Cli;
pub use pool::{Context, Settings};

use std::sync::Arc;

use kube::Client;
use operator_kit::ConflictStrategy;
use operator_kit::controller::RunnerSettings;
use operator_kit::events::{Recorder, Reporter};
use operator_kit::http::Readiness;
use operator_kit::leader::Leadership;
use operator_kit::metrics::{ReconcileMetrics, WriteMetrics};
use operator_kit::watch::Watches;
use shared_crd::field_manager;

/// Everything the operator needs to run, from flags.
#[derive(Clone, Debug)]
pub struct Config {
    pub settings: Settings,
    pub provider: provider::VirtualSettings,
    pub strategy: ConflictStrategy,
}

/// Runs every part until the process gets SIGTERM or Ctrl-C. `readiness` turns ready
/// once the caches have synced; the parts that write start once `leadership` is acquired.
pub async fn run_operator(
    client: Client,
    config: Config,
    writes: Arc<WriteMetrics>,
    reconciles: Arc<ReconcileMetrics>,
    readiness: Readiness,
    mut leadership: Leadership,
) {
    let writer = operator_kit::Writer::new(config.strategy, field_manager::NODEPOOL_OPERATOR)
        .with_metrics(writes);
    let recorder = Recorder::new(client.clone(), reporter());
    let mut watches = Watches::new(client.clone(), recorder.clone());
    let caches = Caches::watch(&mut watches);
    let runner = RunnerSettings {
        metrics: reconciles,
        concurrency: config.settings.concurrency,
    };
    // The parts that write start once every cache is full (an orphan is only an orphan
    // against a complete list of pools) and this replica leads.
    let leading = move || async move {
        let provider = provider::VirtualProvider::new(client.clone(), config.provider.clone());
        let kubelet = provider::Provider::kubelet(&provider);
        let lifecycle = lifecycle::runner(
            lifecycle::Context::new(
                client.clone(),
                recorder.clone(),
                caches.clone(),
                &provider,
                config.settings.drain_timeout,
            ),
            &runner,
        );
        let pools = pool::runner(
            Context::new(
                client.clone(),
                writer.clone(),
                recorder,
                Arc::new(provider),
                caches.clone(),
                config.settings.clone(),
            ),
            &runner,
        );
        let ready = nodepool_ready::runner(
            nodepool_ready::Context::new(client, writer, caches.clone()),
            &runner,
        );
        // The kubelet's heartbeats, when the provider's nodes have none; they never end by
        // themselves: the controllers' end (SIGTERM) ends them.
        let heartbeats = async {
            match kubelet {
                Some(kubelet) => kubelet.heartbeats(caches.nodes.store().clone()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = async { tokio::join!(pools.run(), lifecycle.run(), ready.run()) } => {}
            () = heartbeats => {}
        }
    };
    watches.serve(&readiness, &mut leadership, leading).await;
}

/// The reporter of this operator's events.
pub fn reporter() -> Reporter {
    Reporter {
        controller: field_manager::NODEPOOL_OPERATOR.into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}
