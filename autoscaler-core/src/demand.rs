//! What a pool's pods ask of it, from the scheduler's facts: the pods bound to its nodes
//! are its usage; the unschedulable pods its nodes can run are what it lacks; the pods
//! that name it but that none of its nodes can run are named, not counted.
use shared_crd::POOL_LABEL;

use crate::fit::{self, NodeLoad, Placement, Shape};
use crate::node::NodeView;
use crate::pod::PodView;
use crate::resources::{Capacity, Demand, is_active, pod_demand, round, too_large};

/// The pool a pod asks for: `nodeSelector` on the pool label, or a required node
/// affinity term `In` one pool.
pub fn target_pool(pod: &PodView) -> Option<&str> {
    let spec = &pod.spec;
    if let Some(pool) = spec.node_selector.as_ref().and_then(|s| s.get(POOL_LABEL)) {
        return Some(pool);
    }
    let terms = &spec
        .affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|term| {
        term.match_expressions.as_ref()?.iter().find_map(|e| {
            let values = e.values.as_ref()?;
            (e.key == POOL_LABEL && e.operator == "In" && values.len() == 1)
                .then(|| values[0].as_str())
        })
    })
}

/// A pool's pods, as the caches hold them (the controller gathers them from its indexes).
#[derive(Debug, Default)]
pub struct PoolPods<'a> {
    /// The pool's nodes, each with the pods bound to it.
    pub nodes: Vec<(&'a NodeView, Vec<&'a PodView>)>,
    /// Unbound pods that name the pool (its label in their node selector or affinity).
    pub named: Vec<&'a PodView>,
    /// Unschedulable pods that name no pool and go to this one (see the controller).
    pub others: Vec<&'a PodView>,
}

/// What a pool's pods ask of it, from the scheduler's facts, as cluster-autoscaler and
/// Karpenter read them: the pods bound to its nodes are its usage; the pods the scheduler
/// marked unschedulable, that its nodes could run, are what it lacks. A pod that names the
/// pool but is not marked yet is neither: the scheduler may still place it on a node that
/// has room.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolDemand {
    /// The requests of the active pods bound to the pool's nodes.
    pub usage: Demand,
    /// The requests of the unschedulable pods the pool's nodes could run.
    pub pending: Demand,
    /// Pods that name the pool but that none of its nodes can run, sorted.
    pub unfit: Vec<Unfit>,
    /// The fewest nodes on which every one of those pods has a place (see
    /// [`fit::nodes_to_hold`]).
    pub placement: Placement,
}

impl Default for PoolDemand {
    fn default() -> Self {
        Self {
            usage: Demand::default(),
            pending: Demand::default(),
            unfit: Vec::new(),
            placement: Placement {
                nodes: 0,
                why: "no pod to place".into(),
            },
        }
    }
}

impl PoolDemand {
    /// Usage and pending demand together.
    pub fn total(&self) -> Demand {
        Demand {
            cpu: self.usage.cpu + self.pending.cpu,
            memory: self.usage.memory + self.pending.memory,
            pods: self.usage.pods + self.pending.pods,
        }
    }

    /// The facts a decision starts from: "2 unschedulable pods need 1.5 cores; 4 pods on
    /// the pool use 4 cores".
    pub fn summary(&self) -> String {
        let mut facts = Vec::new();
        if self.pending.pods > 0.0 {
            facts.push(format!(
                "{} unschedulable pods need {} cores",
                self.pending.pods,
                round(self.pending.cpu)
            ));
        }
        facts.push(format!(
            "{} pods on the pool use {} cores",
            self.usage.pods,
            round(self.usage.cpu)
        ));
        facts.join("; ")
    }
}

/// A pod that names a pool none of whose nodes can run it: no number of nodes helps.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Unfit {
    /// `namespace/name`.
    pub pod: String,
    pub why: String,
    /// It asks more of one resource than a node offers (else its selector, affinity or
    /// tolerations rule the pool's nodes out).
    pub too_large: bool,
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.pod, self.why)
    }
}

/// Why a pod that names the pool cannot run on its nodes, if so: (why, too large).
fn unfit_reason(
    pod: &PodView,
    d: &Demand,
    shape: &Shape,
    capacity: Capacity,
) -> Option<(String, bool)> {
    fit::mismatch(pod, shape)
        .map(|why| (why, false))
        .or_else(|| too_large(d, capacity).map(|why| (why, true)))
}

