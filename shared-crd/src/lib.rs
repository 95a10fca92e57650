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
pub mod view;

pub use autoscaler::{
    Autoscaler, AutoscalerSpec, AutoscalerStatus, NodePoolRef, PolicyType, ScaleEvent,
    ScalingBehavior, ScalingPolicy, ScalingRules, SelectPolicy,
};
pub use condition::{Condition, ConditionStatus};
pub use nodepool::{
    Disruption, DisruptionBudget, DisruptionReason, NodeCapacity, NodePool, NodePoolSpec,
    NodePoolStatus, NodeTemplate,
};

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
/// Annotation on each node of a pool: the hash of the template it was made from (as
/// `pod-template-hash` is for a ReplicaSet's pods). A node whose hash is not the pool's
/// current one is Drifted.
pub const TEMPLATE_HASH_ANNOTATION: &str = "nodepool.dev/template-hash";
/// `"true"` on a pod or a node: keeps the node out of every voluntary disruption
/// (Drifted, Expired, ScaleDown) while the pod runs (Karpenter's `karpenter.sh/do-not-disrupt`).
pub const DO_NOT_DISRUPT_ANNOTATION: &str = "nodepool.dev/do-not-disrupt";
/// Fault injection, as kwok's stages do it: `NotReady` on a Node stops its heartbeats
/// (Lease and status), so the node lifecycle controller marks it NotReady, then Unknown.
/// Removing it brings the node back.
pub const FAULT_ANNOTATION: &str = "nodepool.dev/fault";
/// The one value of [`FAULT_ANNOTATION`].
pub const FAULT_NOT_READY: &str = "NotReady";
/// The most nodes one NodePool may ask for, and an Autoscaler give it: the Kubernetes
/// scalability envelope (5,000 nodes per cluster).
pub const MAX_REPLICAS: i32 = 5000;
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
    /// NodePool: nodes are being replaced or removed within the disruption budgets, and
    /// what holds the rest back (nodepool-operator).
    pub const DISRUPTING: &str = "Disrupting";
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

/// Condition types of the Nodes nodepool-operator makes.
pub mod node_condition {
    /// A drain that PodDisruptionBudgets block past the drain timeout.
    pub const DRAIN_BLOCKED: &str = "DrainBlocked";
}

/// Condition reasons (CamelCase, as Kubernetes expects).
pub mod reason {
    // NodePool `Ready` and `Scaling` (nodepool-operator).
    pub const NODES_READY: &str = "NodesReady";
    pub const NODES_NOT_READY: &str = "NodesNotReady";
    pub const SCALING_UP: &str = "ScalingUp";
    pub const SCALING_DOWN: &str = "ScalingDown";
    pub const STABLE: &str = "Stable";
    /// `--max-nodes` holds part of the pool back (also carried to `NodePoolReady`).
    pub const AT_QUOTA: &str = "AtQuota";
    pub const PROVIDER_ERROR: &str = "ProviderError";
    /// The object's spec cannot be acted on; the message says which field and why.
    pub const INVALID_SPEC: &str = "InvalidSpec";

    // NodePool `Disrupting` (nodepool-operator). While True, the reason is the first
    // disrupted node's: `Unhealthy`, `Expired`, `Drifted` or `ScaleDown`.
    /// Every node is on the current template, healthy and within its lifetime.
    pub const UP_TO_DATE: &str = "UpToDate";
    /// Nodes wait to be disrupted and the budgets allow none of them now.
    pub const BUDGET_EXHAUSTED: &str = "BudgetExhausted";
    /// Nodes wait to be disrupted and `do-not-disrupt` holds each of them.
    pub const DO_NOT_DISRUPT: &str = "DoNotDisrupt";
    /// More than 20% of the pool's nodes are unhealthy: repair waits.
    pub const REPAIR_BLOCKED: &str = "RepairBlocked";

    // Autoscaler `NodePoolReady` (nodepool-operator).
    pub const READY: &str = "Ready";
    pub const NOT_FOUND: &str = "NotFound";
    pub const DELETING: &str = "Deleting";

    // Autoscaler `Active`, `AbleToScale`, `ScalingLimited`, `PodsFit` (autoscaler-operator).
    pub const RECOMMENDING: &str = "Recommending";
    pub const PAUSED: &str = "Paused";
    pub const READY_FOR_NEW_SCALE: &str = "ReadyForNewScale";
    /// Another Autoscaler, older (then first by name), targets the same pool.
    pub const POOL_ALREADY_TARGETED: &str = "PoolAlreadyTargeted";
    /// The target pool's template cannot be read (its capacity).
    pub const INVALID_NODE_POOL: &str = "InvalidNodePool";
    pub const WITHIN_BOUNDS: &str = "WithinBounds";
    /// The decision is above `maxReplicas`.
    pub const TOO_MANY_REPLICAS: &str = "TooManyReplicas";
    /// The decision is below `minReplicas`.
    pub const TOO_FEW_REPLICAS: &str = "TooFewReplicas";
    /// The scale-up policies hold the size back for now (the HPA's reason).
    pub const SCALE_UP_LIMIT: &str = "ScaleUpLimit";
    /// The scale-down policies hold the size back for now (the HPA's reason).
    pub const SCALE_DOWN_LIMIT: &str = "ScaleDownLimit";
    pub const ALL_FIT: &str = "AllFit";
    /// A pod asks more of one resource than a node of the pool offers.
    pub const POD_TOO_LARGE: &str = "PodTooLarge";
    /// A pod names the pool, but its node selector, required node affinity or
    /// tolerations rule the pool's nodes out.
    pub const POD_DOES_NOT_MATCH: &str = "PodDoesNotMatch";

    // Node `DrainBlocked` (nodepool-operator).
    pub const DISRUPTION_BUDGET: &str = "DisruptionBudget";
}

/// Reasons of the events the operators publish.
pub mod event_reason {
    pub const SCALED_UP: &str = "ScaledUp";
    pub const SCALED_DOWN: &str = "ScaledDown";
    /// Autoscaler: the decision was clamped or held back (the condition `ScalingLimited`).
    pub const SCALING_LIMITED: &str = "ScalingLimited";
    /// Node: its drain is blocked by PodDisruptionBudgets past the drain timeout.
    pub const DRAIN_BLOCKED: &str = "DrainBlocked";
    /// Node: the pool's `terminationGracePeriodSeconds` passed; its pods are deleted.
    pub const NODE_DRAIN_FORCED: &str = "NodeDrainForced";
    /// NodePool: a node is being replaced or removed; the note names it and the reason.
    pub const DISRUPTING: &str = "Disrupting";
    /// NodePool: disruption is newly held back (a budget, do-not-disrupt, the repair stop).
    pub const DISRUPTION_BLOCKED: &str = "DisruptionBlocked";
}
