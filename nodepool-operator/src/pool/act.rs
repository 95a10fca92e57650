//! The act phase: the pool's missing nodes created at once (under `--max-nodes`, reserved
//! atomically with the reconciles of other pools), its surplus ones deleted (drained
//! first, by their finalizer).
use std::collections::HashSet;
use std::time::Instant;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use nodepool_core::naming::free_node_names;
use nodepool_core::sizing::{Growth, nodes_to_add, nodes_to_remove};
use nodepool_core::status::Blocker;
use shared_crd::NodePool;

use super::{Context, Error};
use crate::provider::Created;

/// What the act step did.
#[derive(Default)]
pub(super) struct Acted {
    pub created: Vec<Node>,
    /// A node that existed already though the cache did not show it.
    pub unseen: Option<String>,
    pub removed: HashSet<String>,
    pub blocker: Option<Blocker>,
}

impl Acted {
    /// Nothing done, for `blocker`.
    pub fn blocked(blocker: Blocker) -> Self {
        Self {
            blocker: Some(blocker),
            ..Default::default()
        }
    }
}

/// Creates the nodes the pool lacks and deletes the surplus ones; `live` are its nodes not
/// being deleted, `taken` every name in use.
pub(super) async fn resize(
    pool: &NodePool,
    ctx: &Context,
    live: &[&Node],
    taken: &HashSet<String>,
) -> Result<Acted, Error> {
    let desired = pool.spec.replicas.max(0) as usize;
    let (growth, names) = plan_growth(pool, ctx, live.len(), taken);
    let mut acted = Acted {
        blocker: growth.at_quota.then(|| Blocker::AtQuota {
            max_nodes: ctx.settings.max_nodes.unwrap_or_default(),
        }),
        ..Default::default()
    };
    if !names.is_empty() {
        create_nodes(pool, ctx, names, &mut acted).await;
    }
    if live.len() > desired {
        let victims = nodes_to_remove(live, live.len() - desired, |n| {
            ctx.caches.pods_on(&n.name_any()).len()
        });
        remove_nodes(ctx, &victims, &mut acted).await?;
    }
    Ok(acted)
}

/// How many nodes to add, and their names: under `--max-nodes`, decided and reserved
/// under one lock, so reconciles of other pools running at once count them (`quota`).
fn plan_growth(
    pool: &NodePool,
    ctx: &Context,
    current: usize,
    taken: &HashSet<String>,
) -> (Growth, Vec<String>) {
    let cached = ctx.caches.nodes_by_pool.len();
    let Some(max) = ctx.settings.max_nodes else {
        let growth = nodes_to_add(pool.spec.replicas, current, cached, None);
        return (growth, free_node_names(pool, taken, growth.add));
    };
    let now = Instant::now();
    let mut reservations = ctx.reservations.lock().expect("not poisoned");
    let outstanding = reservations.outstanding(now, |name| {
        ctx.caches.nodes.get(&ObjectRef::new(name)).is_some()
    });
    let growth = nodes_to_add(pool.spec.replicas, current, cached + outstanding, Some(max));
    let names = free_node_names(pool, taken, growth.add);
    reservations.add(&names, now);
    (growth, names)
}

/// Creates the nodes `names` at once. A name that exists already is no new node: no
/// event, not counted. The first failure becomes the pool's `ProviderError`; a failed
/// name frees its quota reservation.
async fn create_nodes(pool: &NodePool, ctx: &Context, names: Vec<String>, acted: &mut Acted) {
    let results =
        futures::future::join_all(names.iter().map(|n| ctx.provider.create(pool, n))).await;
    for (name, result) in names.into_iter().zip(results) {
        match result {
            Ok(Created::New(node)) => acted.created.push(*node),
            Ok(Created::AlreadyExists) => acted.unseen = Some(name),
            Err(e) => {
                ctx.reservations
                    .lock()
                    .expect("not poisoned")
                    .release(&name);
                if acted.blocker.is_none() {
                    acted.blocker = Some(Blocker::ProviderError(e.to_string()));
                }
            }
        }
    }
}

/// Deletes `victims` at once; each is drained before it goes (its finalizer).
async fn remove_nodes(ctx: &Context, victims: &[&Node], acted: &mut Acted) -> Result<(), Error> {
    let results = futures::future::join_all(victims.iter().map(|n| ctx.provider.delete(n))).await;
    for (node, result) in victims.iter().zip(results) {
        result.map_err(Error::NodeDeletionFailed)?;
        acted.removed.insert(node.name_any());
    }
    Ok(())
}
