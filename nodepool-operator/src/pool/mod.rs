//! The NodePool controller: drives a pool's nodes to `spec.replicas` and reports what it
//! sees. Each reconcile is four phases: observe (the pool's nodes and pods from the
//! indexed caches, no API reads), decide (nodepool-core: the template, the sizing), act
//! (create nodes in parallel, delete surplus ones, whose drain is the lifecycle
//! controller's: [`act`]), report (status through the write strategy, only when a field
//! this operator owns differs, and events: [`report`]).
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use nodepool_core::nodes::{is_ready, pool_of};
use nodepool_core::quota::Reservations;
use nodepool_core::sizing::validate_template;
use nodepool_core::status::Blocker;
use operator_kit::controller::{ReconcileError, Reconciler, Runner, RunnerSettings};
use operator_kit::events::{Event as KubeEvent, EventType, Recorder};
use operator_kit::patch::finalizer_removal;
use operator_kit::watch::hash_of;
use operator_kit::{WriteError, Writer};
use shared_crd::{LEGACY_NODEPOOL_FINALIZER, NodePool};

use crate::caches::Caches;
use crate::provider::{Provider, ProviderError};

mod act;
mod report;

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
        is_ready(node),
        node.metadata.deletion_timestamp.is_some(),
    ))
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

    // Decide: nothing is done for a template that cannot be read, until someone fixes it.
    if let Err(message) = validate_template(&pool.spec.template) {
        let acted = act::Acted::blocked(Blocker::InvalidSpec(message));
        report::status(pool, ctx, &live, &acted).await?;
        return Ok(Action::await_change());
    }

    // Act.
    let taken: HashSet<String> = all.iter().map(|n| n.name_any()).collect();
    let acted = act::resize(pool, ctx, &live, &taken).await?;

    // Report, from an observation that is not known to be stale.
    if let Some(node) = &acted.unseen {
        return Err(Error::NodeCacheBehind(node.clone()));
    }
    report::status(pool, ctx, &live, &acted).await?;
    report::scaled(pool, ctx, &live, &acted).await;
    Ok(Action::requeue(ctx.settings.resync))
}

/// Versions before 0.2 kept a finalizer on each pool; nodes carry their own now.
async fn remove_legacy_finalizer(pool: &NodePool, ctx: &Context) -> Result<(), Error> {
    let finalizers = pool.finalizers();
    if !finalizers.iter().any(|f| f == LEGACY_NODEPOOL_FINALIZER) {
        return Ok(());
    }
    let patch = finalizer_removal(finalizers, LEGACY_NODEPOOL_FINALIZER);
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
