//! The API both operators share: the `NodePool` and `Autoscaler` custom resources
//! (group `nodepool.dev`, version `v1alpha1`), and the names both sides must agree on.
#![forbid(unsafe_code)]
// `#[kube(printcolumn(type_ = ..))]` repeats keys by design; clippy takes them for attributes.
#![allow(clippy::duplicated_attributes)]

pub mod autoscaler;
pub mod condition;
pub mod crd;
pub mod nodepool;
pub mod quantity;
pub mod time;

pub use autoscaler::{
    Autoscaler, AutoscalerSpec, AutoscalerStatus, NodePoolRef, ScalingBehavior, ScalingRules,
};
pub use condition::{Condition, ConditionStatus};
pub use nodepool::{NodeCapacity, NodePool, NodePoolSpec, NodePoolStatus, NodeTemplate};

/// API group of both kinds.
pub const API_GROUP: &str = "nodepool.dev";
/// API version of both kinds.
pub const API_VERSION: &str = "v1alpha1";

/// Label on every node of a pool; its value is the pool's name.
pub const POOL_LABEL: &str = "nodepool.dev/pool";
/// Taint the virtual provider puts on its nodes so that nothing lands there by accident.
pub const VIRTUAL_NODE_TAINT: &str = "nodepool.dev/virtual";
/// Finalizer nodepool-operator puts on each Node it creates (in the create request, so it
/// costs no write): whoever deletes the node, it is drained before it goes, as Karpenter's
/// `karpenter.sh/termination` does.
pub const TERMINATION_FINALIZER: &str = "nodepool.dev/termination";
/// The NodePool finalizer of versions before 0.2; removed from pools where it is found.
pub const LEGACY_NODEPOOL_FINALIZER: &str = "nodepool.dev/nodes";
/// Namespace of the node heartbeat Leases (what the kubelet and kwok use).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Field managers: one per operator, so server-side apply can tell their fields apart.
pub mod field_manager {
    /// Everything nodepool-operator writes: NodePool status, its condition on Autoscalers.
    pub const NODEPOOL_OPERATOR: &str = "nodepool-operator";
    /// Everything autoscaler-operator writes: NodePool `spec.replicas`, Autoscaler status.
    pub const AUTOSCALER_OPERATOR: &str = "autoscaler-operator";
    /// nodepool-operator's record of its last scaling (`status.lastScaleTime`). A manager of
    /// its own, sent only by the reconcile that scaled: the main manager's later applies
    /// leave the field out and, since they never owned it, do not remove it.
    pub const NODEPOOL_OPERATOR_SCALING: &str = "nodepool-operator-scaling";
    /// autoscaler-operator's record of its last scaling (`lastScaleTime`, `lastDecision`).
    pub const AUTOSCALER_OPERATOR_SCALING: &str = "autoscaler-operator-scaling";
}

/// Condition types. Each is owned by exactly one operator.
pub mod condition_type {
    /// NodePool: all desired nodes exist and are Ready (nodepool-operator).
    pub const READY: &str = "Ready";
    /// NodePool: nodes are being added or removed (nodepool-operator).
    pub const SCALING: &str = "Scaling";
    /// Autoscaler: the autoscaler is computing recommendations (autoscaler-operator).
    pub const ACTIVE: &str = "Active";
    /// Autoscaler: the target can be scaled (autoscaler-operator).
    pub const ABLE_TO_SCALE: &str = "AbleToScale";
    /// Autoscaler: the desired size was clamped or held back (autoscaler-operator).
    pub const SCALING_LIMITED: &str = "ScalingLimited";
    /// Autoscaler (autoscaler-operator): whether every pod that wants the pool fits on
    /// one of its nodes. False (`PodTooLarge`) names the pods no number of nodes can run.
    pub const PODS_FIT: &str = "PodsFit";
    /// Autoscaler: whether the target pool can deliver nodes; written by nodepool-operator
    /// into the Autoscaler's status, next to the autoscaler's own conditions.
    pub const NODEPOOL_READY: &str = "NodePoolReady";
}

/// Condition reasons (CamelCase, as Kubernetes expects).
pub mod reason {
    pub const SCALING_UP: &str = "ScalingUp";
    pub const SCALING_DOWN: &str = "ScalingDown";
    pub const STABLE: &str = "Stable";
    pub const NODES_READY: &str = "NodesReady";
    pub const NODES_NOT_READY: &str = "NodesNotReady";
    pub const AT_QUOTA: &str = "AtQuota";
    pub const PROVIDER_ERROR: &str = "ProviderError";
    pub const DELETING: &str = "Deleting";
    pub const NOT_FOUND: &str = "NotFound";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const PAUSED: &str = "Paused";
    pub const SCALING_LIMITED: &str = "ScalingLimited";
    /// Autoscaler (autoscaler-operator): whether every pod that wants the pool fits on
    /// one of its nodes. False (`PodTooLarge`) names the pods no number of nodes can run.
    pub const PODS_FIT: &str = "PodsFit";
    pub const WITHIN_BOUNDS: &str = "WithinBounds";
    pub const READY: &str = "Ready";
}
