//! The end of a node and of its pods, as a kubelet and Karpenter's termination
//! controller do it, one Node per reconcile:
//! - a node whose pool is gone (or being deleted) is deleted; on a cluster with a
//!   garbage collector the owner reference does the same;
//! - a deleted node is cordoned and drained (its pods evicted, PodDisruptionBudgets
//!   honoured) before its termination finalizer goes. Past the drain timeout a drain the
//!   budgets still block is shown on the Node (condition `DrainBlocked`, an event naming
//!   the budgets) and goes on; only the pool's `terminationGracePeriodSeconds`, an
//!   opt-in, deletes the pods anyway. Both clocks are the node's `deletionTimestamp`, so
//!   a restart neither resets nor shortens them;
//! - a pod bound to a Ready virtual node is reported Running (`kubelet`), and a pod being
//!   deleted on one is finished (no kubelet would).
//!
//! Progress is driven by pod events (a pod gone re-runs its node's drain), not polling.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use operator_kit::NotFoundIsDone;
use operator_kit::controller::{ReconcileError, Reconciler, Runner, RunnerSettings};
use operator_kit::events::{Event as KubeEvent, EventType, Recorder};
use operator_kit::watch::hash_of;
use serde_json::json;
use shared_crd::node_condition::DRAIN_BLOCKED;
use shared_crd::{NODE_LEASE_NAMESPACE, NodePool, TERMINATION_FINALIZER, event_reason, reason};

use crate::caches::Caches;
use crate::decide::is_ready;
use crate::provider::{is_virtual, pool_of, pool_owner};
use crate::{drain, kubelet};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "node-lifecycle";

pub struct Context {
    client: Client,
    recorder: Recorder,
    caches: Caches,
    evictor: drain::Evictor,
    drain_timeout: Duration,
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        caches: Caches,
        drain_timeout: Duration,
    ) -> Self {
        Self {
            evictor: drain::Evictor::new(client.clone()),
            client,
            recorder,
            caches,
            drain_timeout,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("deleting orphaned node {node}: {source}")]
    OrphanDeletionFailed {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("reading the pool of node {node}: {source}")]
    OwnerLookupFailed {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("cordoning node {node}: {source}")]
    CordonFailed {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("evicting pod {pod}: {source}")]
    EvictionFailed {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("reporting the blocked drain on node {node}: {source}")]
    ConditionFailed {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("reporting pod {pod} running: {source}")]
    PodStartFailed {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("finishing pod {pod}: {source}")]
    PodFinishFailed {
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting the Lease of node {node}: {source}")]
    LeaseDeletionFailed {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("removing the termination finalizer of node {node}: {source}")]
    FinalizerRemovalFailed {
        node: String,
        #[source]
        source: kube::Error,
    },
}

impl ReconcileError for Error {
    fn category(&self) -> &'static str {
        match self {
            Error::OrphanDeletionFailed { .. } => "orphan_delete",
            Error::OwnerLookupFailed { .. } => "owner_lookup",
            Error::CordonFailed { .. } => "cordon",
            Error::EvictionFailed { .. } => "evict",
            Error::ConditionFailed { .. } => "condition",
            Error::PodStartFailed { .. } => "pod_start",
            Error::PodFinishFailed { .. } => "pod_finish",
            Error::LeaseDeletionFailed { .. } => "lease_delete",
            Error::FinalizerRemovalFailed { .. } => "finalizer",
        }
    }
}

impl Reconciler for Context {
    type Object = Node;
    type Error = Error;
    const NAME: &'static str = CONTROLLER;

    async fn reconcile(&self, node: Arc<Node>) -> Result<Action, Error> {
        reconcile_node(&node, self).await
    }
}

