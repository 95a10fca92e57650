//! The NodePool controller: drives a pool's nodes to `spec.replicas` and reports what it
//! sees. Each reconcile is four steps: observe (the pool's nodes and pods from the
//! indexed caches, no API reads), decide (pure, `decide`), act (create nodes in
//! parallel, delete surplus ones: their drain is the lifecycle controller's), report
//! (status through the write strategy, only when a field this operator owns differs).
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use operator_kit::controller::{ReconcileError, Reconciler, Runner, RunnerSettings};
use operator_kit::events::{Event as KubeEvent, EventType, Recorder};
use operator_kit::watch::hash_of;
use operator_kit::{Change, WriteError, Writer};
use shared_crd::{
    LEGACY_NODEPOOL_FINALIZER, NodePool, condition_type, event_reason, field_manager,
};

use crate::caches::Caches;
use crate::decide::{self, Blocker};
use crate::provider::{Created, Provider, ProviderError, free_node_names, pool_of};
use crate::quota::Reservations;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "nodepool";

/// Behaviour knobs (from flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Most nodes the provider hands out, over all pools.
    pub max_nodes: Option<u32>,
    /// How long a node's drain may take before one that PodDisruptionBudgets block is
    /// reported on the Node (it goes on; only the pool's terminationGracePeriodSeconds
    /// forces it).
    pub drain_timeout: Duration,
    /// Reconcile every pool at least this often.
    pub resync: Duration,
    /// Reconciles running at once, per controller.
    pub concurrency: u16,
}

/// What every reconcile gets.
pub struct Context {
    pub client: Client,
    pub writer: Writer,
    pub recorder: Recorder,
    pub provider: Arc<dyn Provider>,
    pub caches: Caches,
    pub settings: Settings,
    /// Names being created under `--max-nodes` (see `quota`).
    reservations: Mutex<Reservations>,
}

impl Context {
    pub fn new(
        client: Client,
        writer: Writer,
        recorder: Recorder,
        provider: Arc<dyn Provider>,
        caches: Caches,
        settings: Settings,
    ) -> Self {
        Self {
            client,
            writer,
            recorder,
            provider,
            caches,
            settings,
            reservations: Mutex::default(),
        }
    }

    async fn publish(&self, pool: &NodePool, type_: EventType, reason: &str, note: String) {
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Reconcile".into(),
            secondary: None,
        };
        self.recorder.publish(pool, event).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    #[error("writing NodePool status: {0}")]
    StatusWriteFailed(#[source] WriteError),
    #[error(transparent)]
    NodeDeletionFailed(ProviderError),
    #[error("removing the legacy finalizer: {0}")]
    LegacyFinalizerRemovalFailed(#[source] kube::Error),
    /// A create met a node the cache does not show yet: what this reconcile observed is
    /// stale, so it reports nothing and runs again (a foreign node holding one of the
    /// pool's names keeps it here, with growing delays, and says so in the log).
    #[error("node {0} exists but the node cache does not show it yet")]
    NodeCacheBehind(String),
}

impl ReconcileError for Error {
    fn category(&self) -> &'static str {
        match self {
            Error::MissingObjectKey(_) => "missing_key",
            Error::StatusWriteFailed(e) if e.is_conflict() => "conflict",
            Error::StatusWriteFailed(_) => "status_write",
            Error::NodeDeletionFailed(_) => "provider",
            Error::LegacyFinalizerRemovalFailed(_) => "finalizer",
            Error::NodeCacheBehind(_) => "cache_behind",
        }
    }

    /// A conflict is the lazy strategy's way out: the whole reconcile runs again, from the
    /// cache; so is a cache behind this operator's own create.
    fn is_expected(&self) -> bool {
        match self {
            Error::StatusWriteFailed(e) => e.is_conflict(),
            Error::NodeCacheBehind(_) => true,
            _ => false,
        }
    }
}

impl Reconciler for Context {
    type Object = NodePool;
    type Error = Error;
    const NAME: &'static str = CONTROLLER;

