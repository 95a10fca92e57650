//! The NodePool controller: reconcile drives a pool's nodes to `spec.replicas` through the
//! provider and reports status. Reads come from reflector caches (pools, nodes); writes
//! to the pool go through operator-kit's write strategy.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::utils::Predicate;
use kube::runtime::{WatchStreamExt, predicates, reflector, watcher};
use kube::{Client, Resource, ResourceExt};
use operator_kit::events::{changed_or_deleted, hash_of};
use operator_kit::metrics::ReconcileMetrics;
use operator_kit::{Change, Target, WriteError, Writer};
use serde_json::json;
use shared_crd::{NODEPOOL_FINALIZER, NodePool, POOL_LABEL, field_manager};

use crate::decide::{self, Blocker};
use crate::drain::{self, DrainState};
use crate::provider::{Provider, ProviderError, pool_of};

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "nodepool";

/// Behaviour knobs (from flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Most nodes the provider hands out, over all pools.
    pub max_nodes: Option<u32>,
    /// How long to wait for a node's pods to be evicted before deleting it anyway.
    pub drain_timeout: Duration,
    /// Reconcile every pool at least this often.
    pub resync: Duration,
    /// Reconciles running at once.
    pub concurrency: u16,
}

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub writer: Writer,
    pub recorder: Recorder,
    pub provider: Arc<dyn Provider>,
    /// Nodes carrying the pool label, from the watch cache.
    pub nodes: Store<Node>,
    pub settings: Settings,
    pub metrics: Arc<ReconcileMetrics>,
    /// When this process last added or removed a node of each pool (by uid). Reconciles
    /// of one pool never overlap; the pool in the cache may not show our last write yet.
    pub last_scaled: std::sync::Mutex<std::collections::HashMap<String, Time>>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    #[error("writing NodePool status: {0}")]
    StatusWriteFailed(#[source] WriteError),
    #[error(transparent)]
    ProviderFailed(#[from] ProviderError),
    #[error("draining node {node}: {source}")]
    DrainFailed {
        node: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0} nodes still being removed")]
    NodesRemaining(usize),
    #[error("finalizer: {0}")]
    FinalizerFailed(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// Bounded label for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Error::MissingObjectKey(_) => "missing_key",
            Error::StatusWriteFailed(e) if e.is_conflict() => "conflict",
            Error::StatusWriteFailed(_) => "status_write",
            Error::ProviderFailed(_) => "provider",
            Error::DrainFailed { .. } => "drain",
            Error::NodesRemaining(_) => "cleanup_pending",
            Error::FinalizerFailed(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.category(),
                _ => "finalizer",
            },
        }
    }
}

/// Runs the NodePool controller until the process ends.
pub async fn run(ctx: Arc<Context>, watches: Watches) {
    let Watches {
        pools,
        pool_events,
        node_events,
        ..
    } = watches;
    let metrics = ctx.metrics.clone();
    let node_changes = changed_or_deleted(node_events, node_state, move || {
        metrics.skip_event(CONTROLLER, "Node")
    });
    Controller::for_stream(pool_events, pools)
        .with_config(ControllerConfig::default().concurrency(ctx.settings.concurrency))
        .watches_stream(node_changes, |node: Node| {
            pool_of(&node).map(ObjectRef::<NodePool>::new)
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reconcile failed");
            }
        })
        .await;
}

/// The watches of the NodePool controller, with their caches.
pub struct Watches {
    pub pools: Store<NodePool>,
    /// Pool changes that need a reconcile (generation or finalizers changed).
    pub pool_events: BoxStream<'static, Result<NodePool, watcher::Error>>,
    /// Nodes carrying the pool label.
    pub nodes: Store<Node>,
    pub node_events: BoxStream<'static, Result<watcher::Event<Node>, watcher::Error>>,
}

