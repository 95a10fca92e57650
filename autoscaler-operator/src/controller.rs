//! The Autoscaler controller: reads the target pool, its nodes and the pods bound to them or
//! waiting for them from the watch caches, decides a size, writes the pool's `spec.replicas`
//! (the cross-operator write) and its own status, both through operator-kit's write
//! strategy.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use operator_kit::controller::{ReconcileError, Reconciler, Runner, RunnerSettings};
use operator_kit::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use operator_kit::watch::hash_of;
use operator_kit::{Change, WriteError, Writer};
use serde::Serialize;
use serde_json::json;
use shared_crd::condition::{self, Condition, ConditionStatus};
use shared_crd::{Autoscaler, NodePool, condition_type, field_manager, reason};

use crate::caches::Caches;
use crate::decide::{self, Inputs, PoolPods, Recommendation};
use crate::fit;
use crate::node::NodeView;
use crate::pod::PodView;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "autoscaler";

/// `PodsFit=False`: a pod asks more of one resource than a node of the pool offers.
const POD_TOO_LARGE: &str = "PodTooLarge";
/// `PodsFit=False`: a pod names the pool, but its node selector, required node affinity or
/// tolerations rule the pool's nodes out.
const POD_DOES_NOT_MATCH: &str = "PodDoesNotMatch";

/// Behaviour knobs (from flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Reconcile every Autoscaler at least this often.
    pub resync: Duration,
    pub concurrency: u16,
}

/// What this process remembers per Autoscaler (by uid), as the HPA controller does: past
/// recommendations for the stabilization windows. Seeded from the pool's size, so that
/// losing it (a restart, a new leader) only ever holds a scale-down back.
#[derive(Debug, Default)]
struct Memory {
    history: Vec<Recommendation>,
    /// Seconds of history the longer window needs.
    keep: i64,
}

pub struct Context {
    pub client: Client,
    pub writer: Writer,
    pub recorder: Recorder,
    pub caches: Caches,
    pub settings: Settings,
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

impl ReconcileError for Error {
    fn category(&self) -> &'static str {
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