/// The demand of a pool's pods, each pod's requests read once.
pub fn pool_demand(pods: &PoolPods, shape: &Shape, capacity: Capacity) -> PoolDemand {
    let mut total = PoolDemand::default();
    let mut loads = Vec::with_capacity(pods.nodes.len());
    for (node, bound) in &pods.nodes {
        let requests: Vec<Demand> = bound
            .iter()
            .filter(|p| is_active(p))
            .map(|p| pod_demand(p))
            .collect();
        for d in &requests {
            total.usage.add(d);
        }
        loads.push(NodeLoad {
            name: node.metadata.name.clone().unwrap_or_default(),
            ready: node.is_ready(),
            created: node
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second()),
            deleting: node.metadata.deletion_timestamp.is_some(),
            pods: requests,
        });
    }
    let mut pending = Vec::new();
    for pod in pods.named.iter().filter(|p| is_active(p)) {
        let d = pod_demand(pod);
        match unfit_reason(pod, &d, shape, capacity) {
            Some((why, too_large)) => {
                let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                total.unfit.push(Unfit {
                    pod: format!("{ns}/{name}"),
                    why,
                    too_large,
                });
            }
            None if pod.is_unschedulable() => pending.push(d),
            None => {}
        }
    }
    for pod in pods
        .others
        .iter()
        .filter(|p| is_active(p) && p.is_unschedulable())
    {
        let d = pod_demand(pod);
        if unfit_reason(pod, &d, shape, capacity).is_none() {
            pending.push(d);
        }
    }
    for d in &pending {
        total.pending.add(d);
    }
    total.unfit.sort();
    total.placement = fit::nodes_to_hold(&loads, &pending, capacity);
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::tests::spec;
    use crate::decide::{Inputs, decide};
    use crate::resources::GI;
    use crate::resources::tests::NODE;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;
    use shared_crd::NodeCapacity;

    #[test]
    fn pods_target_a_pool_by_selector_or_required_affinity() {
        let by_selector: PodView = serde_json::from_value(
            json!({"spec": {"containers": [], "nodeSelector": {"nodepool.dev/pool": "a"}}}),
        )
        .unwrap();
        assert_eq!(target_pool(&by_selector), Some("a"));
        let by_affinity: PodView = serde_json::from_value(json!({"spec": {"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "nodepool.dev/pool", "operator": "In", "values": ["b"]}]}]}}}}})).unwrap();
        assert_eq!(target_pool(&by_affinity), Some("b"));
        let elsewhere: PodView =
            serde_json::from_value(json!({"spec": {"containers": []}})).unwrap();
        assert_eq!(target_pool(&elsewhere), None);
    }

    fn view(v: serde_json::Value) -> PodView {
        serde_json::from_value(v).unwrap()
    }

    /// A pod in `default` that names pool `a`, tolerates its nodes, asks `cpu` and
    /// `memory`, and that the scheduler marked unschedulable.
    fn pending(name: &str, cpu: &str, memory: &str) -> PodView {
        view(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeSelector": {"nodepool.dev/pool": "a"},
                "tolerations": [{"key": "nodepool.dev/virtual", "operator": "Exists"}],
                "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": memory}}}]},
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}}))
    }

    fn pool_a() -> shared_crd::NodePool {
        shared_crd::NodePool::new(
            "a",
            shared_crd::NodePoolSpec {
                replicas: 1,
                template: shared_crd::NodeTemplate::default(),
                disruption: None,
            },
        )
    }

    #[test]
    fn a_pod_no_node_of_the_pool_can_run_is_no_demand_and_is_named() {
        let mut wrong_selector = pending("elsewhere", "1", "1Gi");
        wrong_selector.spec.node_selector =
            Some([(POOL_LABEL, "a"), ("disk", "ssd")].into_iter().collect());
        let mut intolerant = pending("intolerant", "1", "1Gi");
        intolerant.spec.tolerations.clear();
        let named = [
            pending("fits", "2", "8Gi"),
            pending("wide", "3", "1Gi"),
            pending("heavy", "1", "9Gi"),
            wrong_selector,
            intolerant,
        ];
        let pool = pool_a();
        let pods = PoolPods {
            named: named.iter().collect(),
            ..Default::default()
        };
        let a = pool_demand(&pods, &fit::shape(&pool, None), NODE);
        assert_eq!(a.pending.cpu, 2.0);
        let too_large: Vec<bool> = a.unfit.iter().map(|u| u.too_large).collect();
        assert_eq!(too_large, [false, true, false, true]);
        assert_eq!(
            a.unfit.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "default/elsewhere (node selector disk=ssd does not match the pool's nodes)",
                "default/heavy (9Gi > 8Gi)",
                "default/intolerant (it does not tolerate the taint nodepool.dev/virtual=true:NoSchedule)",
                "default/wide (3 cores > 2 cores)",
            ]
        );
    }

    #[test]
    fn usage_is_what_is_bound_and_demand_what_the_scheduler_refused() {
        let bound = |name: &str, cpu: &str, phase: &str| -> PodView {
            view(
                json!({"metadata": {"name": name}, "spec": {"nodeName": "a-1", "containers": [
                {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}},
                {"name": "d", "resources": {"requests": {"cpu": "250m"}}}]}, "status": {"phase": phase}}),
            )
        };
        let node: NodeView = serde_json::from_value(json!({
            "metadata": {"name": "a-1", "labels": {"nodepool.dev/pool": "a"}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap();
        let on_node = [
            bound("starting", "500m", "Pending"),
            bound("running", "1", "Running"),
            bound("done", "4", "Succeeded"),
        ];
        let mut unseen = pending("unseen", "1", "1Gi");
        unseen.status.conditions.clear();
        let named = [pending("refused", "1", "1Gi"), unseen];
        let mut no_pool = pending("no-pool", "500m", "1Gi");
        no_pool.spec.node_selector = None;
        let others = [no_pool];
        let pods = PoolPods {
            nodes: vec![(&node, on_node.iter().collect())],
            named: named.iter().collect(),
            others: others.iter().collect(),
        };
        let pool = pool_a();
        let d = pool_demand(&pods, &fit::shape(&pool, Some(&node)), NODE);
        // Usage: the two active bound pods, sidecars included (0.5 + 0.25 and 1 + 0.25).
        assert_eq!(
            (d.usage.cpu, d.usage.memory / GI, d.usage.pods),
            (2.0, 2.0, 2.0)
        );
        // Demand: the refused pod and the pool-less one; not the one the scheduler has not
        // seen yet.
        assert_eq!((d.pending.cpu, d.pending.pods), (1.5, 2.0));
        assert_eq!(
            d.summary(),
            "2 unschedulable pods need 1.5 cores; 2 pods on the pool use 2 cores"
        );
        // The node is full (2 of 2 cores): the pending pods need a node of their own.
        assert_eq!(d.placement.nodes, 2);
        let spec = spec(1, 10);
        let decision = decide(&Inputs {
            spec: &spec,
            demand: &d,
            capacity: NODE,
            current: 1,
            pool_at_quota: false,
            history: &[],
            now: 0,
            changes: &[],
            wall_now: 0,
        });
        assert_eq!(decision.desired, 3);
        assert_eq!(
            decision.explanation,
            "2 unschedulable pods need 1.5 cores; 2 pods on the pool use 2 cores; \
             cpu demand 3.5 cores / (2 cores x 80%) -> 3 nodes"
        );
    }

    #[test]
    fn pods_that_pack_worse_than_their_sum_hold_more_nodes() {
        // Three pods of 1.2 cores bound to three nodes: 3.6 cores would fit two nodes at
        // 100%, but no pod fits beside another.
        let nodes: Vec<NodeView> = (1..=3)
            .map(|i| {
                serde_json::from_value(json!({
                    "metadata": {"name": format!("a-{i}"), "labels": {"nodepool.dev/pool": "a"}},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))
                .unwrap()
            })
            .collect();
        let pods: Vec<PodView> = (1..=3)
            .map(|i| {
                view(json!({"metadata": {"name": format!("p{i}")}, "spec": {"nodeName": format!("a-{i}"),
                    "containers": [{"name": "c", "resources": {"requests": {"cpu": "1200m"}}}]}}))
            })
            .collect();
        let pool_pods = PoolPods {
            nodes: nodes.iter().zip(&pods).map(|(n, p)| (n, vec![p])).collect(),
            ..Default::default()
        };
        let pool = pool_a();
        let d = pool_demand(&pool_pods, &fit::shape(&pool, None), NODE);
        let mut full = spec(1, 10);
        full.target_utilization = 100;
        let decision = decide(&Inputs {
            spec: &full,
            demand: &d,
            capacity: NODE,
            current: 3,
            pool_at_quota: false,
            history: &[],
            now: 0,
            changes: &[],
            wall_now: 0,
        });
        assert_eq!(decision.desired, 3, "{}", decision.explanation);
        assert!(
            decision.explanation.ends_with(
                "cpu demand 3.6 cores / (2 cores x 100%) -> 2 nodes; but the pods of the next \
                 node to go would not fit on the other 2 -> 3 nodes"
            ),
            "{}",
            decision.explanation
        );
    }

    #[test]
    fn capacity_comes_from_the_template() {
        let c = NodeCapacity::default().values().unwrap();
        assert_eq!(c, NODE);
        let bad = NodeCapacity {
            cpu: Quantity("0".into()),
            ..NodeCapacity::default()
        };
        assert!(bad.values().unwrap_err().contains("capacity.cpu"));
    }
}
