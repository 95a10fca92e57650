//! The act phase: the nodes the plan wants created at once (under `--max-nodes`, reserved
//! atomically with the reconciles of other pools), the ones it lets go deleted (drained
//! first, by their finalizer), and nodes made before template hashes got theirs.
use std::collections::HashSet;
use std::time::Instant;

use futures::{StreamExt, stream};

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use nodepool_core::disruption::{Disrupted, Plan};
use nodepool_core::naming::free_node_names;
use nodepool_core::sizing::{Growth, nodes_to_add};
use nodepool_core::status::Blocker;
use nodepool_core::template::hash_of;
use operator_kit::NotFoundIsDone;
use shared_crd::{DisruptionReason, NodePool, TEMPLATE_HASH_ANNOTATION};

use super::{Context, Error};
use crate::caches::trim_node;
use crate::provider::Created;

/// Node creates or deletes of one reconcile in flight at once. The client speaks HTTP/1.1,
/// so each request in flight holds a connection of its own, with its TLS and read buffers,
/// and the pool keeps it open a while after: a pool of 1,250 nodes created all at once
/// peaked at 118.8 MB, 85.0 MB with this bound (`make bench-envelope`, 10,000 pods). 32
/// at once keep this machine's API server busy (16 writers reach its rate).
pub const WRITES_IN_FLIGHT: usize = 32;

/// The outputs of `requests`, in their order, [`WRITES_IN_FLIGHT`] of them running at a
/// time. They are made first and streamed after: a stream of a closure's futures is not
/// `Send` inside the reconcile.
async fn bounded<F: Future>(requests: Vec<F>) -> Vec<F::Output> {
    stream::iter(requests)
        .buffered(WRITES_IN_FLIGHT)
        .collect()
        .await
}

/// What the act step did.
#[derive(Default)]
pub(super) struct Acted {
    pub created: Vec<Node>,
    /// A node that existed already though the cache did not show it.
    pub unseen: Option<String>,
    pub removed: HashSet<String>,
    /// The nodes removed, with why (ScaleDown, or the reason of a replacement).
    pub disrupted: Vec<(String, DisruptionReason)>,
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

/// Creates the nodes the plan wants beyond `live` (the pool's nodes not being deleted)
/// and deletes the ones it lets go; `taken` holds every name in use.
pub(super) async fn converge(
    pool: &NodePool,
    ctx: &Context,
    plan: &Plan<'_>,
    live: &[&Node],
    taken: &HashSet<String>,
) -> Result<Acted, Error> {
    let (growth, names) = plan_growth(pool, ctx, plan.desired, live.len(), taken);
    let mut acted = Acted {
        blocker: growth.at_quota.then(|| Blocker::AtQuota {
            max_nodes: ctx.settings.max_nodes.unwrap_or_default(),
        }),
        ..Default::default()
    };
    if !names.is_empty() {
        create_nodes(pool, ctx, names, &mut acted).await;
    }
    if !plan.delete.is_empty() {
        remove_nodes(&pool.name_any(), ctx, &plan.delete, &mut acted).await?;
    }
    Ok(acted)
}

/// Puts the current template hash on the pool's nodes that have none (made before
/// releases recorded it): they are taken to be on the current template, as Karpenter
/// does with the nodes it finds on an upgrade. One write per such node, once.
pub(super) async fn stamp_template_hash(
    ctx: &Context,
    live: &[&Node],
    hash: &str,
) -> Result<(), Error> {
    let unstamped: Vec<&&Node> = live.iter().filter(|n| hash_of(n).is_none()).collect();
    if unstamped.is_empty() {
        return Ok(());
    }
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({
        "metadata": { "annotations": { TEMPLATE_HASH_ANNOTATION: hash } }
    });
    for node in unstamped {
        nodes
            .patch(
                &node.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .ok_if_not_found()
            .map_err(|source| Error::TemplateHashStampFailed {
                node: node.name_any(),
                source,
            })?;
    }
    Ok(())
}

/// How many nodes to add, and their names, decided and reserved under one lock
/// (`quota`): the pool counts the nodes it is creating that the cache does not show yet,
/// so a reconcile that runs before the watch delivered them does not create them again;
/// under `--max-nodes`, reconciles of other pools running at once count them too.
fn plan_growth(
    pool: &NodePool,
    ctx: &Context,
    desired: usize,
    current: usize,
    taken: &HashSet<String>,
) -> (Growth, Vec<String>) {
    let desired = i32::try_from(desired).unwrap_or(i32::MAX);
    let pool_name = pool.name_any();
    let now = Instant::now();
    let mut reservations = ctx.reservations.lock().expect("not poisoned");
    let outstanding = reservations.outstanding(now, |name| {
        ctx.caches.nodes.get(&ObjectRef::new(name)).is_some()
    });
    // The names this pool is creating are taken too; a copy of the set only when it has some.
    let creating: Vec<String> = reservations.of(&pool_name).map(str::to_owned).collect();
    let taken = if creating.is_empty() {
        std::borrow::Cow::Borrowed(taken)
    } else {
        let mut all = taken.clone();
        all.extend(creating.iter().cloned());
        std::borrow::Cow::Owned(all)
    };
    let cached = ctx.caches.nodes_by_pool.len();
    let growth = nodes_to_add(
        desired,
        current + creating.len(),
        cached + outstanding,
        ctx.settings.max_nodes,
    );
    let names = free_node_names(pool, &taken, growth.add);
    reservations.add(&pool_name, &names, now);
    (growth, names)
}

/// Creates the nodes `names`, [`WRITES_IN_FLIGHT`] at a time. A name that exists already is no new node: no
/// event, not counted. The first failure becomes the pool's `ProviderError`; a failed
/// name frees its quota reservation.
///
/// Each Node a create returns is trimmed as the cache trims it, as soon as it comes: the
/// status reads the new nodes with the cached ones, and a whole Node (its managedFields
/// are a tree of maps) held until the last create of a big scale-up was most of this
/// operator's heap at its peak (heaptrack: about 17 of 44.5 MB for 2,000 nodes).
async fn create_nodes(pool: &NodePool, ctx: &Context, names: Vec<String>, acted: &mut Acted) {
    let creates = names.iter().map(|n| async move {
        let mut created = ctx.provider.create(pool, n).await;
        if let Ok(Created::New(node)) = &mut created {
            trim_node(node);
        }
        created
    });
    let results = bounded(creates.collect()).await;
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

/// Deletes `victims`, [`WRITES_IN_FLIGHT`] at a time; each is drained before it goes (its finalizer).
async fn remove_nodes(
    pool: &str,
    ctx: &Context,
    victims: &[Disrupted<'_>],
    acted: &mut Acted,
) -> Result<(), Error> {
    let results = bounded(
        victims
            .iter()
            .map(|d| ctx.provider.delete(d.node))
            .collect(),
    )
    .await;
    let mut failed = None;
    for (victim, result) in victims.iter().zip(results) {
        if let Err(e) = result {
            failed.get_or_insert(e);
            continue;
        }
        acted.removed.insert(victim.name());
        acted.disrupted.push((victim.name(), victim.reason));
    }
    // Each one deleted is terminating until the cache says so too.
    ctx.deletions.lock().expect("not poisoned").add(
        pool,
        acted.removed.iter().map(String::as_str),
        Instant::now(),
    );
    match failed {
        Some(e) => Err(Error::NodeDeletionFailed(e)),
        None => Ok(()),
    }
}
