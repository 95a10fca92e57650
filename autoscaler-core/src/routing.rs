//! Which pool a pod is demand of, and which Autoscaler a pool listens to.
//! - A pod is indexed by its [`Place`]: the node it is bound to, the pool it names, or the
//!   unschedulable pods that name no pool.
//! - Such a pod is demand of one pool only ([`Homes`]), so that two Autoscalers never both
//!   scale up for it.
//! - Two Autoscalers of one pool: the oldest keeps it ([`first_claim`]).
use std::sync::Arc;

use kube_core::ResourceExt;
use shared_crd::Autoscaler;

use crate::demand::target_pool;
use crate::fit::{self, Shape};
use crate::pod::PodView;
use crate::resources::{Capacity, fits_a_node, pod_demand};

/// Where a pod is, as far as a pool's demand goes: the key of the pod index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Place {
    /// Bound to a node: usage of that node's pool.
    Node(String),
    /// Not bound, and names a pool (its label in the node selector or a required node
    /// affinity term).
    Pool(String),
    /// Not bound, names no pool, and the scheduler found no node for it.
    Unschedulable,
}

/// The place of `pod`; none when it is not bound and the scheduler has not seen it yet.
pub fn place(pod: &PodView) -> Option<Place> {
    if let Some(node) = &pod.spec.node_name {
        return Some(Place::Node(node.clone()));
    }
    if let Some(pool) = target_pool(pod) {
        return Some(Place::Pool(pool.to_owned()));
    }
    pod.is_unschedulable().then_some(Place::Unschedulable)
}

/// The pools an Autoscaler targets, each with its nodes' shape and capacity. An
/// unschedulable pod that names no pool is demand of one of them only: the first by name
/// whose nodes can run it. A reconcile that has such pods reads the pools once.
#[derive(Debug, Default)]
pub struct Homes {
    pools: Vec<(String, Shape, Capacity)>,
}

impl Homes {
    /// The targeted pools, in any order.
    pub fn new(mut pools: Vec<(String, Shape, Capacity)>) -> Self {
        pools.sort_by(|a, b| a.0.cmp(&b.0));
        Self { pools }
    }

    /// The pool `pod` is demand of, if any.
    pub fn of(&self, pod: &PodView) -> Option<&str> {
        let demand = pod_demand(pod);
        self.pools
            .iter()
            .find(|(_, shape, capacity)| {
                fit::mismatch(pod, shape).is_none() && fits_a_node(&demand, *capacity)
            })
            .map(|(name, _, _)| name.as_str())
    }
}

/// The Autoscaler that keeps a pool that `claims` (every Autoscaler targeting it) want,
/// when that is not `a`: the oldest, then the first by name. `a` stands down.
pub fn first_claim(claims: &[Arc<Autoscaler>], a: &Autoscaler) -> Option<String> {
    let key = |x: &Autoscaler| (x.creation_timestamp().map(|t| t.0), x.name_any());
    claims
        .iter()
        .min_by_key(|other| key(other))
        .filter(|first| first.name_any() != a.name_any())
        .map(|first| first.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;
    use shared_crd::NodePool;

    fn pool(name: &str, tier: &str, cpu: &str) -> NodePool {
        serde_json::from_value(json!({
            "apiVersion": "nodepool.dev/v1alpha1", "kind": "NodePool",
            "metadata": {"name": name},
            "spec": {"replicas": 1, "template": {"labels": {"tier": tier},
                "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}}
        }))
        .unwrap()
    }

    fn homes(pools: &[NodePool]) -> Homes {
        Homes::new(
            pools
                .iter()
                .map(|p| {
                    let capacity = p.spec.template.capacity.values().unwrap();
                    (p.name_any(), fit::shape(p, None), capacity)
                })
                .collect(),
        )
    }

    fn pending(selector: serde_json::Value, cpu: &str) -> PodView {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeSelector": selector,
                "tolerations": [{"key": "nodepool.dev/virtual", "operator": "Exists"}],
                "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
            "status": {"conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_that_names_no_pool_is_demand_of_the_first_pool_that_can_run_it() {
        // Given in any order, tried by name.
        let homes = homes(&[
            pool("c", "db", "2"),
            pool("b", "web", "4"),
            pool("a", "web", "2"),
        ]);
        assert_eq!(homes.of(&pending(json!({"tier": "web"}), "1")), Some("a"));
        // Too large for a's nodes: b's take it.
        assert_eq!(homes.of(&pending(json!({"tier": "web"}), "3")), Some("b"));
        assert_eq!(homes.of(&pending(json!({"tier": "db"}), "1")), Some("c"));
        assert_eq!(homes.of(&pending(json!({"tier": "gpu"}), "1")), None);
        let mut intolerant = pending(json!({"tier": "web"}), "1");
        intolerant.spec.tolerations.clear();
        assert_eq!(homes.of(&intolerant), None);
    }

    #[test]
    fn a_pods_place_is_its_node_its_pool_or_the_unschedulable() {
        let mut pod = pending(json!({"nodepool.dev/pool": "a"}), "1");
        assert_eq!(place(&pod), Some(Place::Pool("a".into())));
        pod.spec.node_name = Some("n1".into());
        assert_eq!(place(&pod), Some(Place::Node("n1".into())));
        let anywhere = pending(json!({"tier": "web"}), "1");
        assert_eq!(place(&anywhere), Some(Place::Unschedulable));
        let mut unseen = anywhere;
        unseen.status.conditions.clear();
        assert_eq!(place(&unseen), None, "not seen by the scheduler yet");
    }

    fn autoscaler(name: &str, created: i64) -> Arc<Autoscaler> {
        let mut a: Autoscaler = serde_json::from_value(json!({
            "apiVersion": "nodepool.dev/v1alpha1", "kind": "Autoscaler",
            "metadata": {"name": name},
            "spec": {"nodePoolRef": {"name": "p"}, "minReplicas": 1, "maxReplicas": 3}
        }))
        .unwrap();
        a.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        Arc::new(a)
    }

    #[test]
    fn the_oldest_autoscaler_then_the_first_by_name_keeps_the_pool() {
        let (old, young, twin) = (autoscaler("z", 1), autoscaler("a", 2), autoscaler("b", 2));
        let claims = [young.clone(), old.clone(), twin.clone()];
        assert_eq!(first_claim(&claims, &old), None, "the oldest keeps it");
        assert_eq!(first_claim(&claims, &young).as_deref(), Some("z"));
        let same_age = [twin.clone(), young.clone()];
        assert_eq!(first_claim(&same_age, &twin).as_deref(), Some("a"));
        assert_eq!(first_claim(&same_age, &young), None);
    }
}
