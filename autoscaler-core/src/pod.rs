//! The Pod as the autoscaler reads it.
//!
//! The autoscaler caches every unfinished pod of the cluster, and reads of each only what
//! scheduling decides by and what demand is made of: the node it is bound to, the scheduler's
//! verdict (`PodScheduled`), its node selector, required node affinity and tolerations, its
//! containers' cpu and memory requests (summed as they are read), its phase and its
//! deletion. `PodView` is a
//! `Pod` narrowed to those fields: the watch deserialises into it, so serde skips the rest
//! of the JSON and nothing else is ever allocated or cached. A k8s-openapi `Pod`, even with
//! every field but those emptied, keeps a slot for every optional field of `PodSpec`,
//! `Container` and `PodStatus`, and was most of the autoscaler's heap at scale
//! (docs/scale.md).
//!
//! It is still a watch of `pods` (`/api/v1/pods`): [`kube::Resource`] only names where the
//! objects live. Writing a `PodView` back would drop every field it does not hold, so it is
//! never written: nothing but a watch uses it.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelector, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// A Pod, narrowed to what demand is made of. Read-only: see the module documentation.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct PodView {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodViewSpec,
    #[serde(default)]
    pub status: PodViewStatus,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodViewSpec {
    /// What the containers request, summed as they are read (see [`Requests`]).
    #[serde(
        rename(deserialize = "containers"),
        default,
        deserialize_with = "summed_requests"
    )]
    pub requests: Requests,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<Pairs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<AffinityView>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// The node the scheduler bound the pod to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

/// What a pod's containers request, summed: CPU in cores, memory in bytes (init
/// containers are not counted, as the scheduler counts the larger of the two and demand
/// counts the containers). Summed once, as the pod is read: a cache of the containers'
/// `requests` maps held a vector and a map per pod, and every decision parsed them again.
/// A quantity that does not parse counts as nothing, as the API server never lets one in.
#[derive(Clone, Copy, Debug, Default, Serialize, PartialEq)]
pub struct Requests {
    pub cpu: f64,
    pub memory: f64,
}

/// The containers as [`summed_requests`] reads them: their cpu and memory requests only.
#[derive(Deserialize)]
struct ContainerRequests {
    #[serde(default)]
    resources: ResourceRequests,
}

#[derive(Default, Deserialize)]
struct ResourceRequests {
    #[serde(default)]
    requests: Option<CpuMemory>,
}

#[derive(Deserialize)]
struct CpuMemory {
    #[serde(default)]
    cpu: Option<Quantity>,
    #[serde(default)]
    memory: Option<Quantity>,
}

fn summed_requests<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Requests, D::Error> {
    let containers = Vec::<ContainerRequests>::deserialize(d)?;
    let parse = |q: &Option<Quantity>| {
        q.as_ref()
            .and_then(|q| shared_crd::quantity::parse(&q.0))
            .unwrap_or(0.0)
    };
    let mut sum = Requests::default();
    for r in containers
        .iter()
        .filter_map(|c| c.resources.requests.as_ref())
    {
        sum.cpu += parse(&r.cpu);
        sum.memory += parse(&r.memory);
    }
    Ok(sum)
}

/// A string map held as a sorted slice of pairs: a node selector has one or two entries,
/// and a `BTreeMap` of one allocates a node for eleven. Reads as a map; serialises as one.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pairs(Box<[(String, String)]>);

impl Pairs {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.0[i].1.as_str())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Pairs {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(pairs: I) -> Self {
        let map: BTreeMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self(map.into_iter().collect())
    }
}

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .collect())
    }
}

impl Serialize for Pairs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

/// The required node affinity; preferred terms and pod (anti-)affinity are not read.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AffinityView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<NodeAffinityView>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct NodeAffinityView {
    #[serde(
        rename = "requiredDuringSchedulingIgnoredDuringExecution",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub required: Option<NodeSelector>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct PodViewStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Only `PodScheduled` is kept (see [`trim`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PodConditionView>,
}

/// A pod condition without its times and message.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct PodConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl PodView {
    /// The scheduler found no node for the pod: `PodScheduled=False`, reason
    /// `Unschedulable`. Such a pod, unbound, is what cluster-autoscaler and Karpenter
    /// provision for.
    pub fn is_unschedulable(&self) -> bool {
        self.spec.node_name.is_none()
            && self.status.conditions.iter().any(|c| {
                c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
            })
    }
}

shared_crd::core_v1_view!(PodView, "Pod", "pods", k8s_openapi::NamespaceResourceScope);

