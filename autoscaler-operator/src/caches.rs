//! What autoscaler-operator watches: one watch per kind, each feeding one cache and the
//! indexes a reconcile reads through, each object narrowed to what a decision reads.
use operator_kit::watch::{Cache, Index, Watch, Watches, trim_metadata};
use shared_crd::{Autoscaler, NodePool, POOL_LABEL};

use autoscaler_core::node::{self, NodeView};
use autoscaler_core::pod::{self, PodView};
use autoscaler_core::routing::{Place, place};

/// The caches of this operator and their indexes.
#[derive(Clone)]
pub struct Caches {
    pub autoscalers: Cache<Autoscaler>,
    /// Autoscalers by the pool they target.
    pub autoscalers_by_pool: Index<Autoscaler>,
    pub pools: Cache<NodePool>,
    /// Pods that are not finished, narrowed to what demand is made of.
    pub pods: Cache<PodView>,
    /// Those pods by where they are.
    pub pods_by_place: Index<PodView, Place>,
    /// The pools' nodes (those with the pool label), narrowed to labels, taints, readiness.
    pub nodes: Cache<NodeView>,
    /// Those nodes by pool.
    pub nodes_by_pool: Index<NodeView>,
}

impl Caches {
    /// Opens this operator's watches in `watches`.
    pub fn watch(watches: &mut Watches) -> Self {
        let autoscalers_by_pool =
            Index::new(|a: &Autoscaler| Some(a.spec.node_pool_ref.name.clone()));
        let pods_by_place = Index::new(place);
        let nodes_by_pool = Index::new(|n: &NodeView| n.pool().map(str::to_owned));
        Self {
            autoscalers: watches.add(Watch::all().index(&autoscalers_by_pool)),
            autoscalers_by_pool,
            pools: watches.add(Watch::all().trim(trim_pool)),
            // Finished pods want nothing.
            pods: watches.add(
                Watch::all()
                    .fields("status.phase!=Succeeded,status.phase!=Failed")
                    .trim(pod::trim)
                    .index(&pods_by_place),
            ),
            pods_by_place,
            nodes: watches.add(
                Watch::all()
                    .labels(POOL_LABEL)
                    .trim(node::trim)
                    .index(&nodes_by_pool),
            ),
            nodes_by_pool,
        }
    }
}

/// Conditions are not read here: size, template capacity and counts are.
fn trim_pool(p: &mut NodePool) {
    trim_metadata(p);
    if let Some(status) = p.status.as_mut() {
        status.conditions.clear();
    }
}
