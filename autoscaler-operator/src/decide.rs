//! Pure decisions of the autoscaler: the demand of a pool's pods, the recommendation per
//! resource, HPA-style stabilization windows and steps, clamping, and the limits (paused,
//! pool at quota). No client here.
use crate::fit::{self, NodeLoad, Placement, Shape};
use crate::node::NodeView;
use crate::pod::PodView;
use shared_crd::{AutoscalerSpec, POOL_LABEL};

/// Requests of one pod or a sum of them (or, in packing, the room left on a node).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Demand {
    /// CPU cores.
    pub cpu: f64,
    /// Bytes.
    pub memory: f64,
    pub pods: f64,
}

impl Demand {
    pub fn add(&mut self, other: &Demand) {
        self.cpu += other.cpu;
        self.memory += other.memory;
        self.pods += other.pods;
    }
}

/// What one node offers (parsed from a pool's template with `NodeCapacity::values`).
pub use shared_crd::nodepool::CapacityValues as Capacity;

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

/// Whether a pod still needs room: not finished, not on its way out.
pub fn is_active(pod: &PodView) -> bool {
    let phase = pod.status.phase.as_deref();
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded") | Some("Failed"))
}

/// The requests of one pod (its containers' requests; init containers are not counted).
pub fn pod_demand(pod: &PodView) -> Demand {
    let mut d = Demand {
        pods: 1.0,
        ..Default::default()
    };
    for c in &pod.spec.containers {
        if let Some(r) = &c.resources.requests {
            d.cpu += r
                .get("cpu")
                .and_then(|q| shared_crd::quantity::parse(&q.0))
                .unwrap_or(0.0);
            d.memory += r
                .get("memory")
                .and_then(|q| shared_crd::quantity::parse(&q.0))
                .unwrap_or(0.0);
        }
    }
    d
}

/// Why a pod asking `d` can run on no node of the pool, if it asks one resource for more
/// than a node offers: `"3 cores > 2 cores"`. No number of nodes runs it, so it is no
/// demand.
fn too_large(d: &Demand, capacity: Capacity) -> Option<String> {
    if d.cpu > capacity.cpu + 1e-9 {
        return Some(format!(
            "{} cores > {} cores",
            round(d.cpu),
            round(capacity.cpu)
        ));
    }
    if d.memory > capacity.memory + 1e-9 {
        return Some(format!(
            "{}Gi > {}Gi",
            round(d.memory / GI),
            round(capacity.memory / GI)
        ));
    }
    None
}

/// Whether a pod asking `d` fits on an empty node of `capacity`.
pub fn fits_a_node(d: &Demand, capacity: Capacity) -> bool {
    too_large(d, capacity).is_none()
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

/// Nodes needed for `demand` at `target_utilization` percent, by the scarcest resource,
/// with the sentence that explains it.
pub fn nodes_needed(demand: Demand, capacity: Capacity, target_utilization: i32) -> (i32, String) {
    let target = f64::from(target_utilization.clamp(1, 100)) / 100.0;
    let per = |d: f64, c: f64| (d / (c * target) - 1e-9).ceil().max(0.0) as i32;
    let candidates = [
        (
            per(demand.cpu, capacity.cpu),
            format!(
                "cpu demand {} cores / ({} cores x {}%)",
                round(demand.cpu),
                round(capacity.cpu),
                target_utilization
            ),
        ),
        (
            per(demand.memory, capacity.memory),
            format!(
                "memory demand {}Gi / ({}Gi x {}%)",
                round(demand.memory / GI),
                round(capacity.memory / GI),
                target_utilization
            ),
        ),
        (
            per(demand.pods, capacity.pods),
            format!(
                "{} pods / ({} pods x {}%)",
                demand.pods, capacity.pods, target_utilization
            ),
        ),
    ];
    let (n, why) = candidates
        .into_iter()
        .max_by_key(|(n, _)| *n)
        .expect("three candidates");
    (n, format!("{why} -> {n} nodes"))
}

const GI: f64 = 1024.0 * 1024.0 * 1024.0;

fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// One past recommendation, for the stabilization windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recommendation {
    /// Seconds (any monotonic origin).
    pub at: i64,
    pub replicas: i32,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The size to ask of the pool.
    pub desired: i32,
    /// Clamped recommendation before stabilization and steps.
    pub recommendation: i32,
    /// Human-readable reason (the Autoscaler's `lastDecision`).
    pub explanation: String,
    /// Why `desired` is not simply the recommendation, if so: (reason, message).
    pub limited: Option<(&'static str, String)>,
    /// When the decision may change with time alone (a window is holding it back).
    pub recheck_in_seconds: Option<i64>,
}

/// Everything a decision depends on.
pub struct Inputs<'a> {
    pub spec: &'a AutoscalerSpec,
    pub demand: &'a PoolDemand,
    pub capacity: Capacity,
    /// The pool's current `spec.replicas` (the size asked for).
    pub current: i32,
    /// Nodes the pool has (`status.replicas`): steps count from what exists, so a
    /// `maxStep` of 1 removes nodes one by one however often decisions run.
    pub existing: i32,
    /// nodepool-operator says the pool is at its provider quota.
    pub pool_at_quota: bool,
    /// Earlier recommendations (oldest first), not including this one.
    pub history: &'a [Recommendation],
    pub now: i64,
}