/// The node lifecycle controller: a node, the pods bound to it (only on this operator's
/// virtual nodes), and its pool (a pool deleted, or made anew under the same name,
/// orphans its nodes).
pub fn runner(ctx: Context, settings: &RunnerSettings) -> Runner<Context> {
    let caches = ctx.caches.clone();
    let (for_pods, for_pools) = (caches.clone(), caches.clone());
    Runner::new(ctx, &caches.nodes, node_state, settings)
        .watches(&caches.pods, pod_state, move |pod: Pod| {
            let node = pod.spec.as_ref().and_then(|s| s.node_name.clone())?;
            let node = ObjectRef::<Node>::new(&node);
            // Pods on nodes that are not this operator's are none of its business.
            for_pods
                .nodes
                .get(&node)
                .filter(|n| is_virtual(n))
                .map(|_| node)
        })
        .watches(
            &caches.pools,
            |p: &NodePool| hash_of(&(&p.metadata.uid, p.metadata.deletion_timestamp.is_some())),
            move |pool: NodePool| for_pools.nodes_by_pool.get(&pool.name_any()),
        )
}

/// What of a node this controller acts on.
fn node_state(node: &Node) -> u64 {
    hash_of(&(
        node.metadata.deletion_timestamp.is_some(),
        node.finalizers(),
        node.owner_references()
            .iter()
            .map(|r| &r.uid)
            .collect::<Vec<_>>(),
        node.spec.as_ref().and_then(|s| s.unschedulable),
        // Ready: the pods bound to it start.
        is_ready(node),
    ))
}

/// What of a pod: where it is and whether it is on its way out.
fn pod_state(pod: &Pod) -> u64 {
    hash_of(&(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        pod.metadata.deletion_timestamp.is_some(),
    ))
}

async fn reconcile_node(node: &Node, ctx: &Context) -> Result<Action, Error> {
    if !is_virtual(node) {
        // Foreign nodes are never adopted, drained or deleted.
        return Ok(Action::await_change());
    }
    let name = node.name_any();
    let pods = ctx.caches.pods_on(&name);
    // The kubelet's last step for a pod being deleted: there are no containers to stop.
    for pod in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_some())
    {
        finish(ctx, pod).await?;
    }
    // The kubelet's first step: a pod bound to a Ready node runs (no containers to pull).
    if node.metadata.deletion_timestamp.is_none() && is_ready(node) {
        for pod in pods.iter().filter(|p| kubelet::needs_start(p)) {
            kubelet::start(&ctx.client, pod, node)
                .await
                .map_err(|source| Error::PodStartFailed {
                    pod: pod_key(pod),
                    source,
                })?;
        }
    }
    let Some(deleted_at) = node.metadata.deletion_timestamp.as_ref() else {
        if is_orphaned(node, ctx) && orphan_confirmed(node, ctx).await? {
            let nodes: Api<Node> = Api::all(ctx.client.clone());
            let deleted = nodes
                .delete(&name, &DeleteParams::default())
                .await
                .ok_if_not_found()
                .map_err(|source| Error::OrphanDeletionFailed {
                    node: name.clone(),
                    source,
                })?;
            if deleted.is_some() {
                tracing::info!(node = %name, "deleting node: its pool is gone");
            }
        }
        return Ok(Action::await_change());
    };
    if !node.finalizers().iter().any(|f| f == TERMINATION_FINALIZER) {
        return Ok(Action::await_change());
    }

    // Drain: cordon, then evict what is left, until nothing is or the time is up.
    if node.spec.as_ref().and_then(|s| s.unschedulable) != Some(true) {
        let nodes: Api<Node> = Api::all(ctx.client.clone());
        let patch = json!({"spec": {"unschedulable": true}});
        let cordoned = nodes
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .ok_if_not_found()
            .map_err(|source| Error::CordonFailed {
                node: name.clone(),
                source,
            })?;
        if cordoned.is_none() {
            return Ok(Action::await_change());
        }
    }
    let remaining: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !drain::stays_on_drain(p))
        .collect();
    let elapsed =
        Duration::try_from(Timestamp::now().duration_since(deleted_at.0)).unwrap_or_default();
    let force_after = termination_grace_period(node, ctx);
    if !remaining.is_empty() {
        if let Some(grace) = force_after.filter(|grace| elapsed >= *grace) {
            let note = format!(
                "node {name}: {} pod(s) still on it after the pool's \
                 terminationGracePeriodSeconds ({}s); deleting them, PodDisruptionBudgets bypassed",
                remaining.len(),
                grace.as_secs()
            );
            publish(
                ctx,
                node,
                EventType::Warning,
                event_reason::NODE_DRAIN_FORCED,
                note,
            )
            .await;
        } else {
            return evict(ctx, node, &remaining, elapsed, force_after).await;
        }
    }
    // Nothing may run on a node that goes away: DaemonSet and mirror pods go last.
    for pod in &pods {
        finish(ctx, pod).await?;
    }
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), NODE_LEASE_NAMESPACE);
    leases
        .delete(&name, &DeleteParams::default())
        .await
        .ok_if_not_found()
        .map_err(|source| Error::LeaseDeletionFailed {
            node: name.clone(),
            source,
        })?;
    remove_finalizer(ctx, node).await?;
    tracing::info!(node = %name, drained_in = ?elapsed, "node drained and removed");
    Ok(Action::await_change())
}

