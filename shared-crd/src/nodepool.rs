//! NodePool: a pool of identical nodes with a desired size. nodepool-operator owns its
//! status; autoscaler-operator (or a person, or `kubectl scale`) writes `spec.replicas`.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::condition::{self, Condition};

/// A pool of nodes that nodepool-operator keeps at `replicas`.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "nodepool.dev",
    version = "v1alpha1",
    kind = "NodePool",
    doc = "A pool of identical nodes that nodepool-operator keeps at spec.replicas.",
    plural = "nodepools",
    shortname = "np",
    category = "nodepools",
    status = "NodePoolStatus",
    derive = "PartialEq",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Current", type_ = "integer", json_path = ".status.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Up-to-date",
        type_ = "integer",
        json_path = ".status.updatedReplicas",
        description = "nodes on the current template"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolSpec {
    /// Desired number of nodes.
    #[schemars(range(min = 0, max = crate::MAX_REPLICAS))]
    pub replicas: i32,
    /// What every node of the pool looks like. A node made from an earlier template is
    /// Drifted, and is replaced within the disruption budgets.
    pub template: NodeTemplate,
    /// How the pool's nodes may be replaced or removed: repair of unhealthy nodes, and the
    /// budgets that bound how many go at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disruption: Option<Disruption>,
}

/// A duration as Go writes it, in whole hours, minutes and seconds (`"720h"`, `"1h30m"`,
/// `"40s"`), or `"Never"`.
fn duration_or_never(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "pattern": "^(([0-9]+(s|m|h))+|Never)$",
        "description": "A duration such as \"720h\", \"1h30m\" or \"40s\", or \"Never\"."
    })
}

/// How a pool's nodes are disrupted: replaced (Drifted, Expired, Unhealthy) or removed
/// (ScaleDown), as Karpenter's `spec.disruption` does.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Disruption {
    /// How long a node may be NotReady or Unknown before it is Unhealthy and replaced
    /// (default `"10m"`; `"Never"` turns repair off). Repair stops while more than 20% of
    /// the pool's nodes, rounded up, are unhealthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_or_never")]
    pub repair_after: Option<String>,
    /// At most this many of the pool's nodes are disrupted at once; the strictest active
    /// budget wins. None given: one budget of `nodes: "10%"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<DisruptionBudget>,
}

/// One disruption budget.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisruptionBudget {
    /// Nodes that may be disrupted at once: a number (`"2"`) or a percentage of the
    /// pool's nodes, rounded up (`"10%"`).
    #[schemars(regex(pattern = r"^((100|[0-9]{1,2})%|[0-9]+)$"))]
    pub nodes: String,
    /// The reasons this budget bounds; all of them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<DisruptionReason>,
    /// A cron schedule (five fields, or `@daily`, `@hourly`...) at which the budget becomes
    /// active, for `duration`. Unset: always active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// How long the budget stays active after each time of its schedule (`"8h"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^([0-9]+(s|m|h))+$"))]
    pub duration: Option<String>,
    /// The IANA time zone the schedule is read in (`"Europe/Berlin"`); UTC when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

/// Why a node is disrupted.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
pub enum DisruptionReason {
    /// NotReady or Unknown for `repairAfter`: replaced.
    Unhealthy,
    /// Older than `expireAfter`: replaced.
    Expired,
    /// Made from an earlier template: replaced.
    Drifted,
    /// `spec.replicas` went down: removed.
    ScaleDown,
}

impl DisruptionReason {
    pub const ALL: [DisruptionReason; 4] = [
        DisruptionReason::Unhealthy,
        DisruptionReason::Expired,
        DisruptionReason::Drifted,
        DisruptionReason::ScaleDown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DisruptionReason::Unhealthy => "Unhealthy",
            DisruptionReason::Expired => "Expired",
            DisruptionReason::Drifted => "Drifted",
            DisruptionReason::ScaleDown => "ScaleDown",
        }
    }

    /// Whether `do-not-disrupt` holds it back: every reason but Unhealthy.
    pub fn is_voluntary(self) -> bool {
        self != DisruptionReason::Unhealthy
    }
}

impl std::fmt::Display for DisruptionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The shape of each node in a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTemplate {
    /// Labels put on each node, besides `nodepool.dev/pool`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Taints put on each node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Capacity (and allocatable) of each node.
    pub capacity: NodeCapacity,
    /// Most seconds a node's drain may take, from its deletion, before the pods still on
    /// it are deleted anyway, bypassing PodDisruptionBudgets (Karpenter's
    /// `terminationGracePeriod`). Unset: a drain waits for the budgets as long as it takes,
    /// and a blocked one is reported on the Node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub termination_grace_period_seconds: Option<i64>,
    /// How long a node lives before it is Expired and replaced (`"720h"`), or `"Never"`,
    /// the default. Not part of the template hash: changing it drifts no node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_or_never")]
    pub expire_after: Option<String>,
}

