//! Autoscaler: sizes one NodePool from the demand of the pods that target it.
//! autoscaler-operator owns its status except the `NodePoolReady` condition.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use crate::condition::{self, Condition};

/// Sizes the NodePool named by `nodePoolRef` between `minReplicas` and `maxReplicas`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "nodepool.dev",
    version = "v1alpha1",
    kind = "Autoscaler",
    doc = "Sizes one NodePool from the demand of the pods that target it.",
    plural = "autoscalers",
    shortname = "as",
    shortname = "nas",
    category = "nodepools",
    status = "AutoscalerStatus",
    derive = "PartialEq",
    printcolumn(name = "Pool", type_ = "string", json_path = ".spec.nodePoolRef.name"),
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minReplicas"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxReplicas"),
    printcolumn(
        name = "Desired",
        type_ = "integer",
        json_path = ".status.desiredReplicas"
    ),
    printcolumn(
        name = "Target",
        type_ = "integer",
        json_path = ".spec.targetUtilization",
        description = "target utilization, percent"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
// Servers without CEL (before 1.25) drop this rule; the operator checks it too.
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas"))]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerSpec {
    /// The NodePool to size.
    pub node_pool_ref: NodePoolRef,
    /// Fewest nodes the pool may have.
    #[schemars(range(min = 0, max = crate::MAX_REPLICAS))]
    pub min_replicas: i32,
    /// Most nodes the pool may have.
    #[schemars(range(min = 1, max = crate::MAX_REPLICAS))]
    pub max_replicas: i32,
    /// Percent of a node's capacity the pods should use.
    #[serde(default = "default_target_utilization")]
    #[schemars(range(min = 1, max = 100))]
    pub target_utilization: i32,
    /// How fast to scale up and down.
    #[serde(default)]
    pub behavior: ScalingBehavior,
    /// Stop writing the pool's size while true.
    #[serde(default)]
    pub paused: bool,
}

fn default_target_utilization() -> i32 {
    80
}

/// A reference to a NodePool by name (NodePools are cluster-scoped).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Scale-up and scale-down rules, as in the HPA's `behavior` (`autoscaling/v2`): each
/// direction's fields default one by one to the HPA's.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingBehavior {
    /// Default: no stabilization window; per 15 s, 4 nodes or 100% more, whichever is more.
    #[serde(default)]
    pub scale_up: ScalingRules,
    /// Default: a 300 s stabilization window; per 15 s, down to minReplicas (100%).
    #[serde(default)]
    pub scale_down: ScalingRules,
}

/// One direction of scaling, as the HPA's `HPAScalingRules`. Every field is optional.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRules {
    /// Seconds of recommendations to consider before changing the size in this direction
    /// (default 0 up, 300 down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_window_seconds: Option<i32>,
    /// Which policy wins when there are several: `Max` (the default: the largest change),
    /// `Min` (the smallest), or `Disabled` (no change in this direction).
    // Not an `Option`: schemars would put `null` in the enum, which a 1.20 server refuses.
    #[serde(default)]
    pub select_policy: SelectPolicy,
    /// How much the size may change per period. Empty: the HPA's defaults.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<ScalingPolicy>,
    /// Deprecated shorthand, kept for v1alpha1 objects: `maxStep: n` is
    /// `policies: [{type: Nodes, value: n, periodSeconds: 15}]`. Not with `policies`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 5000))]
    pub max_step: Option<i32>,
}

impl ScalingRules {
    /// Rules with only a stabilization window; the rest defaults.
    pub fn window(seconds: i32) -> Self {
        Self {
            stabilization_window_seconds: Some(seconds),
            ..Default::default()
        }
    }

    /// These rules with one more policy.
    pub fn with_policy(mut self, type_: PolicyType, value: i32, period_seconds: i32) -> Self {
        self.policies.push(ScalingPolicy {
            type_,
            value,
            period_seconds,
        });
        self
    }
}

/// One HPA scaling policy: at most `value` nodes (or percent of the size at the start of
/// the period) of change per `periodSeconds`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingPolicy {
    #[serde(rename = "type")]
    pub type_: PolicyType,
    #[schemars(range(min = 1))]
    pub value: i32,
    #[schemars(range(min = 1, max = 1800))]
    pub period_seconds: i32,
}

/// What a policy's value counts (the HPA's `Pods` is `Nodes` here).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PolicyType {
    Nodes,
    Percent,
}

/// Which policy wins.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum SelectPolicy {
    #[default]
    Max,
    Min,
    Disabled,
}

/// A change of the pool's size this autoscaler made, as its status records it, so that a
/// restart or a new leader counts it against the policies' periods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScaleEvent {
    pub time: Time,
    pub from: i32,
    pub to: i32,
}

/// What autoscaler-operator decided (plus nodepool-operator's `NodePoolReady` condition).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalerStatus {
    /// The size this autoscaler wants for the pool now. (The pool's own size is in its
    /// status: `kubectl get nodepools`.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// When the pool's size was last changed by this autoscaler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// Why the pool's size was last changed, e.g. "cpu demand 5.5 / (2 x 80%) -> 4 nodes".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<String>,
    /// The size changes within the longest policy period, oldest first: what the
    /// policies count, read back after a restart. Recorded before the pool is written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scale_events: Vec<ScaleEvent>,
    /// The `.metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Active`, `AbleToScale`, `ScalingLimited` (autoscaler-operator) and
    /// `NodePoolReady` (nodepool-operator).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "condition::list_map_schema")]
    pub conditions: Vec<Condition>,
}