/// How often a drain that budgets block tries again (`kubectl drain` tries every 5 s).
const EVICTION_RETRY: Duration = Duration::from_secs(10);

/// One drain step: evicts what is left. Evicted pods come back as pod events (their
/// deletion, then their end); refused ones are tried again every [`EVICTION_RETRY`], and
/// past the drain timeout the Node says which budgets block it.
async fn evict(
    ctx: &Context,
    node: &Node,
    remaining: &[&Arc<Pod>],
    elapsed: Duration,
    force_after: Option<Duration>,
) -> Result<Action, Error> {
    let name = node.name_any();
    let mut blocked = Vec::new();
    for pod in remaining {
        let eviction = ctx
            .evictor
            .evict(pod)
            .await
            .map_err(|source| Error::EvictionFailed {
                pod: pod_key(pod),
                source,
            })?;
        if let drain::Eviction::Blocked(why) = eviction {
            blocked.push(format!("{}: {why}", pod_key(pod)));
        }
    }
    tracing::info!(node = %name, remaining = remaining.len(), blocked = blocked.len(), "draining");
    if !blocked.is_empty() && elapsed >= ctx.drain_timeout {
        report_blocked(ctx, node, &blocked).await?;
    }
    let mut next = EVICTION_RETRY;
    if let Some(left) = ctx
        .drain_timeout
        .checked_sub(elapsed)
        .filter(|d| !d.is_zero())
    {
        next = next.min(left);
    }
    if let Some(left) = force_after.and_then(|f| f.checked_sub(elapsed)) {
        next = next.min(left.max(Duration::from_millis(100)));
    }
    Ok(Action::requeue(next))
}

/// Puts (or updates) the Node's `DrainBlocked` condition and, when it changed, a Warning
/// event; nothing when the Node already says the same.
async fn report_blocked(ctx: &Context, node: &Node, blocked: &[String]) -> Result<(), Error> {
    let name = node.name_any();
    let mut message = format!(
        "{} pod(s) not evicted after {}s: {}",
        blocked.len(),
        ctx.drain_timeout.as_secs(),
        blocked.join("; ")
    );
    // A condition message is for people; a node full of refused pods would not fit.
    if message.len() > 1024 {
        let mut cut = 1021;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    let current = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == DRAIN_BLOCKED));
    if current.is_some_and(|c| {
        c.status == "True"
            && c.reason.as_deref() == Some(reason::DISRUPTION_BUDGET)
            && c.message.as_deref() == Some(message.as_str())
    }) {
        return Ok(());
    }
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now());
    let condition = NodeCondition {
        type_: DRAIN_BLOCKED.into(),
        status: "True".into(),
        reason: Some(reason::DISRUPTION_BUDGET.into()),
        message: Some(message.clone()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(
            current
                .filter(|c| c.status == "True")
                .and_then(|c| c.last_transition_time.clone())
                .unwrap_or(now),
        ),
    };
    // Strategic merge: conditions merge by type, beside the heartbeat's Ready.
    let patch = json!({"status": {"conditions": [condition]}});
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let reported = nodes
        .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .ok_if_not_found()
        .map_err(|source| Error::ConditionFailed {
            node: name.clone(),
            source,
        })?;
    if reported.is_none() {
        return Ok(());
    }
    let note = format!(
        "node {name}: {message}; retrying every {}s. Set the pool's \
         spec.template.terminationGracePeriodSeconds to delete them anyway.",
        EVICTION_RETRY.as_secs()
    );
    publish(
        ctx,
        node,
        EventType::Warning,
        event_reason::DRAIN_BLOCKED,
        note,
    )
    .await;
    Ok(())
}