/// Starts the watches: pools filtered by a generation predicate (its own status writes
/// do not come back as work), and the nodes of all pools.
pub fn watches(client: &Client) -> Watches {
    let (pools, pool_writer) = reflector::store();
    let pool_events = watcher(
        Api::<NodePool>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(pool_writer)
    .applied_objects()
    // Status writes change neither generation nor finalizers: they trigger nothing.
    .predicate_filter(
        (predicates::generation as fn(&NodePool) -> Option<u64>).combine(predicates::finalizers),
        Default::default(),
    )
    .boxed();
    let (nodes, node_writer) = reflector::store();
    let node_events = watcher(
        Api::<Node>::all(client.clone()),
        watcher::Config::default().labels(POOL_LABEL),
    )
    .default_backoff()
    .reflect(node_writer)
    .boxed();
    Watches {
        pools,
        pool_events,
        nodes,
        node_events,
    }
}

/// What of a node a pool's reconcile reads: heartbeats alone change nothing.
fn node_state(node: &Node) -> u64 {
    hash_of(&(
        node.labels().get(POOL_LABEL),
        node.spec.as_ref().and_then(|s| s.unschedulable),
        decide::is_ready(node),
        node.metadata.deletion_timestamp.is_some(),
    ))
}

async fn reconcile(pool: Arc<NodePool>, ctx: Arc<Context>) -> Result<Action, Error> {
    let pools: Api<NodePool> = Api::all(ctx.client.clone());
    let run = finalizer(&pools, NODEPOOL_FINALIZER, pool, |event| async {
        match event {
            Finalizer::Apply(pool) => apply(&pool, &ctx).await,
            Finalizer::Cleanup(pool) => cleanup(&pool, &ctx).await,
        }
    });
    let run = async { run.await.map_err(|e| Error::FinalizerFailed(Box::new(e))) };
    ctx.metrics.measure(CONTROLLER, run, Error::category).await
}

fn error_policy(pool: Arc<NodePool>, error: &Error, _ctx: Arc<Context>) -> Action {
    let jitter = |base_ms: u64| Duration::from_millis(base_ms + rand::random::<u64>() % base_ms);
    match error.category() {
        // The lazy way: the whole reconcile runs again, from the cache, a little later.
        "conflict" => Action::requeue(jitter(200)),
        "cleanup_pending" => Action::requeue(Duration::from_secs(1)),
        _ => {
            tracing::warn!(pool = %pool.name_any(), error = %error, "reconcile failed");
            Action::requeue(jitter(5_000))
        }
    }
}

impl Context {
    fn last_scaled(&self, pool: &NodePool) -> Option<Time> {
        let uid = pool.metadata.uid.as_deref()?;
        self.last_scaled
            .lock()
            .expect("not poisoned")
            .get(uid)
            .cloned()
    }

    fn set_last_scaled(&self, pool: &NodePool, at: Time) {
        if let Some(uid) = pool.metadata.uid.clone() {
            self.last_scaled
                .lock()
                .expect("not poisoned")
                .insert(uid, at);
        }
    }

    /// The pool's nodes from the cache, without those already being deleted.
    fn pool_nodes(&self, pool: &str) -> Vec<Arc<Node>> {
        self.nodes
            .state()
            .into_iter()
            .filter(|n| pool_of(n) == Some(pool) && n.metadata.deletion_timestamp.is_none())
            .collect()
    }

    async fn publish(
        &self,
        pool: &NodePool,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        operator_kit::events::publish(&self.recorder, pool, event).await;
    }
}

/// Drives the pool's nodes toward `spec.replicas`, one step per call.
async fn apply(pool: &NodePool, ctx: &Context) -> Result<Action, Error> {
    let name = pool
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey(".metadata.name"))?;
    let nodes = ctx.pool_nodes(&name);

    if let Err(message) = decide::validate_template(&pool.spec.template) {
        let blocker = Blocker::InvalidSpec(message.clone());
        let refs: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
        let written = write_status(
            pool,
            ctx,
            decide::desired_status(pool, &refs, Some(&blocker), ctx.last_scaled(pool), now()),
        )
        .await?;
        if written {
            ctx.publish(pool, EventType::Warning, "InvalidSpec", "Validate", message)
                .await;
        }
        // Nothing to do until someone fixes the spec.
        return Ok(Action::await_change());
    }

    let desired = pool.spec.replicas.max(0) as usize;
    let total = ctx
        .nodes
        .state()
        .iter()
        .filter(|n| pool_of(n).is_some())
        .count();
    let growth = decide::nodes_to_add(
        pool.spec.replicas,
        nodes.len(),
        total,
        ctx.settings.max_nodes,
    );
    let mut blocker = growth.at_quota.then(|| Blocker::AtQuota {
        max_nodes: ctx.settings.max_nodes.unwrap_or_default(),
    });
    let mut scaled = false;
    let mut requeue = ctx.settings.resync;

    if growth.add > 0 {
        let existing: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
        let mut created = 0;
        for node_name in free_node_names(pool, &existing, growth.add) {
            match ctx.provider.create(pool, &node_name).await {
                Ok(()) => created += 1,
                Err(e) => {
                    ctx.publish(
                        pool,
                        EventType::Warning,
                        "ProviderError",
                        "CreateNode",
                        e.to_string(),
                    )
                    .await;
                    blocker = Some(Blocker::ProviderError(e.to_string()));
                    break;
                }
            }
        }
        if created > 0 {
            scaled = true;
            let note = format!(
                "created {created} node(s): {} -> {} of {desired}",
                nodes.len(),
                nodes.len() + created
            );
            tracing::info!(pool = %name, %note, "scaled up");
            ctx.publish(pool, EventType::Normal, "ScaledUp", "CreateNode", note)
                .await;
        }
    } else if growth.at_quota && pool_scaling_reason(pool) != Some(shared_crd::reason::AT_QUOTA) {
        let note = format!(
            "provider quota of {} nodes reached; pool has {} of {desired}",
            ctx.settings.max_nodes.unwrap_or_default(),
            nodes.len()
        );
        ctx.publish(pool, EventType::Warning, "AtQuota", "CreateNode", note)
            .await;
    }

    if nodes.len() > desired {
        let refs: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
        let pod_counts = count_pods(&ctx.client, &refs).await;
        let victim = decide::node_to_remove(&refs, |n| {
            pod_counts.get(&n.name_any()).copied().unwrap_or(0)
        });
        if let Some(victim) = victim {
            if remove_node(pool, victim, ctx).await? {
                scaled = true;
                let note = format!(
                    "removed node {}: {} -> {} of {desired}",
                    victim.name_any(),
                    nodes.len(),
                    nodes.len() - 1
                );
                tracing::info!(pool = %name, %note, "scaled down");
                ctx.publish(pool, EventType::Normal, "ScaledDown", "DeleteNode", note)
                    .await;
            } else {
                requeue = Duration::from_secs(1);
            }
        }
    }

    // The provider's part of the kubelet: readiness and heartbeats.
    for node in &nodes {
        match ctx.provider.refresh(node).await {
            Ok(Some(next)) => requeue = requeue.min(next),
            Ok(None) => {}
            Err(e) => blocker = Some(Blocker::ProviderError(e.to_string())),
        }
    }

    if scaled {
        ctx.set_last_scaled(pool, now());
    }
    let refs: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
    write_status(
        pool,
        ctx,
        decide::desired_status(pool, &refs, blocker.as_ref(), ctx.last_scaled(pool), now()),
    )
    .await?;
    if scaled {
        requeue = requeue.min(Duration::from_secs(1));
    }
    Ok(Action::requeue(requeue))
}

