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
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: i32,
    /// Most nodes the pool may have.
    #[schemars(range(min = 1, max = 1000))]
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

/// Scale-up and scale-down rules, as in the HPA's `behavior`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingBehavior {
    #[serde(default = "ScalingRules::default_up")]
    pub scale_up: ScalingRules,
    #[serde(default = "ScalingRules::default_down")]
    pub scale_down: ScalingRules,
}

impl Default for ScalingBehavior {
    fn default() -> Self {
        Self {
            scale_up: ScalingRules::default_up(),
            scale_down: ScalingRules::default_down(),
        }
    }
}

/// One direction of scaling.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingRules {
    /// Seconds of recommendations to consider before changing the size in this direction.
    #[schemars(range(min = 0, max = 3600))]
    pub stabilization_window_seconds: i32,
    /// Most nodes added (or removed) by one decision.
    #[schemars(range(min = 1, max = 1000))]
    pub max_step: i32,
}

impl ScalingRules {
    /// Scale up at once, a few nodes per step.
    pub fn default_up() -> Self {
        Self {
            stabilization_window_seconds: 0,
            max_step: 4,
        }
    }

    /// Scale down after demand has stayed low for a while, one node per step.
    pub fn default_down() -> Self {
        Self {
            stabilization_window_seconds: 60,
            max_step: 1,
        }
    }
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
    /// The `.metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Active`, `AbleToScale`, `ScalingLimited` (autoscaler-operator) and
    /// `NodePoolReady` (nodepool-operator).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "condition::list_map_schema")]
    pub conditions: Vec<Condition>,
}
