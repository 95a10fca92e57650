//! The report phase: the Autoscaler's own status (autoscaler-core's `status`), written when
//! it differs from what the Autoscaler shows, and a Warning event for what it newly shows.
use autoscaler_core::check::Blocked;
use autoscaler_core::decide::Decision;
use autoscaler_core::demand::Unfit;
use autoscaler_core::status::{self, OwnStatus};
use kube::ResourceExt;
use kube::api::Api;
use operator_kit::Change;
use operator_kit::events::EventType;
use shared_crd::{Autoscaler, ScaleEvent, field_manager};

use super::{Context, Error};

/// Reports a decision; `recorded`: the change this reconcile is about to make, with the
/// others the policies still count, written under the scaling manager.
pub(super) async fn decided(
    a: &Autoscaler,
    ctx: &Context,
    decision: &Decision,
    unfit: &[Unfit],
    recorded: Option<Vec<ScaleEvent>>,
) -> Result<(), Error> {
    let scaled = recorded.is_some();
    let mut status = status::decided(a, decision, unfit, scaled, shared_crd::time::now());
    status.scale_events = recorded;
    if write_status(a, ctx, &status, scaled).await? {
        for warning in status::decided_warnings(a, decision, unfit) {
            ctx.publish(a, EventType::Warning, warning.reason, warning.note)
                .await;
        }
    }
    Ok(())
}

/// Reports why the Autoscaler cannot act: conditions, and a Warning event when that is
/// new. No pool is written.
pub(super) async fn blocked(a: &Autoscaler, ctx: &Context, why: &Blocked) -> Result<(), Error> {
    let status = status::blocked(a, why, shared_crd::time::now());
    if write_status(a, ctx, &status, false).await? && status::newly_blocked(a, why) {
        tracing::warn!(autoscaler = %a.name_any(), reason = why.reason, message = %why.message, "cannot scale");
        ctx.publish(a, EventType::Warning, why.reason, why.message.clone())
            .await;
    }
    Ok(())
}

/// Writes the autoscaler's own status fields and conditions when they differ from what
/// the Autoscaler shows; the reconcile that scaled writes under the scaling manager.
async fn write_status(
    a: &Autoscaler,
    ctx: &Context,
    status: &OwnStatus,
    scaled: bool,
) -> Result<bool, Error> {
    let mut change = Change::status(status);
    if scaled {
        change = change.with_field_manager(field_manager::AUTOSCALER_OPERATOR_SCALING);
    }
    let api: Api<Autoscaler> = Api::all(ctx.client.clone());
    ctx.writer
        .write(&api, a, &change)
        .await
        .map(|o| o.is_written())
        .map_err(Error::StatusWriteFailed)
}
