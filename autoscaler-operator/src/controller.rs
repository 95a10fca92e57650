//! The Autoscaler controller: reads the target pool and the pods that want it from the
//! watch caches, decides a size, writes the pool's `spec.replicas` (the cross-operator
//! write) and its own status, both through operator-kit's write strategy.
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use operator_kit::events::{changed_or_deleted, hash_of};
use operator_kit::metrics::ReconcileMetrics;
use operator_kit::{Change, Target, WriteError, Writer};
use serde_json::json;
use shared_crd::condition::{self, Condition, ConditionStatus};
use shared_crd::{Autoscaler, AutoscalerStatus, NodePool, condition_type, field_manager, reason};

use crate::decide::{self, Inputs, Recommendation};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "autoscaler";

/// Behaviour knobs (from flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Reconcile every Autoscaler at least this often.
    pub resync: Duration,
    pub concurrency: u16,
}

/// What this process remembers per Autoscaler (by uid), as the HPA controller does:
/// past recommendations for the stabilization windows, and its last scale.
#[derive(Debug, Default)]
struct Memory {
    history: Vec<Recommendation>,
    last_scaled: Option<Time>,
}

pub struct Context {
    pub client: Client,
    pub writer: Writer,
    pub recorder: Recorder,
    pub autoscalers: Store<Autoscaler>,
    pub pools: Store<NodePool>,
    pub pods: Store<Pod>,
    pub settings: Settings,
    pub metrics: Arc<ReconcileMetrics>,
    memory: Mutex<HashMap<String, Memory>>,
    started: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    #[error("writing NodePool {pool} spec.replicas: {source}")]
    ScaleWriteFailed {
        pool: String,
        #[source]
        source: WriteError,
    },
    #[error("writing Autoscaler status: {0}")]
    StatusWriteFailed(#[source] WriteError),
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::MissingObjectKey(_) => "missing_key",
            Error::ScaleWriteFailed { source, .. } | Error::StatusWriteFailed(source)
                if source.is_conflict() =>
            {
                "conflict"
            }
            Error::ScaleWriteFailed { .. } => "scale_write",
            Error::StatusWriteFailed(_) => "status_write",
        }
    }
}

/// The watches of this controller, with their caches.
pub struct Watches {
    pub autoscalers: Store<Autoscaler>,
    pub autoscaler_events: BoxStream<'static, Result<watcher::Event<Autoscaler>, watcher::Error>>,
    pub pools: Store<NodePool>,
    pub pool_events: BoxStream<'static, Result<watcher::Event<NodePool>, watcher::Error>>,
    pub pods: Store<Pod>,
    pub pod_events: BoxStream<'static, Result<watcher::Event<Pod>, watcher::Error>>,
}

pub fn watches(client: &Client) -> Watches {
    let (autoscalers, a_writer) = reflector::store();
    let (pools, p_writer) = reflector::store();
    let (pods, pod_writer) = reflector::store();
    Watches {
        autoscalers,
        autoscaler_events: watcher(
            Api::<Autoscaler>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(a_writer)
        .boxed(),
        pools,
        pool_events: watcher(
            Api::<NodePool>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(p_writer)
        .boxed(),
        pods,
        pod_events: watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            // Only what demand is made of; the rest of a pod is not worth keeping.
            .modify(|pod| {
                pod.managed_fields_mut().clear();
                pod.annotations_mut().clear();
                if let Some(status) = pod.status.as_mut() {
                    status.conditions = None;
                    status.container_statuses = None;
                }
            })
            .reflect(pod_writer)
            .boxed(),
    }
}

/// What of an Autoscaler a decision reads: its spec, and the pool's readiness that the
/// other operator reports in its status. Status the autoscaler writes itself is left out.
fn autoscaler_inputs(a: &Autoscaler) -> u64 {
    let ready = a
        .status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, condition_type::NODEPOOL_READY))
        .map(|c| (c.status == ConditionStatus::True, c.reason.clone()));
    hash_of(&(a.metadata.generation, ready))
}

/// What of a NodePool a decision reads.
fn pool_inputs(p: &NodePool) -> u64 {
    let c = &p.spec.template.capacity;
    let status = p.status.as_ref().map(|s| (s.replicas, s.ready_replicas));
    hash_of(&(
        p.spec.replicas,
        &c.cpu.0,
        &c.memory.0,
        &c.pods.0,
        status,
        p.metadata.deletion_timestamp.is_some(),
    ))
}

/// What of a Pod a decision reads: the pool it wants, its requests, whether it is active.
fn pod_inputs(p: &Pod) -> u64 {
    let d = decide::pod_demand(p);
    hash_of(&(
        decide::target_pool(p),
        d.cpu.to_bits(),
        d.memory.to_bits(),
        decide::is_active(p),
    ))
}

