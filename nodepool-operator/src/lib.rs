//! nodepool-operator: keeps each NodePool's nodes at `spec.replicas`, reports the pool's
//! status, plays the kubelet for its virtual nodes, and tells Autoscalers whether their
//! pool can get nodes (`NodePoolReady`).
//!
//! One watch per kind (NodePools, its Nodes, bound Pods, Autoscalers: `caches`), each
//! feeding one cache, a few indexes and every controller that needs it:
//! - `controller`: a pool's nodes to `spec.replicas`, and its status;
//! - `lifecycle`: one node's end (drain, then the finalizer goes) and its pods' end;
//! - `heartbeat`: Leases and node status, on a task of its own;
//! - `nodepool_ready`: the `NodePoolReady` condition on Autoscalers.
#![forbid(unsafe_code)]

pub mod caches;
pub mod controller;
pub mod decide;
pub mod drain;
pub mod heartbeat;
pub mod kubelet;
pub mod lifecycle;
pub mod nodepool_ready;
pub mod provider;
pub mod quota;

pub use caches::Caches;
pub use controller::{Context, Settings};

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
        let provider: Arc<dyn provider::Provider> = Arc::new(provider::VirtualProvider::new(
            client.clone(),
            config.provider.clone(),
        ));
        let pools = controller::runner(
            Context::new(
                client.clone(),
                writer.clone(),
                recorder.clone(),
                provider,
                caches.clone(),
                config.settings.clone(),
            ),
            &runner,
        );
        let lifecycle = lifecycle::runner(
            lifecycle::Context::new(
                client.clone(),
                recorder,
                caches.clone(),
                config.settings.drain_timeout,
            ),
            &runner,
        );
        let ready = nodepool_ready::runner(
            nodepool_ready::Context::new(client.clone(), writer, caches.clone()),
            &runner,
        );
        let heartbeats =
            heartbeat::Heartbeats::new(client, caches.nodes.store().clone(), config.provider);
        // The heartbeats never end by themselves: the controllers' end (SIGTERM) ends them.
        tokio::select! {
            _ = async { tokio::join!(pools.run(), lifecycle.run(), ready.run()) } => {}
            () = heartbeats.run() => {}
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

/// A JSON patch that removes `finalizer` from `finalizers` (an object's current list).
/// Its `test` makes the patch fail, not clobber, if the list changed meanwhile.
pub(crate) fn finalizer_removal(finalizers: &[String], finalizer: &str) -> json_patch::Patch {
    let kept: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
    serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/metadata/finalizers", "value": finalizers},
        {"op": "replace", "path": "/metadata/finalizers", "value": kept},
    ]))
    .expect("a valid JSON patch")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finalizer_removal_keeps_the_others_and_tests_the_list_first() {
        let list = vec!["other".to_owned(), "nodepool.dev/nodes".to_owned()];
        let patch = serde_json::to_value(finalizer_removal(&list, "nodepool.dev/nodes")).unwrap();
        assert_eq!(
            patch,
            serde_json::json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["other", "nodepool.dev/nodes"]},
                {"op": "replace", "path": "/metadata/finalizers", "value": ["other"]},
            ])
        );
    }
}