    /// A conflict is the lazy strategy's way out: the whole reconcile runs again.
    fn is_expected(&self) -> bool {
        match self {
            Error::ScaleWriteFailed { source, .. } | Error::StatusWriteFailed(source) => {
                source.is_conflict()
            }
            Error::MissingObjectKey(_) => false,
        }
    }
}

/// Index key of a pod: where it is, as far as a pool's demand goes.
/// - `node/<name>`: bound to a node (usage of that node's pool);
/// - `pool/<name>`: not bound, and names a pool (its label in the node selector or a
///   required node affinity term);
/// - `unschedulable`: not bound, names no pool, and the scheduler found no node for it;
/// - none: not bound and not seen by the scheduler yet.
pub fn place(p: &PodView) -> Option<String> {
    if let Some(node) = &p.spec.node_name {
        return Some(format!("node/{node}"));
    }
    if let Some(pool) = decide::target_pool(p) {
        return Some(format!("pool/{pool}"));
    }
    p.is_unschedulable().then(|| UNSCHEDULABLE.to_owned())
}

const UNSCHEDULABLE: &str = "unschedulable";

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

/// What of a Pod a decision reads: where it is, the scheduler's verdict, its requests,
/// whether it is active. (Selector, affinity and tolerations do not change on a pod.)
fn pod_inputs(p: &PodView) -> u64 {
    let d = decide::pod_demand(p);
    hash_of(&(
        place(p),
        p.is_unschedulable(),
        d.cpu.to_bits(),
        d.memory.to_bits(),
        decide::is_active(p),
    ))
}

/// What of a Node a decision reads: its pool, labels and taints (the pool's shape), its
/// readiness and deletion (the order nodes are removed in). Status is written only on
/// change (heartbeats go to Leases), so this passes few events.
fn node_inputs(n: &NodeView) -> u64 {
    hash_of(&(
        &n.metadata.labels,
        n.spec
            .taints
            .iter()
            .map(|t| (&t.key, &t.value, &t.effect))
            .collect::<Vec<_>>(),
        n.is_ready(),
        n.metadata.deletion_timestamp.is_some(),
    ))
}

/// The Autoscaler controller: an Autoscaler, its pool, the pods that are the pool's
/// demand or usage, and the pool's nodes.
pub fn runner(ctx: Context, settings: &RunnerSettings) -> Runner<Context> {
    let caches = ctx.caches.clone();
    let (by_pool, by_node) = (
        caches.autoscalers_by_pool.clone(),
        caches.autoscalers_by_pool.clone(),
    );
    let for_pod = caches.clone();
    Runner::new(ctx, &caches.autoscalers, autoscaler_inputs, settings)
        .watches(&caches.pools, pool_inputs, move |pool: NodePool| {
            by_pool.get(&pool.name_any())
        })
        .watches(
            &caches.pods,
            pod_inputs,
            move |pod: PodView| match pool_of(&for_pod, &pod) {
                Some(pool) => for_pod.autoscalers_by_pool.get(&pool),
                None => Vec::new(),
            },
        )
        .watches(
            &caches.nodes,
            node_inputs,
            move |node: NodeView| match node.pool() {
                Some(pool) => by_node.get(pool),
                None => Vec::new(),
            },
        )
}

impl Context {
    pub fn new(
        client: Client,
        writer: Writer,
        recorder: Recorder,
        caches: Caches,
        settings: Settings,
    ) -> Self {
        Self {
            client,
            writer,
            recorder,
            caches,
            settings,
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
        self.recorder.publish(a, event).await;
    }

    /// Seconds since this process started: the clock of the stabilization windows.
    fn clock(&self) -> i64 {
        self.started.elapsed().as_secs() as i64
    }
}

pub fn reporter() -> Reporter {
    Reporter {
        controller: field_manager::AUTOSCALER_OPERATOR.into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

impl Reconciler for Context {
    type Object = Autoscaler;
    type Error = Error;
    const NAME: &'static str = CONTROLLER;

    async fn reconcile(&self, a: Arc<Autoscaler>) -> Result<Action, Error> {
        reconcile_autoscaler(&a, self).await
    }
}

/// Why an Autoscaler cannot act.
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

    // Observe: the pool, the pods that want it, the other Autoscalers of the pool.
    if let Err(message) = decide::validate(&a.spec) {
        let why = Blocked {
            reason: reason::INVALID_SPEC,
            message,
        };
        return blocked(a, ctx, why, Action::await_change()).await;
    }
    let Some(pool) = ctx.caches.pools.get(&ObjectRef::new(&pool_name)) else {
        let why = Blocked {
            reason: reason::NOT_FOUND,
            message: format!("NodePool {pool_name} does not exist"),
        };
        return blocked(a, ctx, why, Action::await_change()).await;
    };
    if let Some(owner) = first_claim(ctx, a) {
        let why = Blocked {
            reason: "PoolAlreadyTargeted",
            message: format!("NodePool {pool_name} is already scaled by Autoscaler {owner}"),
        };
        return blocked(a, ctx, why, Action::await_change()).await;
    }
    let capacity = match pool.spec.template.capacity.values() {
        Ok(c) => c,
        Err(e) => {
            let why = Blocked {
                reason: "InvalidNodePool",
                message: format!("NodePool {pool_name}: {e}"),
            };
            return blocked(a, ctx, why, Action::await_change()).await;
        }
    };
    // The pool's nodes with the pods bound to them, the pods waiting for it, and the shape
    // of its nodes (read off one of them, or its template), all from the caches.
    let nodes = ctx
        .caches
        .nodes_by_pool
        .objects(&pool_name, &ctx.caches.nodes);
    let bound: Vec<Vec<Arc<PodView>>> = nodes
        .iter()
        .map(|n| {
            ctx.caches
                .pods_by_place
                .objects(&format!("node/{}", n.name_any()), &ctx.caches.pods)
        })
        .collect();
    let named = ctx
        .caches
        .pods_by_place
        .objects(&format!("pool/{pool_name}"), &ctx.caches.pods);
    let mut others = ctx
        .caches
        .pods_by_place
        .objects(UNSCHEDULABLE, &ctx.caches.pods);
    if !others.is_empty() {
        // The targeted pools' shapes, read once for all such pods.
        let homes = homes(&ctx.caches);
        others.retain(|p| homes.of(p) == Some(pool_name.as_str()));
    }
    let pool_pods = PoolPods {
        nodes: nodes
            .iter()
            .zip(&bound)
            .map(|(n, pods)| (n.as_ref(), pods.iter().map(AsRef::as_ref).collect()))
            .collect(),
        named: named.iter().map(AsRef::as_ref).collect(),
        others: others.iter().map(AsRef::as_ref).collect(),
    };
    let shape = fit::shape(&pool, nodes.first().map(AsRef::as_ref));
    // Pods no node of the pool can run are no demand (no number of nodes helps): they are
    // named instead.
    let demand = decide::pool_demand(&pool_pods, &shape, capacity);
    let at_quota = a
        .status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, condition_type::NODEPOOL_READY))
        .is_some_and(|c| c.status == ConditionStatus::False && c.reason == reason::AT_QUOTA);
    let current = pool.spec.replicas;