/// Runs the controller until the process ends.
pub async fn run(ctx: Arc<Context>, watches: Watches) {
    let Watches {
        autoscalers,
        autoscaler_events,
        pool_events,
        pod_events,
        ..
    } = watches;
    let skip = |kind: &'static str| {
        let metrics = ctx.metrics.clone();
        move || metrics.skip_event(CONTROLLER, kind)
    };
    let own = changed_or_deleted(autoscaler_events, autoscaler_inputs, skip("Autoscaler"));
    let pools = changed_or_deleted(pool_events, pool_inputs, skip("NodePool"));
    let pods = changed_or_deleted(pod_events, pod_inputs, skip("Pod"));
    let (by_pool, by_pod) = (autoscalers.clone(), autoscalers.clone());
    Controller::for_stream(own, autoscalers)
        .with_config(ControllerConfig::default().concurrency(ctx.settings.concurrency))
        .watches_stream(pools, move |pool: NodePool| {
            targeting(&by_pool, &pool.name_any())
        })
        .watches_stream(pods, move |pod: Pod| match decide::target_pool(&pod) {
            Some(pool) => targeting(&by_pod, pool),
            None => Vec::new(),
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn targeting(autoscalers: &Store<Autoscaler>, pool: &str) -> Vec<ObjectRef<Autoscaler>> {
    autoscalers
        .state()
        .iter()
        .filter(|a| a.spec.node_pool_ref.name == pool)
        .map(|a| ObjectRef::from_obj(a.as_ref()))
        .collect()
}

impl Context {
    pub fn new(
        client: Client,
        writer: Writer,
        watches: &Watches,
        settings: Settings,
        metrics: Arc<ReconcileMetrics>,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter()),
            client,
            writer,
            autoscalers: watches.autoscalers.clone(),
            pools: watches.pools.clone(),
            pods: watches.pods.clone(),
            settings,
            metrics,
            memory: Mutex::default(),
            started: Instant::now(),
        }
    }

    async fn publish(&self, a: &Autoscaler, type_: EventType, reason: &str, note: String) {
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Scale".into(),
            secondary: None,
        };
        operator_kit::events::publish(&self.recorder, a, event).await;
    }
}

