//! Taking pods off a node: which pods a drain moves (not DaemonSet or mirror pods, as
//! `kubectl drain --ignore-daemonsets`), eviction through the Eviction API (so
//! PodDisruptionBudgets are honoured), and finishing a pod the way a kubelet does.
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, EvictParams};
use kube::{Client, ResourceExt};
use serde_json::json;

/// Annotation the kubelet puts on a mirror pod (a static pod's API copy).
const MIRROR_POD: &str = "kubernetes.io/config.mirror";

/// Whether a drain leaves `pod` alone: a DaemonSet's pod (it would come straight back)
/// or a mirror pod (the API cannot delete a static pod).
pub fn stays_on_drain(pod: &Pod) -> bool {
    pod.annotations().contains_key(MIRROR_POD)
        || pod
            .owner_references()
            .iter()
            .any(|r| r.kind == "DaemonSet" && r.controller == Some(true))
}

/// Servers before 1.22 do not serve policy/v1 Eviction; remembered once seen.
static EVICTION_V1BETA1: AtomicBool = AtomicBool::new(false);

/// Evicts `pod`; returns whether a PodDisruptionBudget refused it (429).
pub async fn evict(client: &Client, pod: &Pod) -> Result<bool, kube::Error> {
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

/// Removes `pod` at once (grace period 0): what the kubelet does once a pod's containers
/// have stopped. A virtual node has no containers to stop.
pub async fn finish(client: &Client, pod: &Pod) -> Result<(), kube::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned_by(kind: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.owner_references = Some(vec![OwnerReference {
            kind: kind.into(),
            controller: Some(true),
            ..Default::default()
        }]);
        pod
    }

    #[test]
    fn daemonset_and_mirror_pods_stay_the_rest_go() {
        assert!(stays_on_drain(&owned_by("DaemonSet")));
        assert!(!stays_on_drain(&owned_by("ReplicaSet")));
        assert!(!stays_on_drain(&Pod::default()));
        let mut mirror = Pod::default();
        mirror.metadata.annotations = Some([(MIRROR_POD.to_owned(), "x".to_owned())].into());
        assert!(stays_on_drain(&mirror));
    }
}