/// Drops the metadata no decision reads (labels, annotations, owners, managed fields):
/// the watch cache keeps name, namespace, uid, resourceVersion and deletion. Of the
/// conditions, only `PodScheduled` is kept.
pub fn trim(pod: &mut PodView) {
    pod.status.conditions.retain(|c| c.type_ == "PodScheduled");
    let meta = &mut pod.metadata;
    meta.managed_fields = None;
    meta.labels = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
    meta.generate_name = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube_core::Resource;
    use serde_json::json;

    /// A full Pod, as the API server sends it.
    fn full_pod() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1",
                "resourceVersion": "7", "labels": {"app": "web"},
                "annotations": {"a": "b"}, "generateName": "web-",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "web", "uid": "rs"}]},
            "spec": {
                "nodeSelector": {"nodepool.dev/pool": "a"},
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                            {"matchExpressions": [{"key": "nodepool.dev/pool", "operator": "In", "values": ["a"]}]}]},
                        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1,
                            "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["x"]}]}}]},
                    "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": []}},
                "containers": [
                    {"name": "app", "image": "web:1", "env": [{"name": "A", "value": "1"}],
                     "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1"}}},
                    {"name": "sidecar", "image": "proxy:1",
                     "resources": {"requests": {"cpu": "250m", "memory": "64Mi", "example.com/gpu": "1"}}},
                    {"name": "idle", "image": "idle:1"}],
                "volumes": [{"name": "data", "emptyDir": {}}],
                "tolerations": [{"key": "k", "operator": "Exists"}]
            },
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/3 nodes are available: 3 Insufficient cpu.",
                 "lastTransitionTime": "2026-11-24T12:00:00Z"},
                {"type": "Initialized", "status": "True"}]}
        })
    }

    #[test]
    fn a_full_pod_reads_into_the_view_with_only_what_demand_is_made_of() {
        let mut view: PodView = serde_json::from_value(full_pod()).unwrap();
        trim(&mut view);
        assert_eq!(view.metadata.name.as_deref(), Some("web-1"));
        assert_eq!(view.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(view.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(view.metadata.labels, None);
        assert_eq!(view.metadata.owner_references, None);
        // The containers' cpu and memory requests, summed (the idle one asks nothing); limits
        // and other resources are not read.
        assert_eq!(
            view.spec.requests,
            Requests {
                cpu: 0.75,
                memory: 1024.0 * 1024.0 * 1024.0 + 64.0 * 1024.0 * 1024.0
            }
        );
        assert_eq!(
            view.spec
                .node_selector
                .as_ref()
                .unwrap()
                .get("nodepool.dev/pool"),
            Some("a")
        );
        let required = view
            .spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| n.required.as_ref())
            .unwrap();
        assert_eq!(required.node_selector_terms.len(), 1);
        assert_eq!(view.status.phase.as_deref(), Some("Pending"));
        assert!(view.is_unschedulable());
        assert_eq!(
            view.status.conditions,
            [PodConditionView {
                type_: "PodScheduled".into(),
                status: "False".into(),
                reason: Some("Unschedulable".into()),
            }]
        );
        // Nothing else came along: the view serialises to exactly these fields.
        assert_eq!(
            serde_json::to_value(&view.spec).unwrap(),
            json!({
                "requests": {"cpu": 0.75, "memory": 1140850688.0},
                "nodeSelector": {"nodepool.dev/pool": "a"},
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                    {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "nodepool.dev/pool", "operator": "In", "values": ["a"]}]}]}}},
                "tolerations": [{"key": "k", "operator": "Exists"}]
            })
        );
    }

    #[test]
    fn only_an_unbound_pod_the_scheduler_refused_is_unschedulable() {
        let with = |node: Option<&str>, status: &str, reason: &str| {
            let mut view: PodView = serde_json::from_value(full_pod()).unwrap();
            view.spec.node_name = node.map(str::to_owned);
            view.status.conditions[0].status = status.into();
            view.status.conditions[0].reason = Some(reason.into());
            view.is_unschedulable()
        };
        assert!(with(None, "False", "Unschedulable"));
        assert!(!with(Some("n1"), "False", "Unschedulable"));
        assert!(!with(None, "True", ""));
        // Refused for another reason (a volume binding, a gate): no node would help.
        assert!(!with(None, "False", "SchedulerError"));
        let mut fresh: PodView = serde_json::from_value(full_pod()).unwrap();
        fresh.status.conditions.clear();
        assert!(!fresh.is_unschedulable(), "not seen by the scheduler yet");
    }

    #[test]
    fn it_names_the_same_resource_as_a_pod() {
        assert_eq!(
            PodView::url_path(&(), Some("shop")),
            Pod::url_path(&(), Some("shop"))
        );
        assert_eq!(PodView::api_version(&()), "v1");
        assert_eq!(PodView::kind(&()), "Pod");
    }

    #[test]
    fn the_view_is_a_fraction_of_a_pod() {
        // The struct alone, before any string or map: what every cached object costs.
        let pod = std::mem::size_of::<Pod>()
            + std::mem::size_of::<k8s_openapi::api::core::v1::Container>();
        let view = std::mem::size_of::<PodView>();
        assert!(view * 3 < pod, "view {view} B, pod {pod} B");
    }
}
