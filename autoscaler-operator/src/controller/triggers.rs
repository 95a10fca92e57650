//! What makes an Autoscaler reconcile: a change of what its decision reads, in it, its
//! pool, the pods that are the pool's demand or usage, or the pool's nodes.
use autoscaler_core::node::NodeView;
use autoscaler_core::pod::PodView;
use autoscaler_core::resources::{is_active, pod_demand};
use autoscaler_core::routing::{Place, place};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use operator_kit::controller::{Runner, RunnerSettings};
use operator_kit::watch::hash_of;
use shared_crd::condition::{self, ConditionStatus};
use shared_crd::{Autoscaler, NodePool, condition_type};

use super::Context;
use super::observe::homes;
use crate::caches::Caches;

/// The Autoscaler controller, on the caches of `ctx`.
pub fn runner(ctx: Context, settings: &RunnerSettings) -> Runner<Context> {
    let caches = ctx.caches.clone();
    let (by_pool, by_node) = (
        caches.autoscalers_by_pool.clone(),
        caches.autoscalers_by_pool.clone(),
    );
    let for_pod = caches.clone();
    Runner::new(ctx, &caches.autoscalers, autoscaler_inputs, settings)
        .watches(&caches.pools, pool_inputs, move |pool: NodePool| {
            by_pool.get(&pool.name_any())
        })
        .watches(&caches.pods, pod_inputs, move |pod: PodView| {
            autoscalers_of(&for_pod, &pod)
        })
        .watches(&caches.nodes, node_inputs, move |node: NodeView| {
            node.pool()
                .map(|pool| by_node.get(pool))
                .unwrap_or_default()
        })
}

/// The Autoscalers whose decision `pod` is part of: those of the pool it is demand or
/// usage of.
fn autoscalers_of(caches: &Caches, pod: &PodView) -> Vec<ObjectRef<Autoscaler>> {
    let pool = match place(pod) {
        Some(Place::Node(node)) => caches
            .nodes
            .get(&ObjectRef::new(&node))
            .and_then(|n| n.pool().map(str::to_owned)),
        Some(Place::Pool(pool)) => Some(pool),
        Some(Place::Unschedulable) => homes(caches).of(pod).map(str::to_owned),
        None => None,
    };
    pool.map(|pool| caches.autoscalers_by_pool.get(&pool))
        .unwrap_or_default()
}

/// What of an Autoscaler a decision reads: its spec, and the pool's readiness that the
/// other operator reports in its status. Status the autoscaler writes itself is left out.
fn autoscaler_inputs(a: &Autoscaler) -> u64 {
    let ready = a
        .status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, condition_type::NODEPOOL_READY))
        .map(|c| (c.status == ConditionStatus::True, c.reason.clone()));
    hash_of(&(a.metadata.generation, ready))
}

/// What of a NodePool a decision reads.
fn pool_inputs(p: &NodePool) -> u64 {
    let c = &p.spec.template.capacity;
    let status = p.status.as_ref().map(|s| (s.replicas, s.ready_replicas));
    hash_of(&(
        p.spec.replicas,
        &c.cpu.0,
        &c.memory.0,
        &c.pods.0,
        status,
        p.metadata.deletion_timestamp.is_some(),
    ))
}

/// What of a Pod a decision reads: where it is, the scheduler's verdict, its requests,
/// whether it is active. (Selector, affinity and tolerations do not change on a pod.)
fn pod_inputs(p: &PodView) -> u64 {
    let d = pod_demand(p);
    hash_of(&(
        place(p),
        p.is_unschedulable(),
        d.cpu.to_bits(),
        d.memory.to_bits(),
        is_active(p),
    ))
}

/// What of a Node a decision reads: its pool, labels and taints (the pool's shape), its
/// readiness and deletion (the order nodes are removed in). Status is written only on
/// change (heartbeats go to Leases), so this passes few events.
fn node_inputs(n: &NodeView) -> u64 {
    hash_of(&(
        &n.metadata.labels,
        n.spec
            .taints
            .iter()
            .map(|t| (&t.key, &t.value, &t.effect))
            .collect::<Vec<_>>(),
        n.is_ready(),
        n.metadata.deletion_timestamp.is_some(),
    ))
}
