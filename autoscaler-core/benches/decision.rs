//! `make bench-decision`: the autoscaler's decision for one pool at the Kubernetes
//! scalability envelope, with no API server: the demand of every pod and the packing that
//! says how many nodes hold them (`pool_demand`, which the controller runs per decision).
//!
//! Two shapes, each from 1,000 to 100,000 pods:
//! - **scale-out**: every pod unschedulable (1 cpu, 1Gi), one empty node of 8 cpu: the
//!   packing opens the nodes the pods need (N / 8).
//! - **steady**: every pod bound, 20 to a node (0.25 cpu, 1Gi each, on 8 cpu nodes),
//!   nothing pending: the packing searches for the most nodes that could go, as each
//!   decision that considers a scale-down does. At 100,000 pods that is 5,000 nodes.
//!
//! Prints the median of several runs of each, its time per pod, and how it grows against
//! n log n. Timings are for this machine and are not asserted anywhere.
use std::hint::black_box;
use std::time::{Duration, Instant};

use autoscaler_core::demand::{PoolPods, pool_demand};
use autoscaler_core::fit;
use autoscaler_core::node::NodeView;
use autoscaler_core::pod::PodView;
use serde_json::json;
use shared_crd::NodePool;

const SIZES: [usize; 5] = [1_000, 3_000, 10_000, 30_000, 100_000];

fn pool() -> NodePool {
    serde_json::from_value(json!({
        "apiVersion": "nodepool.dev/v1alpha1", "kind": "NodePool",
        "metadata": {"name": "big", "uid": "u"},
        "spec": {"replicas": 1, "template": {
            "capacity": {"cpu": "8", "memory": "64Gi", "pods": "110"}}}
    }))
    .expect("a valid pool")
}

fn pod(name: String, cpu: &str, node: Option<&str>) -> PodView {
    let mut pod: PodView = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeSelector": {"nodepool.dev/pool": "big"},
            "tolerations": [{"key": "nodepool.dev/virtual", "operator": "Exists"}],
            "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu, "memory": "1Gi"}}}]
        },
        "status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}
    }))
    .expect("a valid pod");
    if let Some(node) = node {
        pod.spec.node_name = Some(node.to_owned());
        pod.status.phase = Some("Running".into());
        pod.status.conditions.clear();
    }
    pod
}

fn node(i: usize) -> NodeView {
    serde_json::from_value(json!({
        "metadata": {"name": format!("big-{i:05}"), "creationTimestamp": "2026-12-01T00:00:00Z",
            "labels": {"nodepool.dev/pool": "big"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .expect("a valid node")
}

/// A pool's nodes and pods: `bound` pods spread 20 to a node, `pending` unschedulable.
struct Scene {
    nodes: Vec<NodeView>,
    bound: Vec<Vec<PodView>>,
    pending: Vec<PodView>,
}

impl Scene {
    fn scale_out(pods: usize) -> Self {
        Self {
            nodes: vec![node(0)],
            bound: vec![Vec::new()],
            pending: (0..pods).map(|i| pod(format!("p{i}"), "1", None)).collect(),
        }
    }

    fn steady(pods: usize) -> Self {
        let count = pods.div_ceil(20);
        let nodes: Vec<NodeView> = (0..count).map(node).collect();
        let bound = nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                let name = node.metadata.name.as_deref().unwrap_or_default();
                (0..20)
                    .map(|i| pod(format!("p{n}-{i}"), "250m", Some(name)))
                    .collect()
            })
            .collect();
        Self {
            nodes,
            bound,
            pending: Vec::new(),
        }
    }

    /// One decision's demand and packing: the nodes the pool needs.
    fn decide(&self, pool: &NodePool) -> i32 {
        let capacity = pool.spec.template.capacity.values().expect("capacity");
        let shape = fit::shape(pool, self.nodes.first());
        let pods = PoolPods {
            nodes: self
                .nodes
                .iter()
                .zip(&self.bound)
                .map(|(n, pods)| (n, pods.iter().collect()))
                .collect(),
            named: self.pending.iter().collect(),
            others: Vec::new(),
        };
        pool_demand(&pods, &shape, capacity).placement.nodes
    }
}

/// The median of `runs` timings of `f`, fewer when one run takes long.
fn median(mut f: impl FnMut() -> i32) -> (Duration, i32) {
    let mut times = Vec::new();
    let mut answer = 0;
    let budget = Instant::now();
    while times.len() < 7 && (times.len() < 3 || budget.elapsed() < Duration::from_secs(10)) {
        let start = Instant::now();
        answer = black_box(f());
        times.push(start.elapsed());
    }
    times.sort();
    (times[times.len() / 2], answer)
}

fn main() {
    let pool = pool();
    println!("one decision for one pool (demand and packing), median of up to 7 runs");
    println!(
        "{:<10} {:>8} {:>6} {:>7} {:>11} {:>10} {:>8} {:>8}",
        "shape", "pods", "nodes", "needed", "median", "per pod", "growth", "n log n"
    );
    for (label, make) in [
        ("scale-out", Scene::scale_out as fn(usize) -> Scene),
        ("steady", Scene::steady),
    ] {
        let mut previous: Option<(usize, Duration)> = None;
        for pods in SIZES {
            let scene = make(pods);
            let (time, nodes) = median(|| scene.decide(&pool));
            let nlogn = |n: usize| n as f64 * (n as f64).ln();
            let (growth, expected) = match previous {
                Some((n0, t0)) => (
                    format!("x{:.1}", time.as_secs_f64() / t0.as_secs_f64()),
                    format!("x{:.1}", nlogn(pods) / nlogn(n0)),
                ),
                None => ("-".into(), "-".into()),
            };
            println!(
                "{label:<10} {pods:>8} {:>6} {nodes:>7} {:>9.1}ms {:>8.2}us {growth:>8} {expected:>8}",
                scene.nodes.len(),
                time.as_secs_f64() * 1e3,
                time.as_secs_f64() * 1e6 / pods as f64,
            );
            previous = Some((pods, time));
        }
    }
}
