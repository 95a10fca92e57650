//! The report phase: the status this operator owns, written through the write strategy
//! when a field of it differs, and the events of what changed.
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::Api;
use nodepool_core::status::{Blocker, desired_status, shown_reason};
use operator_kit::Change;
use operator_kit::events::EventType;
use shared_crd::{NodePool, condition_type, event_reason, field_manager};

use super::act::Acted;
use super::{Context, Error};

/// Writes the status the pool has after this reconcile (the cache's nodes, plus what
/// was just created, minus what was just removed), and a Warning event when a blocker
/// newly shows. The reconcile that scaled also records `lastScaleTime`, under a field
/// manager of its own so that later applies, which leave it out, do not remove it.
pub(super) async fn status(
    pool: &NodePool,
    ctx: &Context,
    live: &[&Node],
    acted: &Acted,
) -> Result<(), Error> {
    let observed: Vec<&Node> = live
        .iter()
        .copied()
        .filter(|n| !acted.removed.contains(&n.name_any()))
        .chain(acted.created.iter())
        .collect();
    let now = shared_crd::time::now();
    let mut status = desired_status(pool, &observed, acted.blocker.as_ref(), now.clone());
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
    Ok(())
}

/// Normal events for the nodes created and removed, with the log lines that say the same.
pub(super) async fn scaled(pool: &NodePool, ctx: &Context, live: &[&Node], acted: &Acted) {
    let (name, desired) = (pool.name_any(), pool.spec.replicas.max(0));
    if !acted.created.is_empty() {
        let note = format!(
            "created {} node(s): {} -> {} of {desired}",
            acted.created.len(),
            live.len(),
            live.len() + acted.created.len()
        );
        tracing::info!(pool = %name, %note, "scaled up");
        ctx.publish(pool, EventType::Normal, event_reason::SCALED_UP, note)
            .await;
    }
    if !acted.removed.is_empty() {
        let mut removed: Vec<_> = acted.removed.iter().cloned().collect();
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
