//! The `NodePoolReady` condition nodepool-operator owns in each Autoscaler's status
//! (nodepool-core's `ready`): whether the pool the Autoscaler targets can get nodes.
//! Written with this operator's field manager, next to the conditions autoscaler-operator
//! owns in the same list.
use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use nodepool_core::ready::{blocking_condition, nodepool_ready};
use operator_kit::controller::{ReconcileError, Reconciler, Runner, RunnerSettings};
use operator_kit::watch::hash_of;
use operator_kit::{Change, WriteError, Writer};
use serde::Serialize;
use shared_crd::condition::{self, Condition, ConditionStatus};
use shared_crd::{Autoscaler, NodePool, condition_type};

use crate::caches::Caches;

pub const CONTROLLER: &str = "nodepool-ready";

pub struct Context {
    client: Client,
    writer: Writer,
    caches: Caches,
}

impl Context {
    pub fn new(client: Client, writer: Writer, caches: Caches) -> Self {
        Self {
            client,
            writer,
            caches,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the NodePoolReady condition: {0}")]
    ConditionWriteFailed(#[source] WriteError),
}

impl ReconcileError for Error {
    fn category(&self) -> &'static str {
        let Error::ConditionWriteFailed(e) = self;
        if e.is_conflict() {
            "conflict"
        } else {
            "condition_write"
        }
    }

    fn is_expected(&self) -> bool {
        let Error::ConditionWriteFailed(e) = self;
        e.is_conflict()
    }
}

impl Reconciler for Context {
    type Object = Autoscaler;
    type Error = Error;
    const NAME: &'static str = CONTROLLER;

    async fn reconcile(&self, autoscaler: Arc<Autoscaler>) -> Result<Action, Error> {
        write_condition(&autoscaler, self).await?;
        Ok(Action::await_change())
    }
}

/// The NodePoolReady controller: an Autoscaler (which pool it targets, and the condition
/// itself: someone may remove it; not the rest of its status) and the pools it targets.
pub fn runner(ctx: Context, settings: &RunnerSettings) -> Runner<Context> {
    let caches = ctx.caches.clone();
    let by_pool = caches.autoscalers_by_pool.clone();
    Runner::new(
        ctx,
        &caches.autoscalers,
        |a: &Autoscaler| hash_of(&(&a.spec.node_pool_ref.name, shown(a))),
        settings,
    )
    .watches(&caches.pools, pool_readiness, move |pool: NodePool| {
        by_pool.get(&pool.name_any())
    })
}

/// The condition as the Autoscaler shows it (without its time).
fn shown(a: &Autoscaler) -> Option<(ConditionStatus, String, String)> {
    let c = condition::find(
        &a.status.as_ref()?.conditions,
        condition_type::NODEPOOL_READY,
    )?;
    Some((c.status, c.reason.clone(), c.message.clone()))
}

/// What of a pool the condition depends on.
fn pool_readiness(pool: &NodePool) -> u64 {
    let blocking = blocking_condition(pool).map(|c| (&c.reason, &c.message));
    hash_of(&(pool.metadata.deletion_timestamp.is_some(), blocking))
}

/// This operator's one field of an Autoscaler's status: its entry in `conditions`.
#[derive(Serialize)]
struct ReadyStatus {
    conditions: [Condition; 1],
}

async fn write_condition(autoscaler: &Autoscaler, ctx: &Context) -> Result<(), Error> {
    let pool_name = &autoscaler.spec.node_pool_ref.name;
    let pool = ctx.caches.pools.get(&ObjectRef::new(pool_name));
    let wanted = nodepool_ready(
        pool_name,
        pool.as_deref(),
        autoscaler.metadata.generation,
        shared_crd::time::now(),
    );
    let shown = autoscaler
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let wanted = condition::carry_transition_time(wanted, shown);
    let api: Api<Autoscaler> = Api::all(ctx.client.clone());
    let change = Change::status(&ReadyStatus {
        conditions: [wanted],
    });
    ctx.writer
        .write(&api, autoscaler, &change)
        .await
        .map(|_| ())
        .map_err(Error::ConditionWriteFailed)
}
