//! What nodepool-operator watches: one watch per kind, each feeding one cache and the
//! indexes its controllers read through, each object trimmed to what is read.
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, NodeStatus};
use operator_kit::watch::{Cache, Index, Watch, Watches, trim_metadata};
use shared_crd::{Autoscaler, NodePool, POOL_LABEL};

use nodepool_core::nodes::pool_of;
use nodepool_core::pod::BoundPod;

/// The caches every part reads, and their indexes.
#[derive(Clone)]
pub struct Caches {
    pub pools: Cache<NodePool>,
    /// Nodes carrying the pool label (foreign ones too; the indexes hold only ours).
    pub nodes: Cache<Node>,
    /// This operator's nodes by pool name, terminating ones included.
    pub nodes_by_pool: Index<Node>,
    /// Pods bound to a node, narrowed to what a drain and a kubelet read ([`BoundPod`]).
    pub pods: Cache<BoundPod>,
    pub pods_by_node: Index<BoundPod>,
    /// Autoscalers, for the `NodePoolReady` condition this operator owns in their status.
    pub autoscalers: Cache<Autoscaler>,
    /// Autoscalers by the pool they target.
    pub autoscalers_by_pool: Index<Autoscaler>,
}

impl Caches {
    /// Opens this operator's watches in `watches`.
    pub fn watch(watches: &mut Watches) -> Self {
        let nodes_by_pool = Index::new(|n: &Node| pool_of(n).map(str::to_owned));
        let pods_by_node = Index::new(|p: &BoundPod| p.node().map(str::to_owned));
        let autoscalers_by_pool =
            Index::new(|a: &Autoscaler| Some(a.spec.node_pool_ref.name.clone()));
        Self {
            pools: watches.add(Watch::all()),
            nodes: watches.add(
                Watch::all()
                    .labels(POOL_LABEL)
                    .trim(trim_node)
                    .index(&nodes_by_pool),
            ),
            nodes_by_pool,
            // Only pods bound to a node: the ones a drain or a kubelet deals with.
            pods: watches.add(Watch::all().fields("spec.nodeName!=").index(&pods_by_node)),
            pods_by_node,
            autoscalers: watches.add(Watch::all().index(&autoscalers_by_pool)),
            autoscalers_by_pool,
        }
    }

    /// A pool's nodes from the cache, terminating ones included.
    pub fn nodes_of(&self, pool: &str) -> Vec<Arc<Node>> {
        self.nodes_by_pool.objects(pool, &self.nodes)
    }

    /// The pods bound to `node`, from the cache.
    pub fn pods_on(&self, node: &str) -> Vec<Arc<BoundPod>> {
        self.pods_by_node.objects(node, &self.pods)
    }
}

/// Keeps of a Node what this operator reads: metadata, unschedulable, providerID,
/// conditions. Images, node info and addresses are most of a Node and are not read. Also
/// applied to the Nodes that creates return (see `pool::act`).
pub fn trim_node(node: &mut Node) {
    trim_metadata(node);
    if let Some(spec) = node.spec.as_mut() {
        spec.taints = None;
        spec.pod_cidr = None;
        spec.pod_cidrs = None;
    }
    if let Some(status) = node.status.as_mut() {
        *status = NodeStatus {
            conditions: status.conditions.take(),
            ..Default::default()
        };
    }
}
