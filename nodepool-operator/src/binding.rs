//! The `NodePoolReady` condition nodepool-operator owns in each Autoscaler's status:
//! whether the pool the Autoscaler targets can get nodes. Written with this operator's
//! field manager, next to the conditions autoscaler-operator owns in the same list.
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use operator_kit::events::{changed_or_deleted, hash_of};
use operator_kit::metrics::ReconcileMetrics;
use operator_kit::{Change, Target, WriteError, Writer};
use serde_json::json;
use shared_crd::condition::{self, Condition, ConditionStatus};
use shared_crd::{Autoscaler, NodePool, condition_type, reason};

pub const CONTROLLER: &str = "nodepool-ready";

pub struct BindingContext {
    pub client: Client,
    pub writer: Writer,
    pub pools: Store<NodePool>,
    pub metrics: Arc<ReconcileMetrics>,
    pub concurrency: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the NodePoolReady condition: {0}")]
    ConditionWriteFailed(#[source] WriteError),
}

impl Error {
    /// Bounded label for metrics.
    pub fn category(&self) -> &'static str {
        let Error::ConditionWriteFailed(e) = self;
        if e.is_conflict() {
            "conflict"
        } else {
            "condition_write"
        }
    }
}

/// The `NodePoolReady` condition for an Autoscaler that targets `pool`.
pub fn nodepool_ready(
    pool_name: &str,
    pool: Option<&NodePool>,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    let (status, why, message) = match pool {
        None => (
            ConditionStatus::False,
            reason::NOT_FOUND,
            format!("NodePool {pool_name} does not exist"),
        ),
        Some(p) if p.metadata.deletion_timestamp.is_some() => (
            ConditionStatus::False,
            reason::DELETING,
            format!("NodePool {pool_name} is being deleted"),
        ),
        Some(p) => {
            let scaling = p
                .status
                .as_ref()
                .and_then(|s| condition::find(&s.conditions, condition_type::SCALING));
            match scaling {
                Some(c)
                    if [
                        reason::AT_QUOTA,
                        reason::PROVIDER_ERROR,
                        reason::INVALID_SPEC,
                    ]
                    .contains(&c.reason.as_str()) =>
                {
                    (ConditionStatus::False, c.reason.as_str(), c.message.clone())
                }
                _ => (
                    ConditionStatus::True,
                    reason::READY,
                    format!("NodePool {pool_name} can get nodes"),
                ),
            }
        }
    };
    Condition::new(
        condition_type::NODEPOOL_READY,
        status,
        why,
        message,
        generation,
        now,
    )
}

