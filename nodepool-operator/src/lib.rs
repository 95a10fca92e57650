//! nodepool-operator: keeps each NodePool's nodes at `spec.replicas`, reports the pool's
//! status, plays the kubelet for its virtual nodes, and tells Autoscalers whether their
//! pool can get nodes (`NodePoolReady`).
//!
//! One watch per kind (NodePools, its Nodes, bound Pods), each feeding one cache, a few
//! indexes and every controller that needs it:
//! - `controller`: a pool's nodes to `spec.replicas`, and its status;
//! - `lifecycle`: one node's end (drain, then the finalizer goes) and its pods' end;
//! - `heartbeat`: Leases and node status, on a task of its own;
//! - `nodepool_ready`: the `NodePoolReady` condition on Autoscalers.
#![forbid(unsafe_code)]

pub mod controller;
pub mod decide;
pub mod drain;
pub mod heartbeat;
pub mod kubelet;
pub mod lifecycle;
pub mod nodepool_ready;
pub mod provider;
pub mod quota;

pub use controller::{Context, Settings};

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec, PodStatus};
use kube::Client;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use operator_kit::ConflictStrategy;
use operator_kit::events::{Recorder, Reporter};
use operator_kit::http::Readiness;
use operator_kit::leader::Leadership;
use operator_kit::metrics::{ReconcileMetrics, WriteMetrics};
use operator_kit::watch::{Fanout, Index, feed_indexes, guarded, trim_metadata};
use shared_crd::{Autoscaler, NodePool, POOL_LABEL, field_manager};

/// Everything the operator needs to run, from flags.
#[derive(Clone, Debug)]
pub struct Config {
    pub settings: Settings,
    pub provider: provider::VirtualSettings,
    pub strategy: ConflictStrategy,
}

/// The caches every part reads, and their indexes.
#[derive(Clone)]
pub struct Caches {
    pub pools: Store<NodePool>,
    /// Nodes carrying the pool label (foreign ones too; the indexes hold only ours).
    pub nodes: Store<Node>,
    /// This operator's nodes by pool name, terminating ones included.
    pub nodes_by_pool: Index<Node>,
    /// Pods bound to a node, trimmed to what a drain and a kubelet read.
    pub pods: Store<Pod>,
    pub pods_by_node: Index<Pod>,
    /// Autoscalers, for the `NodePoolReady` condition this operator owns in their status.
    pub autoscalers: Store<Autoscaler>,
    /// Autoscalers by the pool they target.
    pub autoscalers_by_pool: Index<Autoscaler>,
}

impl Caches {
    /// Waits until every cache holds its first full list.
    pub async fn wait_until_ready(&self) -> bool {
        self.pools.wait_until_ready().await.is_ok()
            && self.nodes.wait_until_ready().await.is_ok()
            && self.pods.wait_until_ready().await.is_ok()
            && self.autoscalers.wait_until_ready().await.is_ok()
    }

    /// A pool's nodes from the cache, terminating ones included.
    pub fn nodes_of(&self, pool: &str) -> Vec<Arc<Node>> {
        self.nodes_by_pool.objects(pool, &self.nodes)
    }

    /// The pods bound to `node`, from the cache.
    pub fn pods_on(&self, node: &str) -> Vec<Arc<Pod>> {
        self.pods_by_node.objects(node, &self.pods)
    }
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

