//! A deleted node's drain: cordon, evict what is left (PodDisruptionBudgets honoured),
//! wait for the pods that carry `do-not-disrupt` while the node is Ready, report a drain
//! the budgets (or those pods) block past the timeout, delete what is left after the pool's
//! `terminationGracePeriodSeconds`, then let the node go. The rules are
//! `nodepool_core::drain`'s.
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use nodepool_core::drain::{
    EVICTION_RETRY, WAITING_FOR, blocked_message, next_try, stays_on_drain, waits_for,
};
use nodepool_core::nodes::{pool_of, pool_owner};
use nodepool_core::pod::BoundPod;
use operator_kit::NotFoundIsDone;
use operator_kit::events::EventType;
use operator_kit::patch::{SpecPatch, StatusPatch, finalizer_removal};
use shared_crd::node_condition::DRAIN_BLOCKED;
use shared_crd::{TERMINATION_FINALIZER, event_reason, reason};

use super::{Context, Error};
use crate::eviction::Eviction;
use crate::provider::Kubelet;

/// One step of the drain of `node`, deleted at `deleted_at`, with `pods` bound to it.
pub(super) async fn drain(
    node: &Node,
    pods: &[Arc<BoundPod>],
    deleted_at: &Time,
    kubelet: Option<&dyn Kubelet>,
    ctx: &Context,
) -> Result<Action, Error> {
    let name = node.name_any();
    if !cordon(node, ctx).await? {
        return Ok(Action::await_change());
    }
    let remaining: Vec<&Arc<BoundPod>> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !stays_on_drain(p))
        .collect();
    let elapsed =
        Duration::try_from(Timestamp::now().duration_since(deleted_at.0)).unwrap_or_default();
    let force_after = termination_grace_period(node, ctx);
    if !remaining.is_empty() {
        let Some(grace) = force_after.filter(|grace| elapsed >= *grace) else {
            return evict(ctx, node, &remaining, elapsed, force_after).await;
        };
        let note = format!(
            "node {name}: {} pod(s) still on it after the pool's \
             terminationGracePeriodSeconds ({}s); deleting them, PodDisruptionBudgets bypassed",
            remaining.len(),
            grace.as_secs()
        );
        ctx.publish(
            node,
            EventType::Warning,
            event_reason::NODE_DRAIN_FORCED,
            note,
        )
        .await;
    }
    if let Some(kubelet) = kubelet {
        kubelet.release(node, pods).await?;
    }
    remove_finalizer(ctx, node).await?;
    tracing::info!(node = %name, drained_in = ?elapsed, "node drained and removed");
    Ok(Action::await_change())
}

/// Marks `node` unschedulable, unless it is; false when the node is gone.
async fn cordon(node: &Node, ctx: &Context) -> Result<bool, Error> {
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        return Ok(true);
    }
    let name = node.name_any();
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let patch = SpecPatch {
        spec: NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        },
    };
    let cordoned = nodes
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .ok_if_not_found()
        .map_err(|source| Error::CordonFailed { node: name, source })?;
    Ok(cordoned.is_some())
}

/// Evicts what is left but the pods the drain waits for (`do-not-disrupt`, on a Ready
/// node). Evicted pods come back as pod events (their deletion, then their end); refused
/// ones are tried again every [`EVICTION_RETRY`], and past the drain timeout the Node says
/// which budgets, or which waited-for pods, block it.
async fn evict(
    ctx: &Context,
    node: &Node,
    remaining: &[&Arc<BoundPod>],
    elapsed: Duration,
    force_after: Option<Duration>,
) -> Result<Action, Error> {
    let mut blocked = Vec::new();
    let mut waited = 0;
    for pod in remaining {
        let key = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        if waits_for(pod, node) {
            blocked.push(format!("{key}: {WAITING_FOR}"));
            waited += 1;
            continue;
        }
        let eviction = ctx
            .evictor
            .evict(pod)
            .await
            .map_err(|source| Error::EvictionFailed {
                pod: key.clone(),
                source,
            })?;
        if let Eviction::Blocked(why) = eviction {
            blocked.push(format!("{key}: {why}"));
        }
    }
    tracing::info!(node = %node.name_any(), remaining = remaining.len(), blocked = blocked.len(), "draining");
    if !blocked.is_empty() && elapsed >= ctx.drain_timeout {
        // DisruptionBudget while a budget refuses any eviction, DoNotDisrupt when only
        // waited-for pods are left.
        let why = if waited == blocked.len() {
            reason::DO_NOT_DISRUPT
        } else {
            reason::DISRUPTION_BUDGET
        };
        report_blocked(ctx, node, &blocked, why).await?;
    }
    Ok(Action::requeue(next_try(
        elapsed,
        ctx.drain_timeout,
        force_after,
    )))
}

/// Puts (or updates) the Node's `DrainBlocked` condition (reason `why`) and, when it
/// changed, a Warning event; nothing when the Node already says the same.
async fn report_blocked(
    ctx: &Context,
    node: &Node,
    blocked: &[String],
    why: &str,
) -> Result<(), Error> {
    let name = node.name_any();
    let message = blocked_message(blocked, ctx.drain_timeout);
    let current = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == DRAIN_BLOCKED));
    if current.is_some_and(|c| {
        c.status == "True"
            && c.reason.as_deref() == Some(why)
            && c.message.as_deref() == Some(message.as_str())
    }) {
        return Ok(());
    }
    let now = Time(Timestamp::now());
    let condition = NodeCondition {
        type_: DRAIN_BLOCKED.into(),
        status: "True".into(),
        reason: Some(why.into()),
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
    let patch = StatusPatch {
        status: NodeStatus {
            conditions: Some(vec![condition]),
            ..Default::default()
        },
    };
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
    ctx.publish(node, EventType::Warning, event_reason::DRAIN_BLOCKED, note)
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

async fn remove_finalizer(ctx: &Context, node: &Node) -> Result<(), Error> {
    let patch = finalizer_removal(node.finalizers(), TERMINATION_FINALIZER);
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
