//! Where nodes come from. The embedded `virtual` provider registers real `Node` objects
//! the way kwok does: no kubelet, so it also plays the kubelet's part for its own nodes
//! (Ready after a provisioning delay, heartbeats, finishing pods on deleted nodes).
use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use shared_crd::{NodePool, POOL_LABEL, VIRTUAL_NODE_TAINT};

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
    #[error("updating node {name} status: {source}")]
    StatusFailed {
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// A source of machines for a pool.
pub trait Provider: Send + Sync {
    /// Provider name, as given to `--provider`.
    fn name(&self) -> &'static str;
    /// Starts a machine for `pool` that registers as node `node_name`.
    fn create<'a>(
        &'a self,
        pool: &'a NodePool,
        node_name: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Removes the machine behind `node` and its Node object.
    fn delete<'a>(&'a self, node: &'a Node) -> BoxFuture<'a, Result<(), ProviderError>>;
    /// Brings a machine's reported state up to date; returns when to look again.
    fn refresh<'a>(
        &'a self,
        node: &'a Node,
    ) -> BoxFuture<'a, Result<Option<Duration>, ProviderError>>;
}

/// Settings of the virtual provider.
#[derive(Clone, Debug)]
pub struct VirtualSettings {
    /// Time from creation to Ready.
    pub provisioning_delay: Duration,
    /// How often a Ready node's heartbeat is refreshed.
    pub heartbeat_interval: Duration,
    /// Put the `nodepool.dev/virtual:NoSchedule` taint on each node.
    pub taint_nodes: bool,
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

/// The Node a pool's template describes.
pub fn node_for(pool: &NodePool, node_name: &str, taint_nodes: bool) -> Node {
    let template = &pool.spec.template;
    let mut labels: BTreeMap<String, String> = template.labels.clone();
    labels.insert(POOL_LABEL.into(), pool.name_any());
    labels.insert("kubernetes.io/hostname".into(), node_name.into());
    labels.insert("type".into(), "virtual".into());
    let mut taints = template.taints.clone();
    if taint_nodes && !taints.iter().any(|t| t.key == VIRTUAL_NODE_TAINT) {
        taints.push(Taint {
            key: VIRTUAL_NODE_TAINT.into(),
            value: Some("true".into()),
            effect: "NoSchedule".into(),
            time_added: None,
        });
    }
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
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!taints.is_empty()).then_some(taints),
            provider_id: Some(format!("virtual://{node_name}")),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            conditions: Some(vec![virtual_ready_condition(false, now())]),
            ..Default::default()
        }),
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn virtual_ready_condition(ready: bool, at: Time) -> NodeCondition {
    NodeCondition {
        type_: "Ready".into(),
        status: if ready { "True" } else { "False" }.into(),
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
        last_heartbeat_time: Some(at.clone()),
        last_transition_time: Some(at),
    }
}

impl Provider for VirtualProvider {
    fn name(&self) -> &'static str {
        "virtual"
    }

    fn create<'a>(
        &'a self,
        pool: &'a NodePool,
        node_name: &'a str,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let node = node_for(pool, node_name, self.settings.taint_nodes);
            let params = PostParams {
                field_manager: Some(shared_crd::field_manager::NODEPOOL_OPERATOR.into()),
                ..Default::default()
            };
            match self.nodes.create(&params, &node).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
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
            match self.nodes.delete(&name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
                Err(source) => Err(ProviderError::DeleteFailed { name, source }),
            }
        })
    }

    fn refresh<'a>(
        &'a self,
        node: &'a Node,
    ) -> BoxFuture<'a, Result<Option<Duration>, ProviderError>> {
        Box::pin(async move {
            let name = node.name_any();
            let now_ts = Timestamp::now();
            let previous = crate::decide::ready_condition(node);
            let ready = previous.is_some_and(|c| c.status == "True");
            let heartbeat = previous.and_then(|c| c.last_heartbeat_time.clone());
            // Not due yet: a heartbeat that is recent, or a node still provisioning.
            let (since, wait) = if ready {
                (
                    heartbeat.map(|t| t.0).unwrap_or(now_ts),
                    self.settings.heartbeat_interval,
                )
            } else {
                let created = node.creation_timestamp().map(|t| t.0).unwrap_or(now_ts);
                (created, self.settings.provisioning_delay)
            };
            let age = Duration::try_from(now_ts.duration_since(since)).unwrap_or_default();
            if age < wait {
                return Ok(Some(wait - age));
            }
            // The kubelet's job: report Ready (the first time) or a fresh heartbeat.
            let mut condition = virtual_ready_condition(true, now());
            if let Some(previous) = previous.filter(|_| ready) {
                condition.last_transition_time = previous.last_transition_time.clone();
            }
            let patch = json!({"status": {"conditions": [condition]}});
            match self
                .nodes
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.is_not_found() => {}
                Err(source) => return Err(ProviderError::StatusFailed { name, source }),
            }
            Ok(Some(self.settings.heartbeat_interval))
        })
    }
}

/// Whether this operator's provider made `node` (it carries the pool label).
pub fn pool_of(node: &Node) -> Option<&str> {
    node.labels().get(POOL_LABEL).map(String::as_str)
}

/// `kind: Node` owner-reference helper for tests.
pub fn is_owned_by(node: &Node, pool: &NodePool) -> bool {
    node.owner_references()
        .iter()
        .any(|r| r.kind == NodePool::kind(&()) && Some(&r.uid) == pool.metadata.uid.as_ref())
}

/// The kubelet's last part for virtual nodes: a pod bound to one of the pool nodes in
/// `nodes` that is being deleted is removed at once (grace period 0); with no kubelet
/// it would stay Terminating for ever. Runs until the watch ends.
pub async fn finish_terminating_pods(client: Client, nodes: kube::runtime::reflector::Store<Node>) {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::{WatchStreamExt, watcher};

    let pods: Api<Pod> = Api::all(client.clone());
    watcher(pods, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .for_each(|pod| {
            let (client, nodes) = (client.clone(), nodes.clone());
            async move {
                let Ok(pod) = pod else { return };
                let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) else { return };
                if pod.metadata.deletion_timestamp.is_none()
                    || nodes.get(&kube::runtime::reflector::ObjectRef::new(&node)).is_none()
                {
                    return;
                }
                let api: Api<Pod> = Api::namespaced(client, &pod.namespace().unwrap_or_default());
                match api.delete(&pod.name_any(), &DeleteParams::default().grace_period(0)).await {
                    Ok(_) => tracing::debug!(pod = %pod.name_any(), %node, "finished terminating pod on virtual node"),
                    Err(kube::Error::Api(s)) if s.is_not_found() => {}
                    Err(e) => tracing::warn!(pod = %pod.name_any(), error = %e, "finishing pod failed"),
                }
            }
        })
        .await;
}