/// Removes the pool's nodes (drained first) before the finalizer goes.
async fn cleanup(pool: &NodePool, ctx: &Context) -> Result<Action, Error> {
    let name = pool.name_any();
    let nodes = ctx.pool_nodes(&name);
    let mut remaining = 0;
    for node in &nodes {
        if !remove_node(pool, node, ctx).await? {
            remaining += 1;
        }
    }
    if remaining > 0 {
        return Err(Error::NodesRemaining(remaining));
    }
    if let Some(uid) = &pool.metadata.uid {
        ctx.last_scaled.lock().expect("not poisoned").remove(uid);
    }
    tracing::info!(pool = %name, nodes = nodes.len(), "pool deleted; its nodes are gone");
    Ok(Action::await_change())
}

/// One step of taking `node` out of `pool`: drain it, and delete it once drained or
/// once the drain timeout has passed. Returns whether the node is gone.
async fn remove_node(pool: &NodePool, node: &Node, ctx: &Context) -> Result<bool, Error> {
    let node_name = node.name_any();
    let drain_failed = |source| Error::DrainFailed {
        node: node_name.clone(),
        source,
    };
    match drain::drain_step(&ctx.client, node, ctx.settings.drain_timeout)
        .await
        .map_err(drain_failed)?
    {
        DrainState::Drained => {}
        DrainState::TimedOut { remaining } => {
            let note = format!(
                "node {node_name}: {remaining} pod(s) not evicted within {:?}; removing it anyway",
                ctx.settings.drain_timeout
            );
            ctx.publish(
                pool,
                EventType::Warning,
                "NodeDrainTimeout",
                "DrainNode",
                note,
            )
            .await;
            drain::finish_all(&ctx.client, node)
                .await
                .map_err(drain_failed)?;
        }
        DrainState::InProgress { remaining, blocked } => {
            tracing::info!(pool = %pool.name_any(), node = %node_name, remaining, blocked, "draining");
            return Ok(false);
        }
    }
    ctx.provider.delete(node).await?;
    Ok(true)
}

