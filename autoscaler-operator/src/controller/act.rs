//! The act phase: the cross-operator write, a pool's `spec.replicas`, the one field of a
//! NodePool this operator owns.
use autoscaler_core::decide::Decision;
use kube::ResourceExt;
use kube::api::Api;
use operator_kit::Change;
use operator_kit::events::EventType;
use serde::Serialize;
use shared_crd::{Autoscaler, NodePool, event_reason};

use super::{Context, Error};

/// The body of the write: `spec.replicas` and nothing else.
#[derive(Serialize)]
struct Scale {
    spec: Replicas,
}

#[derive(Serialize)]
struct Replicas {
    replicas: i32,
}

/// Writes the size `decision` asks of `pool` when the pool asks another; true when written.
pub(super) async fn scale(
    a: &Autoscaler,
    ctx: &Context,
    pool: &NodePool,
    decision: &Decision,
) -> Result<bool, Error> {
    let (current, desired) = (pool.spec.replicas, decision.desired);
    if desired == current {
        return Ok(false);
    }
    let pools: Api<NodePool> = Api::all(ctx.client.clone());
    let change = Change::main(&Scale {
        spec: Replicas { replicas: desired },
    });
    let written = ctx
        .writer
        .write(&pools, pool, &change)
        .await
        .map_err(|source| Error::ScaleWriteFailed {
            pool: pool.name_any(),
            source,
        })?;
    if !written.is_written() {
        return Ok(false);
    }
    let (reason, verb) = if desired > current {
        (event_reason::SCALED_UP, "up")
    } else {
        (event_reason::SCALED_DOWN, "down")
    };
    let pool_name = pool.name_any();
    tracing::info!(
        autoscaler = %a.name_any(), pool = %pool_name, current, desired,
        "scaled {verb}: {}", decision.explanation
    );
    let note = format!(
        "NodePool {pool_name}: {current} -> {desired} nodes ({})",
        decision.explanation
    );
    ctx.publish(a, EventType::Normal, reason, note).await;
    Ok(true)
}
