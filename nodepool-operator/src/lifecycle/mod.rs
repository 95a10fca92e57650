//! The end of a node and of its pods, as a kubelet and Karpenter's termination controller
//! do it, one Node per reconcile:
//! - a node whose pool is gone (or being deleted) is deleted ([`orphans`]); on a cluster
//!   with a garbage collector the owner reference does the same;
//! - a deleted node is cordoned and drained ([`drain`]: its pods evicted,
//!   PodDisruptionBudgets honoured) before its termination finalizer goes. Past the drain
//!   timeout a drain the budgets still block is shown on the Node (condition
//!   `DrainBlocked`, an event naming the budgets) and goes on; only the pool's
//!   `terminationGracePeriodSeconds`, an opt-in, deletes the pods anyway. Both clocks are
//!   the node's `deletionTimestamp`, so a restart neither resets nor shortens them;
//! - on a node whose kubelet this operator plays (the provider's [`Kubelet`]), the pods
//!   bound to it start and end as a kubelet would start and end them.
//!
//! Progress is driven by pod events (a pod gone re-runs its node's drain), not polling.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use nodepool_core::nodes::{is_ready, pool_of};
use nodepool_core::pod::BoundPod;
use operator_kit::controller::{ReconcileError, Reconciler, Runner, RunnerSettings};
use operator_kit::events::{Event as KubeEvent, EventType, Recorder};
use operator_kit::watch::hash_of;
use shared_crd::{NodePool, TERMINATION_FINALIZER};

use crate::caches::Caches;
use crate::eviction::Evictor;
use crate::provider::{Kubelet, KubeletError, Provider};

mod drain;
mod orphans;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "node-lifecycle";

pub struct Context {
    client: Client,
    recorder: Recorder,
    caches: Caches,
    /// The kubelet the provider's nodes lack, when this operator plays it.
    kubelet: Option<Arc<dyn Kubelet>>,
    evictor: Evictor,
    drain_timeout: Duration,
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        caches: Caches,
        provider: &dyn Provider,
        drain_timeout: Duration,
    ) -> Self {
        Self {
            evictor: Evictor::new(client.clone()),
            client,
            recorder,
            caches,
            kubelet: provider.kubelet(),
            drain_timeout,
        }
    }

    async fn publish(&self, node: &Node, type_: EventType, reason: &str, note: String) {
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Drain".into(),
            secondary: None,
        };
        self.recorder.publish(node, event).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("deleting orphaned node {node}: {source}")]
    OrphanDeletionFailed {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading the pool of node {node}: {source}")]
    OwnerLookupFailed {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("cordoning node {node}: {source}")]
    CordonFailed {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("evicting pod {pod}: {source}")]
    EvictionFailed {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("reporting the blocked drain on node {node}: {source}")]
    ConditionFailed {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error(transparent)]
    Kubelet(#[from] KubeletError),
    #[error("removing the termination finalizer of node {node}: {source}")]
    FinalizerRemovalFailed {
        node: String,
        #[source]
        source: kube::Error,
    },
}

impl ReconcileError for Error {
    fn category(&self) -> &'static str {
        match self {
            Error::OrphanDeletionFailed { .. } => "orphan_delete",
            Error::OwnerLookupFailed { .. } => "owner_lookup",
            Error::CordonFailed { .. } => "cordon",
            Error::EvictionFailed { .. } => "evict",
            Error::ConditionFailed { .. } => "condition",
            Error::Kubelet(e) => e.category(),
            Error::FinalizerRemovalFailed { .. } => "finalizer",
        }
    }
}

impl Reconciler for Context {
    type Object = Node;
    type Error = Error;
    const NAME: &'static str = CONTROLLER;

    async fn reconcile(&self, node: Arc<Node>) -> Result<Action, Error> {
        reconcile_node(&node, self).await
    }
}

/// The node lifecycle controller: a node, the pods bound to it (only on the pools'
/// nodes), and its pool (a pool deleted, or made anew under the same name, orphans its
/// nodes).
pub fn runner(ctx: Context, settings: &RunnerSettings) -> Runner<Context> {
    let caches = ctx.caches.clone();
    let (for_pods, for_pools) = (caches.clone(), caches.clone());
    Runner::new(ctx, &caches.nodes, node_state, settings)
        .watches(&caches.pods, pod_state, move |pod: BoundPod| {
            let node = ObjectRef::<Node>::new(pod.node()?);
            // Pods on nodes that are not this operator's are none of its business.
            for_pods
                .nodes
                .get(&node)
                .filter(|n| pool_of(n).is_some())
                .map(|_| node)
        })
        .watches(
            &caches.pools,
            |p: &NodePool| hash_of(&(&p.metadata.uid, p.metadata.deletion_timestamp.is_some())),
            move |pool: NodePool| for_pools.nodes_by_pool.get(pool.name_any().as_str()),
        )
}

/// What of a node this controller acts on.
fn node_state(node: &Node) -> u64 {
    hash_of(&(
        node.metadata.deletion_timestamp.is_some(),
        node.finalizers(),
        node.owner_references()
            .iter()
            .map(|r| &r.uid)
            .collect::<Vec<_>>(),
        node.spec.as_ref().and_then(|s| s.unschedulable),
        // Ready: the pods bound to it start.
        is_ready(node),
    ))
}

/// What of a pod: where it is and whether it is on its way out.
fn pod_state(pod: &BoundPod) -> u64 {
    hash_of(&(pod.node(), pod.metadata.deletion_timestamp.is_some()))
}

async fn reconcile_node(node: &Node, ctx: &Context) -> Result<Action, Error> {
    if pool_of(node).is_none() {
        // Foreign nodes are never adopted, drained or deleted.
        return Ok(Action::await_change());
    }
    let pods = ctx.caches.pods_on(&node.name_any());
    let kubelet = ctx.kubelet.as_deref().filter(|k| k.runs(node));
    if let Some(kubelet) = kubelet {
        kubelet.sync_pods(node, &pods).await?;
    }
    let Some(deleted_at) = node.metadata.deletion_timestamp.as_ref() else {
        orphans::delete_if_orphaned(node, ctx).await?;
        return Ok(Action::await_change());
    };
    if !node.finalizers().iter().any(|f| f == TERMINATION_FINALIZER) {
        return Ok(Action::await_change());
    }
    drain::drain(node, &pods, deleted_at, kubelet, ctx).await
}
