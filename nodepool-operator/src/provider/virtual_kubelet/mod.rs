//! The virtual provider: Node objects with no machine behind them, registered the way kwok
//! does it, and the kubelet's part for them, played by this operator:
//! - `node`: the Node a pool's template describes, with the termination finalizer and an
//!   owner reference to the pool, and its Ready condition;
//! - `heartbeat`: a Lease per node, renewed as a kubelet renews it, and the Node's status
//!   only when it changes;
//! - `pods`: a pod bound to a Ready virtual node reported Running, and a pod being deleted
//!   on one finished (there are no containers to start or stop).
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use nodepool_core::nodes::is_ready;
use nodepool_core::pod::BoundPod;
use operator_kit::NotFoundIsDone;
use shared_crd::{NODE_LEASE_NAMESPACE, NodePool};
use tokio::sync::Semaphore;

use super::{Created, Kubelet, KubeletError, Provider, ProviderError};

mod heartbeat;
mod node;
mod pods;

pub use heartbeat::status_due;
pub use node::{VIRTUAL_PROVIDER_ID, is_virtual, node_for, ready_condition};
pub use pods::{needs_start, pod_ip, running_status};

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

/// Pod reports (Running, or finished) in flight at once, over all nodes. The client speaks
/// HTTP/1.1: each request in flight is a connection of its own, with its buffers. The node
/// controller runs 16 reconciles at once, and a node holds up to 110 pods.
pub const POD_REPORTS_IN_FLIGHT: usize = 32;

/// Registers Node objects directly, and plays their kubelet. Cheap to clone.
#[derive(Clone)]
pub struct VirtualProvider {
    client: Client,
    nodes: Api<Node>,
    settings: VirtualSettings,
    reported: Arc<pods::Reported>,
    /// [`POD_REPORTS_IN_FLIGHT`] permits, one per pod report in flight.
    in_flight: Arc<Semaphore>,
}

impl VirtualProvider {
    pub fn new(client: Client, settings: VirtualSettings) -> Self {
        Self {
            nodes: Api::all(client.clone()),
            client,
            settings,
            reported: Arc::default(),
            in_flight: Arc::new(Semaphore::new(POD_REPORTS_IN_FLIGHT)),
        }
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

    fn kubelet(&self) -> Option<Arc<dyn Kubelet>> {
        Some(Arc::new(self.clone()))
    }
}

impl Kubelet for VirtualProvider {
    fn runs(&self, node: &Node) -> bool {
        is_virtual(node)
    }

    fn sync_pods<'a>(
        &'a self,
        node: &'a Node,
        pods: &'a [Arc<BoundPod>],
    ) -> BoxFuture<'a, Result<(), KubeletError>> {
        Box::pin(async move {
            // A kubelet's last step for a pod being deleted: there are no containers to stop.
            let leaving = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_some());
            futures::future::join_all(leaving.map(|pod| self.finish(pod)))
                .await
                .into_iter()
                .collect::<Result<Vec<()>, _>>()?;
            // Its first step: a pod bound to a Ready node runs (no containers to pull). The
            // node's pods are reported together (within the kubelet's budget), each once.
            if node.metadata.deletion_timestamp.is_none() && is_ready(node) {
                let starting: Vec<&Arc<BoundPod>> = pods
                    .iter()
                    .filter(|p| needs_start(p) && !self.reported.pending(p))
                    .collect();
                let results =
                    futures::future::join_all(starting.iter().map(|pod| self.start(pod, node)))
                        .await;
                let mut failed = None;
                for (pod, result) in starting.into_iter().zip(results) {
                    match result {
                        Ok(()) => self.reported.sent(pod),
                        Err(source) => {
                            failed.get_or_insert(KubeletError::PodStartFailed {
                                pod: pods::key(pod),
                                source,
                            });
                        }
                    }
                }
                if let Some(e) = failed {
                    return Err(e);
                }
            }
            Ok(())
        })
    }

    fn release<'a>(
        &'a self,
        node: &'a Node,
        pods: &'a [Arc<BoundPod>],
    ) -> BoxFuture<'a, Result<(), KubeletError>> {
        Box::pin(async move {
            for pod in pods {
                self.finish(pod).await?;
            }
            let leases: Api<Lease> = Api::namespaced(self.client.clone(), NODE_LEASE_NAMESPACE);
            leases
                .delete(&node.name_any(), &DeleteParams::default())
                .await
                .ok_if_not_found()
                .map(|_| ())
                .map_err(|source| KubeletError::LeaseDeletionFailed {
                    node: node.name_any(),
                    source,
                })
        })
    }

    fn heartbeats(&self, nodes: Store<Node>) -> BoxFuture<'static, ()> {
        let heartbeats =
            heartbeat::Heartbeats::new(self.client.clone(), nodes, self.settings.clone());
        Box::pin(heartbeats.run())
    }
}

impl VirtualProvider {
    /// Reports `pod` Running on `node`, within the kubelet's budget of requests in flight.
    async fn start(&self, pod: &BoundPod, node: &Node) -> Result<(), kube::Error> {
        let _permit = self.in_flight.acquire().await.expect("never closed");
        pods::start(&self.client, pod, node).await
    }

    async fn finish(&self, pod: &BoundPod) -> Result<(), KubeletError> {
        let _permit = self.in_flight.acquire().await.expect("never closed");
        pods::finish(&self.client, pod)
            .await
            .map_err(|source| KubeletError::PodFinishFailed {
                pod: pods::key(pod),
                source,
            })
    }
}