/// Resources one node offers, as Kubernetes quantities.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeCapacity {
    /// CPU cores, e.g. `"2"` or `"1500m"`.
    #[schemars(schema_with = "quantity_string")]
    pub cpu: Quantity,
    /// Memory, e.g. `"8Gi"`.
    #[schemars(schema_with = "quantity_string")]
    pub memory: Quantity,
    /// Maximum pods, e.g. `"110"`.
    #[schemars(schema_with = "quantity_string")]
    pub pods: Quantity,
}

/// A quantity as a string. Not `x-kubernetes-int-or-string`: one such field makes a
/// 1.20 API server build no server-side-apply model for the whole kind, and then every
/// list of it is atomic, so one field manager's conditions replace another's (the test
/// `two_field_managers_each_own_their_condition_on_a_nodepool` shows it).
fn quantity_string(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "description": "A Kubernetes quantity, as a string: \"2\", \"1500m\", \"8Gi\"."
    })
}

impl Default for NodeCapacity {
    fn default() -> Self {
        Self {
            cpu: Quantity("2".into()),
            memory: Quantity("8Gi".into()),
            pods: Quantity("110".into()),
        }
    }
}

/// A node's capacity as plain numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CapacityValues {
    /// CPU cores.
    pub cpu: f64,
    /// Bytes.
    pub memory: f64,
    pub pods: f64,
}

impl NodeCapacity {
    /// The quantities as numbers; the error names the field that is not a positive
    /// quantity (`spec.template.capacity.cpu: ...`).
    pub fn values(&self) -> Result<CapacityValues, String> {
        let parse = |field: &str, q: &Quantity| {
            let value = crate::quantity::parse(&q.0).ok_or_else(|| {
                format!(
                    "spec.template.capacity.{field}: {:?} is not a quantity",
                    q.0
                )
            })?;
            if value <= 0.0 {
                return Err(format!(
                    "spec.template.capacity.{field}: must be positive, got {:?}",
                    q.0
                ));
            }
            Ok(value)
        };
        Ok(CapacityValues {
            cpu: parse("cpu", &self.cpu)?,
            memory: parse("memory", &self.memory)?,
            pods: parse("pods", &self.pods)?,
        })
    }
}

/// What nodepool-operator observed, written through the status subresource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodePoolStatus {
    /// Nodes of the pool that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Nodes of the pool that are Ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Nodes of the pool made from the current template.
    #[serde(default)]
    pub updated_replicas: i32,
    /// Label selector of the pool's nodes, for the scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The `.metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When a node was last added or removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// `Ready`, `Scaling` and `Disrupting` (nodepool-operator), and any other manager's own.
    // No schema default: a 1.20 server treats a list-map with a default as atomic, and
    // one manager's apply then replaces every other manager's conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "condition::list_map_schema")]
    pub conditions: Vec<Condition>,
}

impl NodePool {
    /// The label selector (`nodepool.dev/pool=<name>`) that matches this pool's nodes.
    pub fn node_selector(name: &str) -> String {
        format!("{}={}", crate::POOL_LABEL, name)
    }

    /// The labels each node of this pool carries, `kubernetes.io/hostname` aside: the
    /// template's, the pool label, and `type: virtual`. nodepool-operator puts them on the
    /// nodes it makes; the autoscaler matches pending pods against them before the pool has
    /// a node.
    pub fn node_labels(&self) -> BTreeMap<String, String> {
        let mut labels = self.spec.template.labels.clone();
        labels.insert(
            crate::POOL_LABEL.into(),
            self.metadata.name.clone().unwrap_or_default(),
        );
        labels.insert("type".into(), "virtual".into());
        labels
    }

    /// The taints each node of this pool carries: the template's, and the virtual-node
    /// taint `nodepool.dev/virtual=true:NoSchedule` when `virtual_taint` (nodepool-operator's
    /// `--taint-nodes`, on by default) and the template has none of that key.
    pub fn node_taints(&self, virtual_taint: bool) -> Vec<Taint> {
        let mut taints = self.spec.template.taints.clone();
        if virtual_taint && !taints.iter().any(|t| t.key == crate::VIRTUAL_NODE_TAINT) {
            taints.push(Taint {
                key: crate::VIRTUAL_NODE_TAINT.into(),
                value: Some("true".into()),
                effect: "NoSchedule".into(),
                time_added: None,
            });
        }
        taints
    }
}

/// The order in which a pool's surplus nodes are removed, first to last: not Ready before
/// Ready, then fewest pods, then newest (the one that has had the least time to become
/// useful), then by name. nodepool-operator removes nodes in this order; the autoscaler
/// checks, before it shrinks a pool, that the pods of the nodes this order picks fit on the
/// nodes that stay.
pub fn removal_order(
    ready: bool,
    pods: usize,
    created_seconds: i64,
    name: &str,
) -> (
    bool,
    usize,
    std::cmp::Reverse<i64>,
    std::cmp::Reverse<String>,
) {
    use std::cmp::Reverse;
    (
        ready,
        pods,
        Reverse(created_seconds),
        Reverse(name.to_owned()),
    )
}