/// The HPA's algorithm, per pool: recommend, stabilize (scale up to the lowest and down to
/// the highest recommendation of each window), limit the step, clamp, hold when paused or
/// when the pool cannot get more nodes.
pub fn decide(input: &Inputs) -> Decision {
    let spec = input.spec;
    let (mut raw, mut why) = nodes_needed(
        input.demand.total(),
        input.capacity,
        spec.target_utilization,
    );
    let placement = &input.demand.placement;
    if placement.nodes > raw {
        // The requests fit fewer nodes than the pods do, one by one.
        raw = placement.nodes;
        why += &format!("; but {} -> {raw} nodes", placement.why);
    }
    let recommendation = raw.clamp(spec.min_replicas, spec.max_replicas);
    let mut explanation = format!("{}; {why}", input.demand.summary());
    let mut limited = None;
    if recommendation != raw {
        explanation += &format!(
            ", clamped to {recommendation} (min {}, max {})",
            spec.min_replicas, spec.max_replicas
        );
        limited = Some((
            if raw > spec.max_replicas {
                "TooManyReplicas"
            } else {
                "TooFewReplicas"
            },
            format!(
                "{raw} nodes needed, limited to [{}, {}]",
                spec.min_replicas, spec.max_replicas
            ),
        ));
    }

    let window = |seconds: i32| {
        let since = input.now - i64::from(seconds);
        input
            .history
            .iter()
            .filter(move |r| r.at > since)
            .map(|r| r.replicas)
            .chain(std::iter::once(recommendation))
    };
    let up_to = window(spec.behavior.scale_up.stabilization_window_seconds)
        .min()
        .unwrap_or(recommendation);
    let down_to = window(spec.behavior.scale_down.stabilization_window_seconds)
        .max()
        .unwrap_or(recommendation);
    let current = input.current;
    let mut recheck = None;
    let mut desired = if current < up_to {
        up_to
    } else if current > down_to {
        down_to
    } else {
        current
    };
    if desired != recommendation {
        // A window holds the change back; it can move once the oldest entry ages out.
        let oldest_in = |seconds: i32| {
            input
                .history
                .iter()
                .filter(|r| r.at > input.now - i64::from(seconds))
                .map(|r| r.at + i64::from(seconds) - input.now)
                .min()
        };
        recheck = if recommendation < current {
            oldest_in(spec.behavior.scale_down.stabilization_window_seconds)
        } else {
            oldest_in(spec.behavior.scale_up.stabilization_window_seconds)
        };
        explanation += &format!("; stabilized at {desired}");
    }
    let (up_step, down_step) = (
        spec.behavior.scale_up.max_step,
        spec.behavior.scale_down.max_step,
    );
    // Steps count from the nodes that exist, never undoing what was already asked.
    let highest = (input.existing + up_step).max(current);
    let lowest = (input.existing - down_step).min(current);
    if desired > highest {
        desired = highest;
        explanation += &format!("; step limited to +{up_step}");
        recheck = Some(1);
    } else if desired < lowest {
        desired = lowest;
        explanation += &format!("; step limited to -{down_step}");
        recheck = Some(1);
    }
    desired = desired.clamp(spec.min_replicas, spec.max_replicas);

    if input.pool_at_quota && desired > current {
        // Asking for more than the pool can get only makes the two operators fight; asking
        // for less would clear AtQuota and ask again next time: hold the current request.
        explanation += &format!("; pool at quota, holding at {current}");
        limited = Some((
            "AtQuota",
            format!("the pool is at its provider quota; holding at {current} instead of {desired}"),
        ));
        desired = current;
        recheck = None;
    }
    if spec.paused {
        explanation = format!("paused; would ask for {desired}");
        limited = Some(("Paused", format!("paused; would ask for {desired}")));
        desired = current;
        recheck = None;
    }
    Decision {
        desired,
        recommendation,
        explanation,
        limited,
        recheck_in_seconds: recheck,
    }
}