/// Writes the pool's status when it differs from the cached one. Returns whether it wrote.
async fn write_status(
    pool: &NodePool,
    ctx: &Context,
    status: shared_crd::NodePoolStatus,
) -> Result<bool, Error> {
    let pools: Api<NodePool> = Api::all(ctx.client.clone());
    let wanted = status.clone();
    let mutate = move |p: &mut NodePool| {
        if p.status.as_ref() == Some(&wanted) {
            return false;
        }
        // Recompute transition times against this copy's conditions.
        let mut merged = wanted.clone();
        if let Some(existing) = &p.status {
            let mut conditions = existing.conditions.clone();
            for c in &wanted.conditions {
                shared_crd::condition::upsert(&mut conditions, c.clone());
            }
            merged.conditions = conditions;
        }
        p.status = Some(merged);
        true
    };
    let change = Change {
        target: Target::Status,
        mutate: &mutate,
        apply: json!({"status": status}),
    };
    ctx.writer
        .write(&pools, pool, &change)
        .await
        .map(|outcome| outcome.is_written())
        .map_err(Error::StatusWriteFailed)
}

fn pool_scaling_reason(pool: &NodePool) -> Option<&str> {
    pool.status
        .as_ref()
        .and_then(|s| {
            shared_crd::condition::find(&s.conditions, shared_crd::condition_type::SCALING)
        })
        .map(|c| c.reason.as_str())
}

/// Node names for new nodes: `<pool>-<short id>`, the id derived from the pool's uid and a
/// slot number, so that creating a node twice (from a cache that has not seen the first
/// one yet) is an AlreadyExists, not a second node.
fn free_node_names(pool: &NodePool, existing: &BTreeSet<String>, count: usize) -> Vec<String> {
    let uid = pool.metadata.uid.clone().unwrap_or_default();
    (0u32..)
        .map(|slot| format!("{}-{}", pool.name_any(), short_id(&uid, slot)))
        .filter(|n| !existing.contains(n))
        .take(count)
        .collect()
}

fn short_id(uid: &str, slot: u32) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut h = hash_of(&(uid, slot));
    (0..5)
        .map(|_| {
            let c = ALPHABET[(h % 36) as usize] as char;
            h /= 36;
            c
        })
        .collect()
}

async fn count_pods(client: &Client, nodes: &[&Node]) -> std::collections::HashMap<String, usize> {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut counts = std::collections::HashMap::new();
    for node in nodes {
        let name = node.name_any();
        let params = ListParams::default().fields(&format!("spec.nodeName={name}"));
        if let Ok(list) = pods.list_metadata(&params).await {
            counts.insert(name, list.items.len());
        }
    }
    counts
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// The reporter for events.
pub fn reporter() -> Reporter {
    Reporter {
        controller: field_manager::NODEPOOL_OPERATOR.into(),
        instance: std::env::var("POD_NAME").ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_crd::{NodePoolSpec, NodeTemplate};

    #[test]
    fn node_names_are_stable_per_slot_and_skip_existing_ones() {
        let mut pool = NodePool::new(
            "web",
            NodePoolSpec {
                replicas: 3,
                template: NodeTemplate::default(),
            },
        );
        pool.metadata.uid = Some("uid-1".into());
        let first = free_node_names(&pool, &BTreeSet::new(), 3);
        assert_eq!(first.len(), 3);
        assert!(
            first
                .iter()
                .all(|n| n.starts_with("web-") && n.len() == "web-".len() + 5)
        );
        assert_eq!(
            first,
            free_node_names(&pool, &BTreeSet::new(), 3),
            "deterministic"
        );
        let existing = BTreeSet::from([first[0].clone()]);
        let next = free_node_names(&pool, &existing, 2);
        assert_eq!(next, first[1..3]);
    }
}