/// The owning pool's `terminationGracePeriodSeconds`, when the pool (this very one, by
/// uid) is still there and sets it.
fn termination_grace_period(node: &Node, ctx: &Context) -> Option<Duration> {
    let owner = pool_owner(node)?;
    let pool = ctx.caches.pools.get(&ObjectRef::new(pool_of(node)?))?;
    if pool.metadata.uid.as_deref() != Some(owner.uid.as_str()) {
        return None;
    }
    let seconds = pool.spec.template.termination_grace_period_seconds?;
    Some(Duration::from_secs(seconds.max(0) as u64))
}

/// Whether the pool whose metadata is `pool` no longer owns what `owner` points at: it
/// was made anew under the same name (another uid), or it is being deleted.
fn replaced_or_deleted(pool: &ObjectMeta, owner: &OwnerReference) -> bool {
    pool.uid.as_deref() != Some(owner.uid.as_str()) || pool.deletion_timestamp.is_some()
}

/// Whether the API server agrees that the owning pool is gone, made anew or being
/// deleted. The cache can be wrong about absence (a pool this version cannot read is left
/// out of it; a watch can lag), so a node is deleted only after a live read of the pool's
/// metadata, as the garbage collector checks an owner before it deletes a dependent.
async fn orphan_confirmed(node: &Node, ctx: &Context) -> Result<bool, Error> {
    let (Some(pool_name), Some(owner)) = (pool_of(node), pool_owner(node)) else {
        return Ok(false);
    };
    let pools: Api<NodePool> = Api::all(ctx.client.clone());
    let live =
        pools
            .get_metadata_opt(pool_name)
            .await
            .map_err(|source| Error::OwnerLookupFailed {
                node: node.name_any(),
                source,
            })?;
    Ok(match live {
        None => true,
        Some(pool) => {
            let orphaned = replaced_or_deleted(&pool.metadata, owner);
            if !orphaned {
                tracing::warn!(
                    node = %node.name_any(), pool = %pool_name,
                    "the pool is not in the cache but exists: its node stays"
                );
            }
            orphaned
        }
    })
}

/// Whether the cache shows the pool that owns `node` gone, made anew or being deleted.
fn is_orphaned(node: &Node, ctx: &Context) -> bool {
    let (Some(pool_name), Some(owner)) = (pool_of(node), pool_owner(node)) else {
        return false;
    };
    match ctx.caches.pools.get(&ObjectRef::new(pool_name)) {
        None => true,
        Some(pool) => replaced_or_deleted(&pool.metadata, owner),
    }
}

async fn finish(ctx: &Context, pod: &Pod) -> Result<(), Error> {
    drain::finish(&ctx.client, pod)
        .await
        .map_err(|source| Error::PodFinishFailed {
            pod: pod_key(pod),
            source,
        })
}

async fn remove_finalizer(ctx: &Context, node: &Node) -> Result<(), Error> {
    let patch = crate::finalizer_removal(node.finalizers(), TERMINATION_FINALIZER);
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    nodes
        .patch(
            &node.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
        .ok_if_not_found()
        .map(|_| ())
        .map_err(|source| Error::FinalizerRemovalFailed {
            node: node.name_any(),
            source,
        })
}

fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

async fn publish(ctx: &Context, node: &Node, type_: EventType, reason: &str, note: String) {
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Drain".into(),
        secondary: None,
    };
    ctx.recorder.publish(node, event).await;
}