/// Checks the 1.20 server cannot do (no CEL there): the spec's own consistency.
pub fn validate(spec: &AutoscalerSpec) -> Result<(), String> {
    if spec.min_replicas > spec.max_replicas {
        return Err(format!(
            "spec.minReplicas ({}) must not exceed spec.maxReplicas ({})",
            spec.min_replicas, spec.max_replicas
        ));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;
    use shared_crd::{NodeCapacity, NodePoolRef, ScalingBehavior, ScalingRules};

    fn spec(min: i32, max: i32) -> AutoscalerSpec {
        AutoscalerSpec {
            node_pool_ref: NodePoolRef { name: "p".into() },
            min_replicas: min,
            max_replicas: max,
            target_utilization: 80,
            behavior: ScalingBehavior {
                scale_up: ScalingRules {
                    stabilization_window_seconds: 0,
                    max_step: 10,
                },
                scale_down: ScalingRules {
                    stabilization_window_seconds: 0,
                    max_step: 10,
                },
            },
            paused: false,
        }
    }

    /// A node of 2 cores, 8Gi and 110 pods (the template's default).
    pub(crate) const NODE: Capacity = Capacity {
        cpu: 2.0,
        memory: 8.0 * GI,
        pods: 110.0,
    };

    /// One pod asking `cores`.
    pub(crate) fn cpu(cores: f64) -> Demand {
        Demand {
            cpu: cores,
            memory: 0.0,
            pods: 1.0,
        }
    }

    /// Demand of pods bound to the pool, which pack as well as the sum says.
    fn used(usage: Demand) -> PoolDemand {
        PoolDemand {
            usage,
            ..PoolDemand::default()
        }
    }

    fn run(
        spec: &AutoscalerSpec,
        demand: Demand,
        current: i32,
        history: &[Recommendation],
        now: i64,
    ) -> Decision {
        decide(&Inputs {
            spec,
            demand: &used(demand),
            capacity: NODE,
            current,
            existing: current,
            pool_at_quota: false,
            history,
            now,
        })
    }

    #[test]
    fn utilization_math_per_resource() {
        // (demand, expected nodes): 2 cores x 80% = 1.6 usable cores per node.
        let table = [
            (Demand::default(), 0),
            (cpu(0.0), 1), // one pod needs a node even with no requests
            (cpu(1.6), 1),
            (cpu(1.7), 2),
            (cpu(5.5), 4),
            (
                Demand {
                    cpu: 0.1,
                    memory: 20.0 * GI,
                    pods: 1.0,
                },
                4,
            ), // 6.4Gi usable per node
            (
                Demand {
                    cpu: 0.1,
                    memory: 0.0,
                    pods: 200.0,
                },
                3,
            ), // 88 pods usable per node
        ];
        for (demand, want) in table {
            assert_eq!(nodes_needed(demand, NODE, 80).0, want, "{demand:?}");
        }
        let (_, why) = nodes_needed(cpu(5.5), NODE, 80);
        assert_eq!(why, "cpu demand 5.5 cores / (2 cores x 80%) -> 4 nodes");
    }

    #[test]
    fn recommendations_are_clamped_to_min_and_max() {
        let d = run(&spec(2, 3), cpu(0.0), 2, &[], 0);
        assert_eq!(
            (d.desired, d.limited.map(|l| l.0)),
            (2, Some("TooFewReplicas"))
        );
        let d = run(&spec(1, 3), cpu(100.0), 1, &[], 0);
        assert_eq!(
            (d.desired, d.limited.map(|l| l.0)),
            (3, Some("TooManyReplicas"))
        );
        let d = run(&spec(1, 10), cpu(5.5), 1, &[], 0);
        assert_eq!((d.desired, d.limited), (4, None));
    }

    #[test]
    fn scale_down_waits_for_the_highest_recommendation_of_its_window() {
        let mut s = spec(1, 10);
        s.behavior.scale_down.stabilization_window_seconds = 60;
        let history = [Recommendation {
            at: 100,
            replicas: 4,
        }];
        // Demand dropped at t=130: the window (since t=70) still holds 4.
        let d = run(&s, cpu(0.0), 4, &history, 130);
        assert_eq!(d.desired, 4);
        assert_eq!(
            d.recheck_in_seconds,
            Some(30),
            "re-check when the 4 ages out"
        );
        // At t=161 the 4 is out of the window.
        let d = run(&s, cpu(0.0), 4, &history, 161);
        assert_eq!(d.desired, 1);
    }

    #[test]
    fn scale_up_waits_for_the_lowest_recommendation_of_its_window() {
        let mut s = spec(1, 10);
        s.behavior.scale_up.stabilization_window_seconds = 30;
        let history = [Recommendation {
            at: 100,
            replicas: 1,
        }];
        assert_eq!(run(&s, cpu(5.5), 1, &history, 110).desired, 1);
        assert_eq!(run(&s, cpu(5.5), 1, &history, 131).desired, 4);
    }

    #[test]
    fn steps_limit_each_change() {
        let mut s = spec(0, 20);
        s.behavior.scale_up.max_step = 2;
        s.behavior.scale_down.max_step = 1;
        let up = run(&s, cpu(16.0), 1, &[], 0);
        assert_eq!(up.desired, 3);
        assert!(
            up.explanation.contains("step limited to +2"),
            "{}",
            up.explanation
        );
        assert_eq!(run(&s, cpu(0.0), 5, &[], 0).desired, 4);
        // Asked for 4 while 5 nodes still exist: the next decision does not go lower.
        let idle = used(cpu(0.0));
        let input = Inputs {
            spec: &s,
            demand: &idle,
            capacity: NODE,
            current: 4,
            existing: 5,
            pool_at_quota: false,
            history: &[],
            now: 0,
        };
        assert_eq!(decide(&input).desired, 4);
        // Up: 1 node exists, 3 asked; +2 from what exists allows 3, not more.
        let busy = used(cpu(16.0));
        let input = Inputs {
            demand: &busy,
            current: 3,
            existing: 1,
            ..input
        };
        assert_eq!(decide(&input).desired, 3);
    }

    #[test]
    fn paused_keeps_the_current_size() {
        let mut s = spec(1, 10);
        s.paused = true;
        let d = run(&s, cpu(5.5), 2, &[], 0);
        assert_eq!((d.desired, d.limited.unwrap().0), (2, "Paused"));
    }

    #[test]
    fn at_quota_holds_the_request_instead_of_asking_for_more() {
        let s = spec(1, 10);
        let (busy, idle) = (used(cpu(9.0)), used(cpu(1.0)));
        let input = Inputs {
            spec: &s,
            demand: &busy,
            capacity: NODE,
            current: 3,
            existing: 3,
            pool_at_quota: true,
            history: &[],
            now: 0,
        };
        let d = decide(&input);
        assert_eq!((d.desired, d.limited.clone().unwrap().0), (3, "AtQuota"));
        // Scaling down is still allowed at quota.
        let input = Inputs {
            demand: &idle,
            ..input
        };
        assert_eq!(decide(&input).desired, 1);
    }

    #[test]
    fn min_above_max_is_invalid() {
        assert!(validate(&spec(1, 3)).is_ok());
        assert!(
            validate(&spec(5, 2))
                .unwrap_err()
                .contains("minReplicas (5) must not exceed spec.maxReplicas (2)")
        );
    }

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
            },
        )
    }

    #[test]
    fn a_pod_no_node_of_the_pool_can_run_is_no_demand_and_is_named() {
        let mut wrong_selector = pending("elsewhere", "1", "1Gi");
        wrong_selector
            .spec
            .node_selector
            .as_mut()
            .unwrap()
            .insert("disk".into(), "ssd".into());
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
            existing: 1,
            pool_at_quota: false,
            history: &[],
            now: 0,
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
            existing: 3,
            pool_at_quota: false,
            history: &[],
            now: 0,
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
