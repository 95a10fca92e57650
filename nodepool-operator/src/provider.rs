//! Where nodes come from. The embedded `virtual` provider registers real `Node` objects
//! the way kwok does: no machine behind them. The kubelet's part for those nodes
//! (heartbeats, readiness, finishing pods) is in `heartbeat` and `lifecycle`.
use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use operator_kit::NotFoundIsDone;
use shared_crd::{NodePool, POOL_LABEL, TERMINATION_FINALIZER};

/// `spec.providerID` prefix of the virtual provider's nodes.
pub const VIRTUAL_PROVIDER_ID: &str = "virtual://";

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("creating node {name}: {source}")]
    CreateFailed {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("deleting node {name}: {source}")]
    DeleteFailed {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// What a create did.
#[derive(Debug)]
pub enum Created {
    /// A new node, as the server stored it.
    New(Box<Node>),
    /// A node of that name exists already (a cache behind our own create, or a slot
    /// still held by a terminating node): nothing was created.
    AlreadyExists,
}

/// A source of machines for a pool.
pub trait Provider: Send + Sync {
    /// Starts a machine for `pool` that registers as node `node_name`.
    fn create<'a>(
        &'a self,
        pool: &'a NodePool,
        node_name: &'a str,
    ) -> BoxFuture<'a, Result<Created, ProviderError>>;
    /// Starts the removal of `node`: it is drained (the termination finalizer), then goes.
    fn delete<'a>(&'a self, node: &'a Node) -> BoxFuture<'a, Result<(), ProviderError>>;
}

/// Settings of the virtual provider and of the kubelet it plays.
#[derive(Clone, Debug)]
pub struct VirtualSettings {
    /// Time from creation to Ready (0: Ready in the create request itself).
    pub provisioning_delay: Duration,
    /// How often each node's Lease is renewed (the kubelet's 10 s).
    pub lease_renew_interval: Duration,
    /// How long a Lease lasts unrenewed (the kubelet's 40 s).
    pub lease_duration: Duration,
    /// How often node status is rewritten when nothing changed (the kubelet's 5 min).
    pub status_report_interval: Duration,
    /// Put the `nodepool.dev/virtual:NoSchedule` taint on each node.
    pub taint_nodes: bool,
}

impl Default for VirtualSettings {
    fn default() -> Self {
        Self {
            provisioning_delay: Duration::from_secs(2),
            lease_renew_interval: Duration::from_secs(10),
            lease_duration: Duration::from_secs(40),
            status_report_interval: Duration::from_secs(300),
            taint_nodes: true,
        }
    }
}

/// Registers Node objects directly: a node with no machine behind it.
pub struct VirtualProvider {
    nodes: Api<Node>,
    settings: VirtualSettings,
}

impl VirtualProvider {
    pub fn new(client: Client, settings: VirtualSettings) -> Self {
        Self {
            nodes: Api::all(client),
            settings,
        }
    }
}

/// The Node a pool's template describes, carrying the termination finalizer and an
/// owner reference to the pool. Ready at once when `ready`.
pub fn node_for(pool: &NodePool, node_name: &str, taint_nodes: bool, ready: bool) -> Node {
    let template = &pool.spec.template;
    let mut labels = pool.node_labels();
    labels.insert("kubernetes.io/hostname".into(), node_name.into());
    let taints = pool.node_taints(taint_nodes);
    let resources = BTreeMap::from([
        ("cpu".to_owned(), template.capacity.cpu.clone()),
        ("memory".to_owned(), template.capacity.memory.clone()),
        ("pods".to_owned(), template.capacity.pods.clone()),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(node_name.into()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                "node.alpha.kubernetes.io/ttl".to_owned(),
                "0".to_owned(),
            )])),
            owner_references: pool.controller_owner_ref(&()).map(|r| vec![r]),
            finalizers: Some(vec![TERMINATION_FINALIZER.to_owned()]),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!taints.is_empty()).then_some(taints),
            provider_id: Some(format!("{VIRTUAL_PROVIDER_ID}{node_name}")),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            conditions: Some(vec![ready_condition(ready, shared_crd::time::now(), None)]),
            ..Default::default()
        }),
    }
}

/// The Ready condition a virtual node reports, heartbeat `at`; the transition time is
/// kept from `previous` when the status did not change.
pub fn ready_condition(ready: bool, at: Time, previous: Option<&NodeCondition>) -> NodeCondition {
    let status = if ready { "True" } else { "False" };
    let last_transition_time = previous
        .filter(|p| p.status == status)
        .and_then(|p| p.last_transition_time.clone())
        .or_else(|| Some(at.clone()));
    NodeCondition {
        type_: "Ready".into(),
        status: status.into(),
        reason: Some(
            if ready {
                "VirtualNodeReady"
            } else {
                "Provisioning"
            }
            .into(),
        ),
        message: Some(
            if ready {
                "virtual node is ready"
            } else {
                "virtual node is starting"
            }
            .into(),
        ),
        last_heartbeat_time: Some(at),
        last_transition_time,
    }
}