    // Decide.
    let now = ctx.clock();
    let history = ctx.history(&uid, a, current, now);
    let decision = decide::decide(&Inputs {
        spec: &a.spec,
        demand: &demand,
        capacity,
        current,
        existing: pool.status.as_ref().map_or(current, |s| s.replicas),
        pool_at_quota: at_quota,
        history: &history,
        now,
    });
    ctx.remember(&uid, now, decision.recommendation);

    // Act: the cross-operator write, spec.replicas of the pool.
    let mut scaled = false;
    if decision.desired != current {
        let pools: Api<NodePool> = Api::all(ctx.client.clone());
        let change = Change::main(json!({"spec": {"replicas": decision.desired}}));
        let written = ctx
            .writer
            .write(&pools, &pool, &change)
            .await
            .map_err(|source| Error::ScaleWriteFailed {
                pool: pool_name.clone(),
                source,
            })?;
        if written.is_written() {
            scaled = true;
            let desired = decision.desired;
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

    // Report.
    let limited = decision.limited.clone();
    let g = a.metadata.generation;
    let at = shared_crd::time::now();
    let own = |type_, status, why: &str, message: String| {
        Condition::new(type_, status, why, message, g, at.clone())
    };
    let conditions = vec![
        if a.spec.paused {
            own(
                condition_type::ACTIVE,
                ConditionStatus::False,
                reason::PAUSED,
                "paused".to_owned(),
            )
        } else {
            own(
                condition_type::ACTIVE,
                ConditionStatus::True,
                "Recommending",
                format!("recommending a size for NodePool {pool_name} from its pods' requests"),
            )
        },
        own(
            condition_type::ABLE_TO_SCALE,
            ConditionStatus::True,
            "ReadyForNewScale",
            format!("NodePool {pool_name} found"),
        ),
        match &limited {
            Some((why, message)) => own(
                condition_type::SCALING_LIMITED,
                ConditionStatus::True,
                why,
                message.clone(),
            ),
            None => own(
                condition_type::SCALING_LIMITED,
                ConditionStatus::False,
                reason::WITHIN_BOUNDS,
                "desired size within bounds".to_owned(),
            ),
        },
        pods_fit_condition(&demand.unfit, &pool_name, own),
    ];
    let status = OwnStatus {
        desired_replicas: Some(decision.desired),
        observed_generation: g,
        last_scale_time: scaled.then(|| at.clone()),
        last_decision: scaled.then(|| decision.explanation.clone()),
        conditions: carry_times(conditions, a),
    };
    let written = write_status(a, ctx, &status, scaled).await?;
    // Events on transitions only: the limit is new to the status the cache shows.
    if written
        && let Some((why, message)) = &limited
        && shown(a, condition_type::SCALING_LIMITED)
            != Some((ConditionStatus::True, why.to_string()))
    {
        ctx.publish(
            a,
            EventType::Warning,
            "ScalingLimited",
            format!("{why}: {message}"),
        )
        .await;
    }
    if written
        && let Some(reason) = unfit_reason(&demand.unfit)
        && shown(a, condition_type::PODS_FIT) != Some((ConditionStatus::False, reason.to_owned()))
    {
        let unfit = &demand.unfit;
        let note = format!(
            "no node of NodePool {pool_name} can run {}: {}",
            if unfit.len() == 1 {
                "this pod"
            } else {
                "these pods"
            },
            unfit
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        ctx.publish(a, EventType::Warning, reason, note).await;
    }
    let requeue = decision
        .recheck_in_seconds
        .map(|s| Duration::from_secs(s.max(1) as u64))
        .unwrap_or(ctx.settings.resync)
        .min(ctx.settings.resync);
    Ok(Action::requeue(requeue))
}

/// The reason of `PodsFit=False`, if a pod names the pool but cannot run on it:
/// `PodTooLarge` when every such pod is too large for a node, else `PodDoesNotMatch`.
fn unfit_reason(unfit: &[decide::Unfit]) -> Option<&'static str> {
    if unfit.is_empty() {
        None
    } else if unfit.iter().all(|u| u.too_large) {
        Some(POD_TOO_LARGE)
    } else {
        Some(POD_DOES_NOT_MATCH)
    }
}

/// `PodsFit`: True, or False naming (up to five of) the pods that name the pool but cannot
/// run on its nodes.
fn pods_fit_condition(
    unfit: &[decide::Unfit],
    pool_name: &str,
    own: impl Fn(&'static str, ConditionStatus, &str, String) -> Condition,
) -> Condition {
    let Some(reason) = unfit_reason(unfit) else {
        return own(
            condition_type::PODS_FIT,
            ConditionStatus::True,
            "AllFit",
            format!("every pod that names NodePool {pool_name} can run on its nodes"),
        );
    };
    let shown: Vec<String> = unfit.iter().take(5).map(ToString::to_string).collect();
    let more = unfit.len().saturating_sub(shown.len());
    own(
        condition_type::PODS_FIT,
        ConditionStatus::False,
        reason,
        format!(
            "{} pod(s) name NodePool {pool_name} but no node of it can run them, and they are \
             left out of the demand: {}{}",
            unfit.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ),
    )
}

/// The pool whose demand `pod` is: its node's pool when bound; the pool it names when it
/// names one; else, when the scheduler found no node for it, [`Homes`].
fn pool_of(caches: &Caches, pod: &PodView) -> Option<String> {
    if let Some(node) = &pod.spec.node_name {
        return caches
            .nodes
            .get(&ObjectRef::new(node))
            .and_then(|n| n.pool().map(str::to_owned));
    }
    if let Some(pool) = decide::target_pool(pod) {
        return Some(pool.to_owned());
    }
    if pod.is_unschedulable() {
        return homes(caches).of(pod).map(str::to_owned);
    }
    None
}

/// The pools an unschedulable pod that names no pool may be demand of: see [`Homes`].
fn homes(caches: &Caches) -> Homes {
    let mut pools = caches.pools.state();
    pools.sort_by_key(|p| p.name_any());
    let pools = pools
        .iter()
        .filter(|p| !caches.autoscalers_by_pool.get(&p.name_any()).is_empty())
        .filter_map(|p| {
            let capacity = p.spec.template.capacity.values().ok()?;
            let node = caches
                .nodes_by_pool
                .objects(&p.name_any(), &caches.nodes)
                .into_iter()
                .next();
            Some((p.name_any(), fit::shape(p, node.as_deref()), capacity))
        })
        .collect();
    Homes { pools }
}

/// The pools an Autoscaler targets, by name, each with its nodes' shape and capacity. An
/// unschedulable pod that names no pool is demand of one of them only, so that two
/// Autoscalers never both scale up for it: the first whose nodes can run it. Each reconcile
/// that has such pods reads the pools once: pods that name their pool are the fast path.
struct Homes {
    pools: Vec<(String, fit::Shape, decide::Capacity)>,
}

impl Homes {
    fn of(&self, pod: &PodView) -> Option<&str> {
        let demand = decide::pod_demand(pod);
        self.pools
            .iter()
            .find(|(_, shape, capacity)| {
                fit::mismatch(pod, shape).is_none() && decide::fits_a_node(&demand, *capacity)
            })
            .map(|(name, _, _)| name.as_str())
    }
}

impl Context {
    /// Past recommendations of one Autoscaler. A process that has none (it just started,
    /// or just became leader) starts from the pool's current size, as the HPA controller
    /// does: a restart never shrinks a pool before the scale-down window has passed.
    fn history(&self, uid: &str, a: &Autoscaler, current: i32, now: i64) -> Vec<Recommendation> {
        let mut memory = self.memory.lock().expect("not poisoned");
        // Forget Autoscalers that are gone (no reconcile runs for a deleted object).
        if memory.len() > self.caches.autoscalers.len() {
            let live: HashSet<String> = self
                .caches
                .autoscalers
                .state()
                .iter()
                .filter_map(|a| a.metadata.uid.clone())
                .collect();
            memory.retain(|uid, _| live.contains(uid));
        }
        let keep = i64::from(
            a.spec
                .behavior
                .scale_up
                .stabilization_window_seconds
                .max(a.spec.behavior.scale_down.stabilization_window_seconds),
        );
        let entry = memory.entry(uid.to_owned()).or_insert_with(|| Memory {
            history: vec![Recommendation {
                at: now,
                replicas: current,
            }],
            keep,
        });
        entry.keep = keep;
        entry.history.clone()
    }

    /// Records this reconcile's recommendation: at most one entry per second, and only
    /// as far back as the longer window reaches.
    fn remember(&self, uid: &str, now: i64, replicas: i32) {
        let mut memory = self.memory.lock().expect("not poisoned");
        let Some(entry) = memory.get_mut(uid) else {
            return;
        };
        let keep = entry.keep;
        entry.history.retain(|r| r.at > now - keep.max(1));
        match entry.history.last_mut() {
            Some(last) if last.at == now => last.replicas = replicas,
            _ => entry.history.push(Recommendation { at: now, replicas }),
        }
    }
}

/// The oldest Autoscaler (then the first by name) targeting the same pool, when that is
/// not `a`: it keeps the pool, `a` stands down.
fn first_claim(ctx: &Context, a: &Autoscaler) -> Option<String> {
    let key = |x: &Autoscaler| (x.creation_timestamp().map(|t| t.0), x.name_any());
    ctx.caches
        .autoscalers_by_pool
        .objects(&a.spec.node_pool_ref.name, &ctx.caches.autoscalers)
        .iter()
        .min_by_key(|other| key(other))
        .filter(|first| first.name_any() != a.name_any())
        .map(|first| first.name_any())
}

/// Reports why the Autoscaler cannot act: conditions, a Warning event when that is new,
/// and no write to any NodePool.
async fn blocked(
    a: &Autoscaler,
    ctx: &Context,
    why: Blocked,
    then: Action,
) -> Result<Action, Error> {
    let g = a.metadata.generation;
    let at = shared_crd::time::now();
    let conditions = [
        condition_type::ACTIVE,
        condition_type::ABLE_TO_SCALE,
        condition_type::SCALING_LIMITED,
    ]
    .into_iter()
    .map(|t| {
        Condition::new(
            t,
            ConditionStatus::False,
            why.reason,
            why.message.clone(),
            g,
            at.clone(),
        )
    })
    .collect();
    let status = OwnStatus {
        desired_replicas: None,
        observed_generation: g,
        last_scale_time: None,
        last_decision: None,
        conditions: carry_times(conditions, a),
    };
    let written = write_status(a, ctx, &status, false).await?;
    if written
        && shown(a, condition_type::ACTIVE) != Some((ConditionStatus::False, why.reason.into()))
    {
        tracing::warn!(autoscaler = %a.name_any(), reason = why.reason, message = %why.message, "cannot scale");
        ctx.publish(a, EventType::Warning, why.reason, why.message)
            .await;
    }
    Ok(then)
}

/// The part of an Autoscaler's status autoscaler-operator owns, computed from what it
/// observes and decides, as sent with server-side apply (`None` fields left out).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct OwnStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    desired_replicas: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
    /// Only from the reconcile that scaled, under its own field manager.
    #[serde(skip_serializing_if = "Option::is_none")]
    last_scale_time: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_decision: Option<String>,
    /// `Active`, `AbleToScale`, `ScalingLimited`; never `NodePoolReady`.
    conditions: Vec<Condition>,
}

/// Keeps each condition's transition time when its status is the one shown.
fn carry_times(conditions: Vec<Condition>, a: &Autoscaler) -> Vec<Condition> {
    let shown = a
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    conditions
        .into_iter()
        .map(|c| condition::carry_transition_time(c, shown))
        .collect()
}

/// A condition's status and reason as the cache shows them.
fn shown(a: &Autoscaler, type_: &str) -> Option<(ConditionStatus, String)> {
    let c = condition::find(&a.status.as_ref()?.conditions, type_)?;
    Some((c.status, c.reason.clone()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pool(name: &str, tier: &str, cpu: &str) -> NodePool {
        serde_json::from_value(json!({
            "apiVersion": "nodepool.dev/v1alpha1", "kind": "NodePool",
            "metadata": {"name": name},
            "spec": {"replicas": 1, "template": {"labels": {"tier": tier},
                "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}}
        }))
        .unwrap()
    }

    fn homes(pools: &[NodePool]) -> Homes {
        Homes {
            pools: pools
                .iter()
                .map(|p| {
                    let capacity = p.spec.template.capacity.values().unwrap();
                    (p.name_any(), fit::shape(p, None), capacity)
                })
                .collect(),
        }
    }

    fn pending(selector: serde_json::Value, cpu: &str) -> PodView {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"nodeSelector": selector,
                "tolerations": [{"key": "nodepool.dev/virtual", "operator": "Exists"}],
                "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_pod_that_names_no_pool_is_demand_of_the_first_pool_that_can_run_it() {
        // In name order, as `Context::homes` lists them.
        let homes = homes(&[
            pool("a", "web", "2"),
            pool("b", "web", "4"),
            pool("c", "db", "2"),
        ]);
        assert_eq!(homes.of(&pending(json!({"tier": "web"}), "1")), Some("a"));
        // Too large for a's nodes: b's take it.
        assert_eq!(homes.of(&pending(json!({"tier": "web"}), "3")), Some("b"));
        assert_eq!(homes.of(&pending(json!({"tier": "db"}), "1")), Some("c"));
        assert_eq!(homes.of(&pending(json!({"tier": "gpu"}), "1")), None);
        let mut intolerant = pending(json!({"tier": "web"}), "1");
        intolerant.spec.tolerations.clear();
        assert_eq!(homes.of(&intolerant), None);
    }
}
