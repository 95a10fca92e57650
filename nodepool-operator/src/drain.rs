//! Taking a node out of service before it is deleted: cordon, evict its pods through the
//! Eviction API (so PodDisruptionBudgets are honoured), and since no kubelet runs behind
//! a virtual node, finish pods that are already terminating there.
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// Annotation with the time a node's drain started (RFC 3339).
pub const DRAIN_STARTED: &str = "nodepool.dev/drain-started";

/// Where a drain stands.
#[derive(Debug, PartialEq, Eq)]
pub enum DrainState {
    /// No pods left: the node can go.
    Drained,
    /// Pods remain; `blocked` counts evictions a PodDisruptionBudget refused.
    InProgress { remaining: usize, blocked: usize },
    /// The drain took longer than the timeout; the node goes anyway.
    TimedOut { remaining: usize },
}

/// Servers before 1.22 do not serve policy/v1 Eviction; remembered once seen.
static EVICTION_V1BETA1: AtomicBool = AtomicBool::new(false);

/// One step of draining `node`; call again until it is `Drained` or `TimedOut`.
pub async fn drain_step(
    client: &Client,
    node: &Node,
    timeout: Duration,
) -> Result<DrainState, kube::Error> {
    let nodes: Api<Node> = Api::all(client.clone());
    let name = node.name_any();
    let started = match node
        .annotations()
        .get(DRAIN_STARTED)
        .and_then(|t| t.parse::<Timestamp>().ok())
    {
        Some(t) => t,
        None => {
            let now = Timestamp::now();
            let patch = json!({
                "metadata": {"annotations": {DRAIN_STARTED: now.to_string()}},
                "spec": {"unschedulable": true},
            });
            nodes
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
            now
        }
    };

    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={name}")))
        .await?;
    let mut remaining = 0;
    let mut blocked = 0;
    for pod in &on_node.items {
        remaining += 1;
        if pod.metadata.deletion_timestamp.is_some() {
            // The kubelet would stop the containers and remove the pod; there is none.
            finish(client, pod).await?;
            continue;
        }
        if evict(client, pod).await? {
            blocked += 1;
        }
    }
    if remaining == 0 {
        return Ok(DrainState::Drained);
    }
    let elapsed = Duration::try_from(Timestamp::now().duration_since(started)).unwrap_or_default();
    if elapsed >= timeout {
        return Ok(DrainState::TimedOut { remaining });
    }
    Ok(DrainState::InProgress { remaining, blocked })
}

/// Deletes every pod left on `node` at once (after a drain timeout).
pub async fn finish_all(client: &Client, node: &Node) -> Result<(), kube::Error> {
    let pods: Api<Pod> = Api::all(client.clone());
    let on_node = pods
        .list(&ListParams::default().fields(&format!("spec.nodeName={}", node.name_any())))
        .await?;
    for pod in &on_node.items {
        finish(client, pod).await?;
    }
    Ok(())
}

async fn finish(client: &Client, pod: &Pod) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    match api
        .delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Evicts `pod`; returns whether a PodDisruptionBudget refused it (429).
async fn evict(client: &Client, pod: &Pod) -> Result<bool, kube::Error> {
    let namespace = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    if !EVICTION_V1BETA1.load(Ordering::Relaxed) {
        let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        match api.evict(&name, &EvictParams::default()).await {
            Ok(_) => return Ok(false),
            Err(kube::Error::Api(s)) if s.code == 429 => return Ok(true),
            Err(kube::Error::Api(s)) if s.is_not_found() && !s.message.contains("Eviction") => {
                return Ok(false);
            }
            Err(kube::Error::Api(s)) if s.message.contains("policy/v1") => {
                tracing::info!("server does not serve policy/v1 Eviction; using policy/v1beta1");
                EVICTION_V1BETA1.store(true, Ordering::Relaxed);
            }
            Err(e) => return Err(e),
        }
    }
    let body = json!({
        "apiVersion": "policy/v1beta1",
        "kind": "Eviction",
        "metadata": {"name": name, "namespace": namespace},
    });
    let request = http::Request::post(format!(
        "/api/v1/namespaces/{namespace}/pods/{name}/eviction"
    ))
    .header(http::header::CONTENT_TYPE, "application/json")
    .body(serde_json::to_vec(&body).map_err(kube::Error::SerdeError)?)
    .map_err(|e| kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e)))?;
    match client.request::<serde_json::Value>(request).await {
        Ok(_) => Ok(false),
        Err(kube::Error::Api(s)) if s.code == 429 => Ok(true),
        Err(kube::Error::Api(s)) if s.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}