impl Provider for VirtualProvider {
    fn create<'a>(
        &'a self,
        pool: &'a NodePool,
        node_name: &'a str,
    ) -> BoxFuture<'a, Result<Created, ProviderError>> {
        Box::pin(async move {
            let ready = self.settings.provisioning_delay.is_zero();
            let node = node_for(pool, node_name, self.settings.taint_nodes, ready);
            let params = PostParams {
                field_manager: Some(shared_crd::field_manager::NODEPOOL_OPERATOR.into()),
                ..Default::default()
            };
            match self.nodes.create(&params, &node).await {
                Ok(node) => Ok(Created::New(Box::new(node))),
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(Created::AlreadyExists),
                Err(source) => Err(ProviderError::CreateFailed {
                    name: node_name.into(),
                    source,
                }),
            }
        })
    }

    fn delete<'a>(&'a self, node: &'a Node) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let name = node.name_any();
            match self
                .nodes
                .delete(&name, &DeleteParams::default())
                .await
                .ok_if_not_found()
            {
                Ok(_) => Ok(()),
                Err(source) => Err(ProviderError::DeleteFailed { name, source }),
            }
        })
    }
}

/// The pool a node of this operator belongs to: it carries the pool label and a
/// controller reference to a NodePool. Nodes that only carry the label were made by
/// someone else: they are never adopted, counted or deleted.
pub fn pool_of(node: &Node) -> Option<&str> {
    pool_owner(node)?;
    node.labels().get(POOL_LABEL).map(String::as_str)
}

/// The node's controller reference to a NodePool, if it has one.
pub fn pool_owner(node: &Node) -> Option<&OwnerReference> {
    node.owner_references()
        .iter()
        .find(|r| r.kind == "NodePool" && r.controller == Some(true))
}

/// Whether `node` is a virtual node of this operator (the kubelet's part is ours).
pub fn is_virtual(node: &Node) -> bool {
    pool_of(node).is_some()
        && node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .is_some_and(|id| id.starts_with(VIRTUAL_PROVIDER_ID))
}

/// Whether `node` is owned by `pool` (this uid).
pub fn is_owned_by(node: &Node, pool: &NodePool) -> bool {
    node.owner_references()
        .iter()
        .any(|r| r.kind == NodePool::kind(&()) && Some(&r.uid) == pool.metadata.uid.as_ref())
}

/// Node names for new nodes: `<pool>-<5 chars>`, derived from the pool's uid and a slot
/// number with a stable hash (FNV-1a), so that creating a node twice is an
/// AlreadyExists, not a second node, in this release and the next. `taken` holds every
/// name in use, terminating nodes included.
pub fn free_node_names(
    pool: &NodePool,
    taken: &std::collections::HashSet<String>,
    count: usize,
) -> Vec<String> {
    let uid = pool.metadata.uid.clone().unwrap_or_default();
    (0u32..)
        .map(|slot| format!("{}-{}", pool.name_any(), short_id(&uid, slot)))
        .filter(|n| !taken.contains(n))
        .take(count)
        .collect()
}

fn short_id(uid: &str, slot: u32) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut h = fnv1a(uid.as_bytes().iter().chain(&slot.to_le_bytes()));
    (0..5)
        .map(|_| {
            let c = ALPHABET[(h % 36) as usize] as char;
            h /= 36;
            c
        })
        .collect()
}

/// FNV-1a, 64 bits: a hash whose values never change between builds.
pub fn fnv1a<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_crd::{NodePoolSpec, NodeTemplate};

    fn pool() -> NodePool {
        let mut pool = NodePool::new(
            "web",
            NodePoolSpec {
                replicas: 3,
                template: NodeTemplate::default(),
            },
        );
        pool.metadata.uid = Some("uid-1".into());
        pool
    }

    #[test]
    fn node_names_are_stable_per_slot_and_skip_taken_ones() {
        let pool = pool();
        let none = Default::default();
        let first = free_node_names(&pool, &none, 3);
        assert_eq!(first.len(), 3);
        assert!(first.iter().all(|n| n.starts_with("web-") && n.len() == 9));
        // The same in every build: a fixed hash, not std's DefaultHasher.
        assert_eq!(first[0], format!("web-{}", short_id("uid-1", 0)));
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c, "FNV-1a test vector");
        let taken = [first[0].clone()].into_iter().collect();
        assert_eq!(free_node_names(&pool, &taken, 2), first[1..3]);
    }

    #[test]
    fn a_node_carries_the_finalizer_owner_and_pool_label() {
        let pool = pool();
        let node = node_for(&pool, "web-abcde", true, false);
        assert_eq!(node.finalizers(), [TERMINATION_FINALIZER]);
        assert_eq!(pool_of(&node), Some("web"));
        assert!(is_virtual(&node));
        assert!(is_owned_by(&node, &pool));
        let ready = node_for(&pool, "web-abcde", true, true);
        assert!(crate::decide::is_ready(&ready));
        assert!(!crate::decide::is_ready(&node));
    }

    #[test]
    fn a_labelled_node_without_our_owner_reference_is_foreign() {
        let mut node = node_for(&pool(), "x", true, true);
        node.metadata.owner_references = None;
        assert_eq!(pool_of(&node), None);
        assert!(!is_virtual(&node));
    }

    #[test]
    fn the_ready_transition_time_moves_only_when_the_status_flips() {
        let t = |s| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
        let first = ready_condition(true, t(10), None);
        let later = ready_condition(true, t(20), Some(&first));
        assert_eq!(later.last_transition_time, Some(t(10)));
        assert_eq!(later.last_heartbeat_time, Some(t(20)));
        let flipped = ready_condition(false, t(30), Some(&later));
        assert_eq!(flipped.last_transition_time, Some(t(30)));
    }
}