    async fn reconcile(&self, pool: Arc<NodePool>) -> Result<Action, Error> {
        reconcile_pool(&pool, self).await
    }
}

/// The NodePool controller: a pool's spec (generation, not resourceVersion: status writes,
/// ours and others', trigger nothing) and its nodes.
pub fn runner(ctx: Context, settings: &RunnerSettings) -> Runner<Context> {
    let (pools, nodes) = (ctx.caches.pools.clone(), ctx.caches.nodes.clone());
    Runner::new(ctx, &pools, pool_state, settings).watches(&nodes, node_state, |node: Node| {
        pool_of(&node).map(ObjectRef::<NodePool>::new)
    })
}

/// What of a pool a reconcile acts on: its spec (generation) and its deletion.
fn pool_state(pool: &NodePool) -> u64 {
    hash_of(&(
        pool.metadata.generation,
        pool.metadata.deletion_timestamp.is_some(),
        pool.finalizers()
            .iter()
            .any(|f| f == LEGACY_NODEPOOL_FINALIZER),
    ))
}

/// What of a node a pool's reconcile reads: heartbeats and Lease renewals change nothing.
fn node_state(node: &Node) -> u64 {
    hash_of(&(
        pool_of(node),
        decide::is_ready(node),
        node.metadata.deletion_timestamp.is_some(),
    ))
}

/// What the act step did.
#[derive(Default)]
struct Acted {
    created: Vec<Node>,
    /// A node that existed already though the cache did not show it.
    unseen: Option<String>,
    removed: HashSet<String>,
    blocker: Option<Blocker>,
}

async fn reconcile_pool(pool: &NodePool, ctx: &Context) -> Result<Action, Error> {
    let name = pool
        .metadata
        .name
        .clone()
        .ok_or(Error::MissingObjectKey(".metadata.name"))?;
    remove_legacy_finalizer(pool, ctx).await?;
    if pool.metadata.deletion_timestamp.is_some() {
        // Its nodes are the lifecycle controller's now (owned by a deleted pool).
        return Ok(Action::await_change());
    }

    // Observe.
    let all = ctx.caches.nodes_of(&name);
    let live: Vec<&Node> = all
        .iter()
        .map(|n| n.as_ref())
        .filter(|n| n.metadata.deletion_timestamp.is_none())
        .collect();

    // Decide and act.
    if let Err(message) = decide::validate_template(&pool.spec.template) {
        let blocker = Blocker::InvalidSpec(message);
        report(
            pool,
            ctx,
            &live,
            &Acted {
                blocker: Some(blocker),
                ..Default::default()
            },
        )
        .await?;
        // Nothing to do until someone fixes the spec.
        return Ok(Action::await_change());
    }
    let desired = pool.spec.replicas.max(0) as usize;
    let taken: HashSet<String> = all.iter().map(|n| n.name_any()).collect();
    let (growth, names) = plan_growth(pool, ctx, live.len(), &taken);
    let mut acted = Acted {
        blocker: growth.at_quota.then(|| Blocker::AtQuota {
            max_nodes: ctx.settings.max_nodes.unwrap_or_default(),
        }),
        ..Default::default()
    };
    if !names.is_empty() {
        create_nodes(pool, ctx, names, &mut acted).await;
    }
    if live.len() > desired {
        let victims = decide::nodes_to_remove(&live, live.len() - desired, |n| {
            ctx.caches.pods_on(&n.name_any()).len()
        });
        remove_nodes(ctx, &victims, &mut acted).await?;
    }

    // Report, from an observation that is not known to be stale.
    if let Some(node) = acted.unseen.take() {
        return Err(Error::NodeCacheBehind(node));
    }
    report(pool, ctx, &live, &acted).await?;
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
    Ok(Action::requeue(ctx.settings.resync))
}

/// How many nodes to add, and their names: under `--max-nodes`, decided and reserved
/// under one lock, so reconciles of other pools running at once count them (`quota`).
fn plan_growth(
    pool: &NodePool,
    ctx: &Context,
    current: usize,
    taken: &HashSet<String>,
) -> (decide::Growth, Vec<String>) {
    let cached = ctx.caches.nodes_by_pool.len();
    let Some(max) = ctx.settings.max_nodes else {
        let growth = decide::nodes_to_add(pool.spec.replicas, current, cached, None);
        return (growth, free_node_names(pool, taken, growth.add));
    };
    let now = Instant::now();
    let mut reservations = ctx.reservations.lock().expect("not poisoned");
    let outstanding = reservations.outstanding(now, |name| {
        ctx.caches.nodes.get(&ObjectRef::new(name)).is_some()
    });
    let growth = decide::nodes_to_add(pool.spec.replicas, current, cached + outstanding, Some(max));
    let names = free_node_names(pool, taken, growth.add);
    reservations.add(&names, now);
    (growth, names)
}

/// Creates the nodes `names` at once. A name that exists already is no new node: no
/// event, not counted. The first failure becomes the pool's `ProviderError`; a failed
/// name frees its quota reservation.
async fn create_nodes(pool: &NodePool, ctx: &Context, names: Vec<String>, acted: &mut Acted) {
    let results =
        futures::future::join_all(names.iter().map(|n| ctx.provider.create(pool, n))).await;
    for (name, result) in names.into_iter().zip(results) {
        match result {
            Ok(Created::New(node)) => acted.created.push(*node),
            Ok(Created::AlreadyExists) => acted.unseen = Some(name),
            Err(e) => {
                ctx.reservations
                    .lock()
                    .expect("not poisoned")
                    .release(&name);
                if acted.blocker.is_none() {
                    acted.blocker = Some(Blocker::ProviderError(e.to_string()));
                }
            }
        }
    }
}

/// Deletes `victims` at once; each is drained before it goes (its finalizer).
async fn remove_nodes(ctx: &Context, victims: &[&Node], acted: &mut Acted) -> Result<(), Error> {
    let results = futures::future::join_all(victims.iter().map(|n| ctx.provider.delete(n))).await;
    for (node, result) in victims.iter().zip(results) {
        result.map_err(Error::NodeDeletionFailed)?;
        acted.removed.insert(node.name_any());
    }
    Ok(())
}

/// Writes the status the pool has after this reconcile (the cache's nodes, plus what
/// was just created, minus what was just removed), and a Warning event when a blocker
/// newly shows. The reconcile that scaled also records `lastScaleTime`, under a field
/// manager of its own so that later applies, which leave it out, do not remove it.
async fn report(
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
    let mut status = decide::desired_status(pool, &observed, acted.blocker.as_ref(), now.clone());
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
        && decide::shown_reason(pool, condition_type::SCALING) != Some(blocker.reason())
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

/// Versions before 0.2 kept a finalizer on each pool; nodes carry their own now.
async fn remove_legacy_finalizer(pool: &NodePool, ctx: &Context) -> Result<(), Error> {
    let finalizers = pool.finalizers();
    if !finalizers.iter().any(|f| f == LEGACY_NODEPOOL_FINALIZER) {
        return Ok(());
    }
    let patch = crate::finalizer_removal(finalizers, LEGACY_NODEPOOL_FINALIZER);
    let pools: Api<NodePool> = Api::all(ctx.client.clone());
    pools
        .patch(
            &pool.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
        .map(|_| ())
        .map_err(Error::LegacyFinalizerRemovalFailed)
}