    let (pools, pool_writer) = reflector::store::<NodePool>();
    let pool_watch = Fanout::new(
        "NodePool",
        // One NodePool this version cannot read must not blind it to the others.
        guarded(
            Api::<DeserializeGuard<NodePool>>::all(client.clone()),
            Default::default(),
            recorder.clone(),
        )
        .modify(trim_metadata)
        .reflect(pool_writer),
        pools.clone(),
    );
    let (nodes, node_writer) = reflector::store::<Node>();
    let nodes_by_pool = Index::new(|n: &Node| provider::pool_of(n).map(str::to_owned));
    let node_watch = Fanout::new(
        "Node",
        feed_indexes(
            watcher(
                Api::<Node>::all(client.clone()),
                watcher::Config::default().labels(POOL_LABEL),
            )
            .default_backoff()
            .modify(trim_node)
            .reflect(node_writer),
            vec![nodes_by_pool.clone()],
        ),
        nodes.clone(),
    );
    let (pods, pod_writer) = reflector::store::<Pod>();
    let pods_by_node = Index::new(|p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone()));
    let pod_watch = Fanout::new(
        "Pod",
        feed_indexes(
            // Only pods bound to a node: the ones a drain or a kubelet deals with.
            watcher(
                Api::<Pod>::all(client.clone()),
                watcher::Config::default().fields("spec.nodeName!="),
            )
            .default_backoff()
            .modify(trim_pod)
            .reflect(pod_writer),
            vec![pods_by_node.clone()],
        ),
        pods.clone(),
    );
    let (autoscalers, autoscaler_writer) = reflector::store::<Autoscaler>();
    let autoscalers_by_pool = Index::new(|a: &Autoscaler| Some(a.spec.node_pool_ref.name.clone()));
    let autoscaler_watch = Fanout::new(
        "Autoscaler",
        feed_indexes(
            // One Autoscaler this version cannot read must not blind it to the others.
            guarded(
                Api::<DeserializeGuard<Autoscaler>>::all(client.clone()),
                Default::default(),
                recorder.clone(),
            )
            .modify(trim_metadata)
            .reflect(autoscaler_writer),
            vec![autoscalers_by_pool.clone()],
        ),
        autoscalers.clone(),
    );
    let caches = Caches {
        pools,
        nodes,
        nodes_by_pool,
        pods,
        pods_by_node,
        autoscalers,
        autoscalers_by_pool,
    };
    let (pool_events, node_events, pod_events, autoscaler_events) = (
        pool_watch.subscriptions(),
        node_watch.subscriptions(),
        pod_watch.subscriptions(),
        autoscaler_watch.subscriptions(),
    );

    // Every replica keeps its caches and is Ready once they are full; only the leader runs
    // the parts that write, from then on. They start once every cache is full (an orphan
    // is only an orphan against a complete list of pools), and stop on SIGTERM or Ctrl-C;
    // the watches go with them.
    let writers = async move {
        let synced = caches.wait_until_ready();
        if !operator_kit::process::synced_then_leading(synced, &readiness, &mut leadership).await {
            return;
        }
        let provider: Arc<dyn provider::Provider> = Arc::new(provider::VirtualProvider::new(
            client.clone(),
            config.provider.clone(),
        ));
        let ctx = Arc::new(Context::new(
            client.clone(),
            writer.clone(),
            recorder.clone(),
            provider,
            caches.clone(),
            config.settings.clone(),
            reconciles.clone(),
        ));
        let pool_controller =
            controller::run(ctx, pool_events.subscribe(), node_events.subscribe());

        let lifecycle_ctx = Arc::new(lifecycle::Context::new(
            client.clone(),
            recorder,
            caches.clone(),
            config.settings.drain_timeout,
            reconciles.clone(),
        ));
        let lifecycle_controller = lifecycle::run(
            lifecycle_ctx,
            node_events.subscribe(),
            pod_events.subscribe(),
            pool_events.subscribe(),
            config.settings.concurrency,
        );

        let ready_ctx = Arc::new(nodepool_ready::Context::new(
            client.clone(),
            writer,
            caches.clone(),
            reconciles,
            config.settings.concurrency,
        ));
        let ready_controller = nodepool_ready::run(
            ready_ctx,
            autoscaler_events.subscribe(),
            pool_events.subscribe(),
        );

        let heartbeats = heartbeat::Heartbeats::new(client, caches.nodes.clone(), config.provider);
        // The heartbeats never end by themselves: the controllers' end (SIGTERM) ends them.
        tokio::select! {
            _ = async { tokio::join!(pool_controller, lifecycle_controller, ready_controller) } => {}
            () = heartbeats.run() => {}
        }
    };
    let watches = async {
        tokio::join!(
            pool_watch.run(),
            node_watch.run(),
            pod_watch.run(),
            autoscaler_watch.run()
        )
    };
    tokio::select! {
        () = writers => {}
        _ = watches => {}
    }
}

/// Keeps of a Node what this operator reads: metadata, unschedulable, providerID,
/// conditions. Images, node info and addresses are most of a Node and are not read.
fn trim_node(node: &mut Node) {
    trim_metadata(node);
    if let Some(spec) = node.spec.as_mut() {
        spec.taints = None;
        spec.pod_cidr = None;
        spec.pod_cidrs = None;
    }
    if let Some(status) = node.status.as_mut() {
        *status = k8s_openapi::api::core::v1::NodeStatus {
            conditions: status.conditions.take(),
            ..Default::default()
        };
    }
}

/// Keeps of a Pod what a drain and the kubelet's part read: its metadata (owners,
/// deletion), its node, its containers' names and images, its phase.
fn trim_pod(pod: &mut Pod) {
    trim_metadata(pod);
    pod.metadata.labels = None;
    if let Some(annotations) = pod.metadata.annotations.as_mut() {
        annotations.retain(|k, _| k == "kubernetes.io/config.mirror");
    }
    // The node, and each container's name and image (the kubelet's part reports them).
    let spec = pod.spec.take().unwrap_or_default();
    pod.spec = Some(PodSpec {
        node_name: spec.node_name,
        containers: spec
            .containers
            .into_iter()
            .map(|c| Container {
                name: c.name,
                image: c.image,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    });
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    pod.status = Some(PodStatus {
        phase,
        ..Default::default()
    });
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
