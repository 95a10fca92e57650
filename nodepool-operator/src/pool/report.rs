//! The report phase: the status this operator owns, written through the write strategy
//! when a field of it differs, and the events of what changed.
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::Api;
use nodepool_core::disruption::Plan;
use nodepool_core::status::{Blocker, Disrupting, desired_status, shown_reason};
use operator_kit::Change;
use operator_kit::events::EventType;
use shared_crd::condition::ConditionStatus;
use shared_crd::{DisruptionReason, NodePool, condition_type, event_reason, field_manager, reason};

use super::act::Acted;
use super::{Context, Error};

/// Writes the status the pool has after this reconcile (the cache's nodes, plus what
/// was just created, minus what was just removed), a Warning event when a blocker newly
/// shows, and an event when disruption is newly held back. The reconcile that scaled also records `lastScaleTime`, under a field
/// manager of its own so that later applies, which leave it out, do not remove it.
pub(super) async fn status(
    pool: &NodePool,
    ctx: &Context,
    live: &[&Node],
    acted: &Acted,
    disrupting: &Disrupting,
) -> Result<(), Error> {
    let observed: Vec<&Node> = live
        .iter()
        .copied()
        .filter(|n| !acted.removed.contains(&n.name_any()))
        .chain(acted.created.iter())
        .collect();
    let now = shared_crd::time::now();
    let mut status = desired_status(
        pool,
        &observed,
        acted.blocker.as_ref(),
        disrupting,
        now.clone(),
    );
    let scaled = !acted.created.is_empty() || !acted.removed.is_empty();
    let change = if scaled {
        status.last_scale_time = Some(now);
        Change::status(&status).with_field_manager(field_manager::NODEPOOL_OPERATOR_SCALING)
    } else {
        Change::status(&status)
    };
    let pools: Api<NodePool> = Api::all(ctx.client.clone());
    let outcome = ctx
        .writer
        .write(&pools, pool, &change)
        .await
        .map_err(Error::StatusWriteFailed)?;
    // Events on transitions only: the blocker is new to the status the cache shows.
    if let Some(blocker) = &acted.blocker
        && outcome.is_written()
        && shown_reason(pool, condition_type::SCALING) != Some(blocker.reason())
    {
        let note = match blocker {
            Blocker::AtQuota { max_nodes } => format!(
                "provider quota of {max_nodes} nodes reached; pool has {} of {}",
                observed.len(),
                pool.spec.replicas
            ),
            Blocker::ProviderError(m) | Blocker::InvalidSpec(m) => m.clone(),
        };
        ctx.publish(pool, EventType::Warning, blocker.reason(), note)
            .await;
    }
    // Disruption newly held back: a budget or do-not-disrupt is the pool working as asked
    // (Normal); a repair stop means more nodes are sick than repair may touch (Warning).
    let (held_status, held_reason, message) = &disrupting.condition;
    let holds = [
        reason::BUDGET_EXHAUSTED,
        reason::DO_NOT_DISRUPT,
        reason::REPAIR_BLOCKED,
    ];
    if *held_status == ConditionStatus::False
        && holds.contains(held_reason)
        && outcome.is_written()
        && shown_reason(pool, condition_type::DISRUPTING) != Some(*held_reason)
    {
        let type_ = if *held_reason == reason::REPAIR_BLOCKED {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.publish(
            pool,
            type_,
            event_reason::DISRUPTION_BLOCKED,
            message.clone(),
        )
        .await;
    }
    Ok(())
}

/// Normal events for the nodes created, removed and replaced, with the log lines that
/// say the same.
pub(super) async fn scaled(
    pool: &NodePool,
    ctx: &Context,
    live: &[&Node],
    plan: &Plan<'_>,
    acted: &Acted,
) {
    let (name, desired) = (pool.name_any(), plan.desired);
    if !acted.created.is_empty() {
        let mut note = format!(
            "created {} node(s): {} -> {} of {desired}",
            acted.created.len(),
            live.len(),
            live.len() + acted.created.len()
        );
        if !plan.replacing.is_empty() {
            let replacing: Vec<String> = plan
                .replacing
                .iter()
                .map(|d| format!("{} ({})", d.name(), d.reason))
                .collect();
            note += &format!("; replacing {}", replacing.join(", "));
        }
        tracing::info!(pool = %name, %note, "scaled up");
        ctx.publish(pool, EventType::Normal, event_reason::SCALED_UP, note)
            .await;
    }
    for (node, why) in &acted.disrupted {
        if *why == DisruptionReason::ScaleDown {
            continue;
        }
        let note = format!("deleting node {node} ({why}): its replacement is Ready");
        tracing::info!(pool = %name, %note, "disrupting");
        ctx.publish(pool, EventType::Normal, event_reason::DISRUPTING, note)
            .await;
    }
    let mut removed: Vec<String> = acted
        .disrupted
        .iter()
        .filter(|(_, why)| *why == DisruptionReason::ScaleDown)
        .map(|(n, _)| n.clone())
        .collect();
    if !removed.is_empty() {
        removed.sort();
        let note = format!(
            "removing {} node(s) {}: {} -> {} of {desired}",
            removed.len(),
            removed.join(", "),
            live.len(),
            live.len() - removed.len()
        );
        tracing::info!(pool = %name, %note, "scaled down");
        ctx.publish(pool, EventType::Normal, event_reason::SCALED_DOWN, note)
            .await;
    }
}