fn reporter() -> Reporter {
    Reporter {
        controller: field_manager::AUTOSCALER_OPERATOR.into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

async fn reconcile(a: Arc<Autoscaler>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .measure(CONTROLLER, reconcile_autoscaler(&a, &ctx), Error::category)
        .await
}

fn error_policy(a: Arc<Autoscaler>, error: &Error, _ctx: Arc<Context>) -> Action {
    let jitter = |base_ms: u64| Duration::from_millis(base_ms + rand::random::<u64>() % base_ms);
    if error.category() == "conflict" {
        // The lazy way ends here: the whole reconcile runs again a little later.
        return Action::requeue(jitter(200));
    }
    tracing::warn!(autoscaler = %a.name_any(), error = %error, "reconcile failed");
    Action::requeue(jitter(5_000))
}

/// The condition set an Autoscaler reports when it cannot act, and why.
struct Blocked {
    reason: &'static str,
    message: String,
}

async fn reconcile_autoscaler(a: &Autoscaler, ctx: &Context) -> Result<Action, Error> {
    let uid = a
        .metadata
        .uid
        .clone()
        .ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let pool_name = a.spec.node_pool_ref.name.clone();

    if let Err(message) = decide::validate(&a.spec) {
        return blocked(
            a,
            ctx,
            Blocked {
                reason: reason::INVALID_SPEC,
                message,
            },
            Action::await_change(),
        )
        .await;
    }
    let Some(pool) = ctx.pools.get(&ObjectRef::new(&pool_name)) else {
        let message = format!("NodePool {pool_name} does not exist");
        return blocked(
            a,
            ctx,
            Blocked {
                reason: reason::NOT_FOUND,
                message,
            },
            Action::requeue(ctx.settings.resync),
        )
        .await;
    };
    if let Some(owner) = first_claim(ctx, a) {
        let message = format!("NodePool {pool_name} is already scaled by Autoscaler {owner}");
        return blocked(
            a,
            ctx,
            Blocked {
                reason: "PoolAlreadyTargeted",
                message,
            },
            Action::requeue(ctx.settings.resync),
        )
        .await;
    }
    let capacity = match pool.spec.template.capacity.values() {
        Ok(c) => c,
        Err(e) => {
            let message = format!("NodePool {pool_name}: {e}");
            return blocked(
                a,
                ctx,
                Blocked {
                    reason: "InvalidNodePool",
                    message,
                },
                Action::requeue(ctx.settings.resync),
            )
            .await;
        }
    };

    let pods = ctx.pods.state();
    let demand = decide::pool_demand(&pool_name, pods.iter().map(|p| p.as_ref()));
    let at_quota = a
        .status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, condition_type::NODEPOOL_READY))
        .is_some_and(|c| c.status == ConditionStatus::False && c.reason == reason::AT_QUOTA);
    let now = ctx.started.elapsed().as_secs() as i64;
    let current = pool.spec.replicas;
    let history = ctx
        .memory
        .lock()
        .expect("not poisoned")
        .entry(uid.clone())
        .or_default()
        .history
        .clone();
    let decision = decide::decide(&Inputs {
        spec: &a.spec,
        demand,
        capacity,
        current,
        existing: pool.status.as_ref().map_or(current, |s| s.replicas),
        pool_at_quota: at_quota,
        history: &history,
        now,
    });
    {
        let mut memory = ctx.memory.lock().expect("not poisoned");
        // Forget Autoscalers that are gone (no reconcile runs for a deleted object).
        let live: std::collections::HashSet<String> = ctx
            .autoscalers
            .state()
            .iter()
            .filter_map(|a| a.metadata.uid.clone())
            .collect();
        memory.retain(|uid, _| live.contains(uid));
        let entry = memory.entry(uid.clone()).or_default();
        let keep = i64::from(
            a.spec
                .behavior
                .scale_up
                .stabilization_window_seconds
                .max(a.spec.behavior.scale_down.stabilization_window_seconds),
        );
        entry.history.retain(|r| r.at > now - keep);
        entry.history.push(Recommendation {
            at: now,
            replicas: decision.recommendation,
        });
    }

    if decision.desired != current {
        let pools: Api<NodePool> = Api::all(ctx.client.clone());
        let desired = decision.desired;
        let mutate = move |p: &mut NodePool| {
            let changed = p.spec.replicas != desired;
            p.spec.replicas = desired;
            changed
        };
        let change = Change {
            target: Target::Main,
            mutate: &mutate,
            apply: json!({"spec": {"replicas": desired}}),
        };
        let written = ctx
            .writer
            .write(&pools, &pool, &change)
            .await
            .map_err(|source| Error::ScaleWriteFailed {
                pool: pool_name.clone(),
                source,
            })?;
        if written.is_written() {
            ctx.memory
                .lock()
                .expect("not poisoned")
                .entry(uid.clone())
                .or_default()
                .last_scaled = Some(Time(Timestamp::now()));
            let (reason, verb) = if desired > current {
                ("ScaledUp", "up")
            } else {
                ("ScaledDown", "down")
            };
            let note = format!(
                "NodePool {pool_name}: {current} -> {desired} nodes ({})",
                decision.explanation
            );
            tracing::info!(autoscaler = %a.name_any(), pool = %pool_name, current, desired, "scaled {verb}: {}", decision.explanation);
            ctx.publish(a, EventType::Normal, reason, note).await;
        }
    }

    let limited = decision.limited.clone();
    let conditions = [
        if a.spec.paused {
            (
                condition_type::ACTIVE,
                ConditionStatus::False,
                reason::PAUSED,
                "paused".to_owned(),
            )
        } else {
            (
                condition_type::ACTIVE,
                ConditionStatus::True,
                "Recommending",
                decision.explanation.clone(),
            )
        },
        (
            condition_type::ABLE_TO_SCALE,
            ConditionStatus::True,
            "ReadyForNewScale",
            format!("NodePool {pool_name} found"),
        ),
        match &limited {
            Some((why, message)) => (
                condition_type::SCALING_LIMITED,
                ConditionStatus::True,
                *why,
                message.clone(),
            ),
            None => (
                condition_type::SCALING_LIMITED,
                ConditionStatus::False,
                reason::WITHIN_BOUNDS,
                "desired size within bounds".to_owned(),
            ),
        },
    ];
    let last_scaled = ctx
        .memory
        .lock()
        .expect("not poisoned")
        .get(&uid)
        .and_then(|m| m.last_scaled.clone());
    let status = OwnStatus {
        desired_replicas: Some(decision.desired),
        current_replicas: pool.status.as_ref().map(|s| s.replicas),
        last_scale_time: last_scaled,
        last_decision: Some(decision.explanation.clone()),
        conditions: conditions
            .into_iter()
            .map(|(t, s, r, m)| {
                Condition::new(t, s, r, m, a.metadata.generation, Time(Timestamp::now()))
            })
            .collect(),
    };
    let wrote = write_status(a, ctx, status).await?;
    if wrote && let Some((why, message)) = &limited {
        ctx.publish(
            a,
            EventType::Warning,
            "ScalingLimited",
            format!("{why}: {message}"),
        )
        .await;
    }
    let requeue = decision
        .recheck_in_seconds
        .map(|s| Duration::from_secs(s.max(1) as u64))
        .unwrap_or(ctx.settings.resync)
        .min(ctx.settings.resync);
    Ok(Action::requeue(requeue))
}