/// Runs the controller until the process ends.
pub async fn run(
    ctx: Arc<BindingContext>,
    pool_events: impl futures::Stream<Item = Result<watcher::Event<NodePool>, watcher::Error>>
    + Send
    + 'static,
) {
    let autoscalers: Api<Autoscaler> = Api::all(ctx.client.clone());
    let (store, writer) = reflector::store();
    let metrics = ctx.metrics.clone();
    let autoscaler_events = watcher(autoscalers, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    // Only which pool an Autoscaler targets matters here, not its status.
    let autoscaler_changes = changed_or_deleted(
        autoscaler_events,
        |a: &Autoscaler| hash_of(&(a.metadata.generation, &a.spec.node_pool_ref.name)),
        {
            let metrics = metrics.clone();
            move || metrics.skip_event(CONTROLLER, "Autoscaler")
        },
    )
    .filter_map(|r| async move { r.ok().map(Ok) });
    let pool_changes = changed_or_deleted(pool_events, pool_readiness, move || {
        metrics.skip_event(CONTROLLER, "NodePool")
    });
    let by_pool = store.clone();
    Controller::for_stream(autoscaler_changes, store)
        .with_config(ControllerConfig::default().concurrency(ctx.concurrency))
        .watches_stream(pool_changes, move |pool: NodePool| {
            let name = pool.name_any();
            by_pool
                .state()
                .into_iter()
                .filter(|a| a.spec.node_pool_ref.name == name)
                .map(|a| ObjectRef::from_obj(a.as_ref()))
                .collect::<Vec<_>>()
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

/// What of a pool the condition depends on.
fn pool_readiness(pool: &NodePool) -> u64 {
    let scaling = pool
        .status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, condition_type::SCALING))
        .map(|c| (c.reason.clone(), c.message.clone()));
    hash_of(&(pool.metadata.deletion_timestamp.is_some(), scaling))
}

async fn reconcile(autoscaler: Arc<Autoscaler>, ctx: Arc<BindingContext>) -> Result<Action, Error> {
    let write = write_condition(&autoscaler, &ctx);
    ctx.metrics
        .measure(CONTROLLER, write, Error::category)
        .await?;
    Ok(Action::requeue(Duration::from_secs(300)))
}

async fn write_condition(autoscaler: &Autoscaler, ctx: &BindingContext) -> Result<(), Error> {
    let pool_name = &autoscaler.spec.node_pool_ref.name;
    let pool = ctx.pools.get(&ObjectRef::new(pool_name));
    let wanted = nodepool_ready(
        pool_name,
        pool.as_deref(),
        autoscaler.metadata.generation,
        Time(Timestamp::now()),
    );
    let mutate = |a: &mut Autoscaler| {
        let status = a.status.get_or_insert_with(Default::default);
        condition::upsert(&mut status.conditions, wanted.clone())
    };
    // For apply, the transition time must not move when nothing changed: keep the old one.
    let mut applied = wanted.clone();
    if let Some(old) = autoscaler
        .status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, condition_type::NODEPOOL_READY))
        && old.status == wanted.status
    {
        applied.last_transition_time = old.last_transition_time.clone();
    }
    let change = Change {
        target: Target::Status,
        mutate: &mutate,
        apply: json!({"status": {"conditions": [applied]}}),
    };
    let api: Api<Autoscaler> = Api::all(ctx.client.clone());
    ctx.writer
        .write(&api, autoscaler, &change)
        .await
        .map(|_| ())
        .map_err(Error::ConditionWriteFailed)
}

fn error_policy(_a: Arc<Autoscaler>, error: &Error, _ctx: Arc<BindingContext>) -> Action {
    let Error::ConditionWriteFailed(e) = error;
    if e.is_conflict() {
        Action::requeue(Duration::from_millis(200 + rand::random::<u64>() % 200))
    } else {
        tracing::warn!(error = %error, "NodePoolReady write failed");
        Action::requeue(Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_crd::{NodePoolSpec, NodePoolStatus, NodeTemplate};

    fn t() -> Time {
        Time(Timestamp::from_second(1).unwrap())
    }

    fn pool_with_scaling(reason: &str) -> NodePool {
        let mut p = NodePool::new(
            "p",
            NodePoolSpec {
                replicas: 1,
                template: NodeTemplate::default(),
            },
        );
        p.status = Some(NodePoolStatus {
            conditions: vec![Condition::new(
                "Scaling",
                ConditionStatus::False,
                reason,
                "why",
                None,
                t(),
            )],
            ..Default::default()
        });
        p
    }

    #[test]
    fn missing_pool_is_not_found() {
        let c = nodepool_ready("p", None, Some(1), t());
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::False, "NotFound")
        );
        assert_eq!(c.type_, "NodePoolReady");
    }

    #[test]
    fn quota_and_provider_errors_carry_over_from_the_pool() {
        for r in ["AtQuota", "ProviderError", "InvalidSpec"] {
            let c = nodepool_ready("p", Some(&pool_with_scaling(r)), None, t());
            assert_eq!(
                (c.status, c.reason.as_str(), c.message.as_str()),
                (ConditionStatus::False, r, "why")
            );
        }
    }

    #[test]
    fn a_healthy_or_stable_pool_is_ready_and_a_deleting_one_is_not() {
        let c = nodepool_ready("p", Some(&pool_with_scaling("Stable")), None, t());
        assert_eq!(c.status, ConditionStatus::True);
        let mut deleting = pool_with_scaling("Stable");
        deleting.metadata.deletion_timestamp = Some(t());
        assert_eq!(
            nodepool_ready("p", Some(&deleting), None, t()).reason,
            "Deleting"
        );
    }
}
