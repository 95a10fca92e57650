//! The observe phase: what a decision for one Autoscaler starts from, read from the caches
//! through their indexes (no API request, no scan of a whole cache but the targeted pools
//! when unschedulable pods name no pool).
use std::sync::Arc;

use autoscaler_core::check::{Blocked, check};
use autoscaler_core::demand::{PoolDemand, PoolPods, pool_demand};
use autoscaler_core::fit;
use autoscaler_core::pod::PodView;
use autoscaler_core::resources::Capacity;
use autoscaler_core::routing::{Homes, Place, first_claim};
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use shared_crd::condition::{self, ConditionStatus};
use shared_crd::{Autoscaler, NodePool, condition_type, reason};

use crate::caches::Caches;

/// What a decision for one Autoscaler reads.
pub(super) struct Observed {
    pub pool: Arc<NodePool>,
    /// What one node of the pool offers.
    pub capacity: Capacity,
    /// What the pool's pods ask of it.
    pub demand: PoolDemand,
    /// nodepool-operator says the pool is at its provider quota (`NodePoolReady`).
    pub at_quota: bool,
}

/// What the decision for `a` reads, or why there is none to make.
pub(super) fn observe(a: &Autoscaler, caches: &Caches) -> Result<Observed, Blocked> {
    let pool_name = a.spec.node_pool_ref.name.as_str();
    let pool = caches.pools.get(&ObjectRef::new(pool_name));
    let claims = caches
        .autoscalers_by_pool
        .objects(pool_name, &caches.autoscalers);
    let capacity = check(&a.spec, pool.as_deref(), first_claim(&claims, a))?;
    let pool = pool.expect("check passed: the pool exists");

    // The pool's nodes with the pods bound to them, the pods waiting for it, and the shape
    // of its nodes (read off one of them, or its template).
    let pods = |place: &Place| caches.pods_by_place.objects(place, &caches.pods);
    let nodes = caches.nodes_by_pool.objects(pool_name, &caches.nodes);
    let bound: Vec<Vec<Arc<PodView>>> = nodes
        .iter()
        .map(|n| pods(&Place::Node(n.name_any())))
        .collect();
    let named = pods(&Place::Pool(pool_name.to_owned()));
    let mut others = pods(&Place::Unschedulable);
    if !others.is_empty() {
        // The targeted pools' shapes, read once for all such pods.
        let homes = homes(caches);
        others.retain(|p| homes.of(p) == Some(pool_name));
    }
    let pool_pods = PoolPods {
        nodes: nodes
            .iter()
            .zip(&bound)
            .map(|(n, pods)| (n.as_ref(), pods.iter().map(AsRef::as_ref).collect()))
            .collect(),
        named: named.iter().map(AsRef::as_ref).collect(),
        others: others.iter().map(AsRef::as_ref).collect(),
    };
    let shape = fit::shape(&pool, nodes.first().map(AsRef::as_ref));
    // Pods no node of the pool can run are no demand (no number of nodes helps): they are
    // named instead.
    let demand = pool_demand(&pool_pods, &shape, capacity);
    let at_quota = a
        .status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, condition_type::NODEPOOL_READY))
        .is_some_and(|c| c.status == ConditionStatus::False && c.reason == reason::AT_QUOTA);
    Ok(Observed {
        pool,
        capacity,
        demand,
        at_quota,
    })
}

/// The pools an unschedulable pod that names no pool may be demand of: those an Autoscaler
/// targets, with their nodes' shape (see [`Homes`]).
pub(super) fn homes(caches: &Caches) -> Homes {
    let pools = caches
        .pools
        .state()
        .iter()
        .filter(|p| caches.autoscalers_by_pool.count(p.name_any().as_str()) > 0)
        .filter_map(|p| {
            let capacity = p.spec.template.capacity.values().ok()?;
            let node = caches
                .nodes_by_pool
                .objects(p.name_any().as_str(), &caches.nodes)
                .into_iter()
                .next();
            Some((p.name_any(), fit::shape(p, node.as_deref()), capacity))
        })
        .collect();
    Homes::new(pools)
}
