//! The NodePool controller: drives a pool's nodes to `spec.replicas` on its current
//! template and reports what it sees. Each reconcile is four phases: observe (the pool's
//! nodes and pods from the indexed caches, no API reads), decide (nodepool-core: the
//! whole spec validated, then the disruption plan: which nodes are replaced, which
//! removed, within the budgets), act (create nodes in parallel, delete the ones the plan
//! lets go, whose drain is the lifecycle controller's: [`act`]), report (status through
//! the write strategy, only when a field this operator owns differs, and events:
//! [`report`]). Time alone changes a plan (a node expires, turns Unhealthy, a budget's
//! window opens): the reconcile requeues itself for the next such moment.
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use nodepool_core::deletions::Deletions;
use nodepool_core::disruption::{self, Observed};
use nodepool_core::drain::holds_its_node;
use nodepool_core::nodes::{is_ready, pool_of};
use nodepool_core::pod::BoundPod;
use nodepool_core::quota::Reservations;
use nodepool_core::status::{Blocker, Disrupting};
use nodepool_core::template::{hash_of as template_of, template_hash};
use nodepool_core::validate::validate;
use operator_kit::controller::{ReconcileError, Reconciler, Runner, RunnerSettings};
use operator_kit::events::{Event as KubeEvent, EventType, Recorder};
use operator_kit::patch::finalizer_removal;
use operator_kit::watch::hash_of;
use operator_kit::{WriteError, Writer};
use shared_crd::node_condition::DRAIN_BLOCKED;
use shared_crd::{DO_NOT_DISRUPT_ANNOTATION, LEGACY_NODEPOOL_FINALIZER, NodePool};

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
    /// Names deleted that the cache does not show deleting yet (see `deletions`).
    deletions: Mutex<Deletions>,
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
            deletions: Mutex::default(),
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
    #[error("recording the template hash on node {node}: {source}")]
    TemplateHashStampFailed {
        node: String,
        #[source]
        source: kube::Error,
    },
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
            Error::TemplateHashStampFailed { .. } => "template_hash",
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
/// ours and others', trigger nothing), its nodes, and the pods on them that carry
/// `do-not-disrupt` (no other pod event reaches a pool).
pub fn runner(ctx: Context, settings: &RunnerSettings) -> Runner<Context> {
    let caches = ctx.caches.clone();
    let for_pods = caches.clone();
    Runner::new(ctx, &caches.pools, pool_state, settings)
        .watches(&caches.nodes, node_state, |node: Node| {
            pool_of(&node).map(ObjectRef::<NodePool>::new)
        })
        .watches(&caches.pods, pod_state, move |pod: BoundPod| {
            pod.annotations().get(DO_NOT_DISRUPT_ANNOTATION)?;
            let node = pod.node()?;
            let node = for_pods.nodes.get(&ObjectRef::new(node))?;
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
        template_of(node),
        node.annotations().get(DO_NOT_DISRUPT_ANNOTATION),
        node.spec.as_ref().and_then(|s| s.unschedulable),
        drain_blocked(node),
    ))
}

/// What of a pod: whether it holds its node (`do-not-disrupt`, while it runs), and where.
fn pod_state(pod: &BoundPod) -> u64 {
    hash_of(&(pod.node(), holds_its_node(pod)))
}

/// Whether the node's drain is blocked, by PodDisruptionBudgets or pods it waits for (its
/// `DrainBlocked`).
fn drain_blocked(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == DRAIN_BLOCKED && c.status == "True")
        })
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

    // Observe. A node this process just deleted is terminating, whatever the cache shows.
    let all = ctx.caches.nodes_of(&name);
    // (Deletions pending are few and brief: a scan of the pool's nodes for each is cheaper
    // than a set of every name on each reconcile.)
    let alive = |n: &Node| n.metadata.deletion_timestamp.is_none();
    let named = |n: &Node, name: &str| n.metadata.name.as_deref() == Some(name);
    let deleted = ctx.deletions.lock().expect("not poisoned").pending(
        &name,
        std::time::Instant::now(),
        |d| all.iter().any(|n| alive(n) && named(n, d)),
    );
    let (live, terminating): (Vec<&Node>, Vec<&Node>) = all
        .iter()
        .map(|n| n.as_ref())
        .partition(|n| alive(n) && !deleted.iter().any(|d| named(n, d)));

    // Decide: nothing is done for a spec that cannot be acted on, until someone fixes it.
    let rules = match validate(pool) {
        Ok(rules) => rules,
        Err(message) => {
            let blocker = Blocker::InvalidSpec(message);
            let disrupting = Disrupting::none(pool, Some(&blocker));
            let acted = act::Acted::blocked(blocker);
            report::status(pool, ctx, &live, &acted, &disrupting).await?;
            return Ok(Action::await_change());
        }
    };
    let hash = template_hash(&pool.spec.template);
    let pods: Vec<Vec<Arc<BoundPod>>> = live
        .iter()
        .map(|n| ctx.caches.pods_on(&n.name_any()))
        .collect();
    let observed: Vec<Observed> = live
        .iter()
        .zip(&pods)
        .map(|(node, pods)| Observed {
            node,
            pods: pods.len(),
            do_not_disrupt: node
                .annotations()
                .get(DO_NOT_DISRUPT_ANNOTATION)
                .is_some_and(|v| v == "true")
                || pods.iter().any(|p| holds_its_node(p)),
        })
        .collect();
    let now = Timestamp::now();
    let plan = disruption::plan(&disruption::Inputs {
        replicas: pool.spec.replicas.max(0) as usize,
        rules: &rules,
        template_hash: &hash,
        live: &observed,
        terminating: terminating.len(),
        now,
    });

    // Act.
    act::stamp_template_hash(ctx, &live, &hash).await?;
    let taken: HashSet<String> = all.iter().map(|n| n.name_any()).collect();
    let acted = act::converge(pool, ctx, &plan, &live, &taken).await?;

    // Report, from an observation that is not known to be stale.
    if let Some(node) = &acted.unseen {
        return Err(Error::NodeCacheBehind(node.clone()));
    }
    let blocked: Vec<String> = terminating
        .iter()
        .filter(|n| drain_blocked(n))
        .map(|n| n.name_any())
        .collect();
    let disrupting = Disrupting {
        desired: plan.desired as i32,
        condition: disruption::condition(&plan, terminating.len(), &blocked),
        template_hash: hash.clone(),
    };
    report::status(pool, ctx, &live, &acted, &disrupting).await?;
    report::scaled(pool, ctx, &live, &plan, &acted).await;
    Ok(Action::requeue(requeue_after(
        plan.next_check,
        now,
        ctx.settings.resync,
    )))
}

/// The resync, or sooner when time alone changes the plan (a second late, so that the
/// moment has passed on the clock the plan reads).
fn requeue_after(next_check: Option<Timestamp>, now: Timestamp, resync: Duration) -> Duration {
    next_check
        .and_then(|t| Duration::try_from(t.duration_since(now)).ok())
        .map_or(resync, |d| (d + Duration::from_secs(1)).min(resync))
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
