//! Where nodes come from: a [`Provider`] makes and removes the machines behind a pool's
//! nodes. The pool controller asks it for nodes; the lifecycle controller drains what it
//! removes. The one provider today is [`virtual_kubelet`]: Node objects with no machine
//! behind them, whose kubelet this operator plays too ([`Kubelet`]). A provider whose
//! machines run a kubelet of their own (a cloud's) implements [`Provider`] alone.
use std::sync::Arc;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::Store;
use nodepool_core::pod::BoundPod;
use shared_crd::NodePool;

pub mod virtual_kubelet;

pub use virtual_kubelet::{VirtualProvider, VirtualSettings};

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("creating node {name}: {source}")]
    CreateFailed {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting node {name}: {source}")]
    DeleteFailed {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What a create did.
#[derive(Debug)]
pub enum Created {
    /// A new node, as the server stored it.
    New(Box<Node>),
    /// A node of that name exists already (a cache behind our own create, or a slot
    /// still held by a terminating node): nothing was created.
    AlreadyExists,
}

/// A source of machines for a pool.
pub trait Provider: Send + Sync {
    /// Starts a machine for `pool` that registers as node `node_name`.
    fn create<'a>(
        &'a self,
        pool: &'a NodePool,
        node_name: &'a str,
    ) -> BoxFuture<'a, Result<Created, ProviderError>>;

    /// Starts the removal of `node`: it is drained (the termination finalizer), then goes.
    fn delete<'a>(&'a self, node: &'a Node) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// The kubelet this operator plays for the provider's nodes, when they have none of
    /// their own.
    fn kubelet(&self) -> Option<Arc<dyn Kubelet>> {
        None
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KubeletError {
    #[error("reporting pod {pod} running: {source}")]
    PodStartFailed {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("finishing pod {pod}: {source}")]
    PodFinishFailed {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting the Lease of node {node}: {source}")]
    LeaseDeletionFailed {
        node: String,
        #[source]
        source: kube::Error,
    },
}

impl KubeletError {
    /// Bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            KubeletError::PodStartFailed { .. } => "pod_start",
            KubeletError::PodFinishFailed { .. } => "pod_finish",
            KubeletError::LeaseDeletionFailed { .. } => "lease_delete",
        }
    }
}

/// A kubelet's part for nodes that have no kubelet: heartbeats, and the start and end of
/// the pods bound to them.
pub trait Kubelet: Send + Sync {
    /// Whether this kubelet runs `node`.
    fn runs(&self, node: &Node) -> bool;

    /// What a kubelet does for the pods bound to `node`: those being deleted finish, and on
    /// a Ready node that is not going away those not started yet run.
    fn sync_pods<'a>(
        &'a self,
        node: &'a Node,
        pods: &'a [Arc<BoundPod>],
    ) -> BoxFuture<'a, Result<(), KubeletError>>;

    /// A kubelet's last acts on a drained node: nothing may run on it any more (DaemonSet
    /// and mirror pods go last), and its heartbeat Lease goes.
    fn release<'a>(
        &'a self,
        node: &'a Node,
        pods: &'a [Arc<BoundPod>],
    ) -> BoxFuture<'a, Result<(), KubeletError>>;

    /// The heartbeats of the nodes of `nodes` this kubelet runs, until the process ends.
    fn heartbeats(&self, nodes: Store<Node>) -> BoxFuture<'static, ()>;
}