/// The oldest Autoscaler (then the first by name) targeting the same pool, when that is
/// not `a`: it keeps the pool, `a` stands down.
fn first_claim(ctx: &Context, a: &Autoscaler) -> Option<String> {
    let key = |x: &Autoscaler| (x.creation_timestamp().map(|t| t.0), x.name_any());
    ctx.autoscalers
        .state()
        .iter()
        .filter(|other| other.spec.node_pool_ref.name == a.spec.node_pool_ref.name)
        .min_by_key(|other| key(other))
        .filter(|first| first.name_any() != a.name_any())
        .map(|first| first.name_any())
}

/// Reports why the Autoscaler cannot act: conditions, a Warning event when they change,
/// and no write to any NodePool.
async fn blocked(
    a: &Autoscaler,
    ctx: &Context,
    why: Blocked,
    then: Action,
) -> Result<Action, Error> {
    let g = a.metadata.generation;
    let now = Time(Timestamp::now());
    let status = OwnStatus {
        desired_replicas: a.status.as_ref().and_then(|s| s.desired_replicas),
        current_replicas: None,
        last_scale_time: a.status.as_ref().and_then(|s| s.last_scale_time.clone()),
        last_decision: Some(why.message.clone()),
        conditions: vec![
            Condition::new(
                condition_type::ACTIVE,
                ConditionStatus::False,
                why.reason,
                why.message.clone(),
                g,
                now.clone(),
            ),
            Condition::new(
                condition_type::ABLE_TO_SCALE,
                ConditionStatus::False,
                why.reason,
                why.message.clone(),
                g,
                now.clone(),
            ),
            Condition::new(
                condition_type::SCALING_LIMITED,
                ConditionStatus::False,
                why.reason,
                why.message.clone(),
                g,
                now,
            ),
        ],
    };
    if write_status(a, ctx, status).await? {
        tracing::warn!(autoscaler = %a.name_any(), reason = why.reason, message = %why.message, "cannot scale");
        ctx.publish(a, EventType::Warning, why.reason, why.message)
            .await;
    }
    Ok(then)
}

/// The part of the status autoscaler-operator owns.
struct OwnStatus {
    desired_replicas: Option<i32>,
    current_replicas: Option<i32>,
    last_scale_time: Option<Time>,
    last_decision: Option<String>,
    conditions: Vec<Condition>,
}

/// Writes the autoscaler's own status fields and conditions when they changed, leaving
/// the `NodePoolReady` condition nodepool-operator owns in the same list alone.
async fn write_status(a: &Autoscaler, ctx: &Context, own: OwnStatus) -> Result<bool, Error> {
    let generation = a.metadata.generation;
    let apply_into = |status: &mut AutoscalerStatus| {
        let before = status.clone();
        status.desired_replicas = own.desired_replicas;
        if own.current_replicas.is_some() {
            status.current_replicas = own.current_replicas;
        }
        // Never move back: the cached copy may not show this operator's last write yet.
        status.last_scale_time = own
            .last_scale_time
            .clone()
            .max(status.last_scale_time.take());
        status.last_decision = own.last_decision.clone();
        status.observed_generation = generation;
        for c in &own.conditions {
            condition::upsert(&mut status.conditions, c.clone());
        }
        *status != before
    };
    // What apply sends: computed from the cached copy, own conditions only.
    let mut from_cache = a.status.clone().unwrap_or_default();
    apply_into(&mut from_cache);
    let own_conditions: Vec<&Condition> = from_cache
        .conditions
        .iter()
        .filter(|c| own.conditions.iter().any(|o| o.type_ == c.type_))
        .collect();
    let body = json!({"status": {
        "desiredReplicas": from_cache.desired_replicas,
        "currentReplicas": from_cache.current_replicas,
        "lastScaleTime": from_cache.last_scale_time,
        "lastDecision": from_cache.last_decision,
        "observedGeneration": from_cache.observed_generation,
        "conditions": own_conditions,
    }});
    let mutate = |x: &mut Autoscaler| apply_into(x.status.get_or_insert_with(Default::default));
    let change = Change {
        target: Target::Status,
        mutate: &mutate,
        apply: strip_nulls(body),
    };
    let api: Api<Autoscaler> = Api::all(ctx.client.clone());
    ctx.writer
        .write(&api, a, &change)
        .await
        .map(|o| o.is_written())
        .map_err(Error::StatusWriteFailed)
}

/// Server-side apply reads `null` as "remove": leave unknown fields out instead.
fn strip_nulls(mut v: serde_json::Value) -> serde_json::Value {
    if let Some(status) = v.get_mut("status").and_then(|s| s.as_object_mut()) {
        status.retain(|_, value| !value.is_null());
    }
    v
}
