//! The kubelet's part for pods on virtual nodes, as kwok plays it: a pod the scheduler
//! bound to a Ready virtual node is reported Running, with the status a kubelet writes
//! (phase, the four conditions, pod and host IPs, start time, each container running).
//! There are no containers: the pod is Running the moment it is bound, and a pod being
//! deleted is finished at once.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStatus, Node, Pod, PodCondition, PodIP,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use nodepool_core::naming::fnv1a;
use nodepool_core::pod::BoundPod;
use operator_kit::NotFoundIsDone;
use operator_kit::patch::StatusPatch;

/// Whether `pod` waits for its kubelet: bound, not on its way out, not started or ended.
pub fn needs_start(pod: &BoundPod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(pod.phase(), Some("Running" | "Succeeded" | "Failed"))
}

/// A stable pod IP from the pod's uid, in 10.244.0.0/16 (kwok's default pod CIDR); a
/// virtual cluster routes nothing to it.
pub fn pod_ip(uid: &str) -> String {
    let h = fnv1a(uid.as_bytes());
    format!("10.244.{}.{}", (h >> 8) % 256, h % 254 + 1)
}

/// The node's InternalIP, if it has one.
fn host_ip(node: &Node) -> Option<String> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
}

/// The status a kubelet reports for a pod whose containers all started at `now`.
pub fn running_status(pod: &BoundPod, node: &Node, now: Timestamp) -> StatusPatch<PodStatus> {
    let now = Time(now);
    let ip = pod_ip(pod.metadata.uid.as_deref().unwrap_or_default());
    let condition = |type_: &str| PodCondition {
        type_: type_.into(),
        status: "True".into(),
        last_transition_time: Some(now.clone()),
        ..Default::default()
    };
    let containers = pod
        .spec
        .containers
        .iter()
        .map(|c| ContainerStatus {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            image_id: String::new(),
            ready: true,
            started: Some(true),
            restart_count: 0,
            state: Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(now.clone()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    StatusPatch {
        status: PodStatus {
            phase: Some("Running".into()),
            conditions: Some(
                ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
                    .map(condition)
                    .into(),
            ),
            pod_ip: Some(ip.clone()),
            pod_ips: Some(vec![PodIP { ip }]),
            host_ip: host_ip(node),
            start_time: Some(now.clone()),
            container_statuses: Some(containers),
            ..Default::default()
        },
    }
}

/// Reports `pod` Running on `node`.
pub async fn start(client: &Client, pod: &BoundPod, node: &Node) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let patch = running_status(pod, node, Timestamp::now());
    api.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Strategic(&patch),
    )
    .await
    .ok_if_not_found()
    .map(|_| ())
}

/// Removes `pod` at once (grace period 0): what the kubelet does once a pod's containers
/// have stopped. A virtual node has no containers to stop.
pub async fn finish(client: &Client, pod: &BoundPod) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    api.delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
        .await
        .ok_if_not_found()
        .map(|_| ())
}

/// The pods this kubelet reported Running whose new status the cache may not show yet,
/// by uid, with the resourceVersion the report was made from: a reconcile that runs
/// before the watch delivers the report does not send it again (the expectations of
/// controller-runtime's ReplicaSet controller). It only saves requests: a restart that
/// loses it costs at most one repeated report per pod.
#[derive(Debug, Default)]
pub struct Reported(Mutex<HashMap<String, (Option<String>, Instant)>>);

/// How long a report is remembered while the cache still shows the version before it.
const REPORTED_TTL: Duration = Duration::from_secs(30);
/// Past this many pods remembered, the expired ones are dropped at the next report.
const PRUNE_AT: usize = 4096;

impl Reported {
    /// Whether `pod`, as cached, is the copy a report was made from: the report is on its
    /// way to the cache.
    pub fn pending(&self, pod: &BoundPod) -> bool {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let mut reported = self.0.lock().expect("not poisoned");
        let Some((from, at)) = reported.get(uid) else {
            return false;
        };
        if *from == pod.metadata.resource_version && at.elapsed() <= REPORTED_TTL {
            return true;
        }
        reported.remove(uid);
        false
    }

    /// Remembers that `pod`, as cached, was reported Running.
    pub fn sent(&self, pod: &BoundPod) {
        let mut reported = self.0.lock().expect("not poisoned");
        if reported.len() >= PRUNE_AT {
            reported.retain(|_, (_, at)| at.elapsed() <= REPORTED_TTL);
        }
        reported.insert(
            pod.metadata.uid.clone().unwrap_or_default(),
            (pod.metadata.resource_version.clone(), Instant::now()),
        );
    }
}

/// `namespace/name`, for messages.
pub fn key(pod: &BoundPod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(phase: Option<&str>) -> BoundPod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "1234"},
            "spec": {"nodeName": "n", "containers": [
                {"name": "app", "image": "nginx"}, {"name": "sidecar", "image": "envoy"}]},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn only_a_pod_not_yet_started_or_ended_is_started() {
        assert!(needs_start(&pod(None)));
        assert!(needs_start(&pod(Some("Pending"))));
        for phase in ["Running", "Succeeded", "Failed"] {
            assert!(!needs_start(&pod(Some(phase))), "{phase}");
        }
        let mut leaving = pod(None);
        leaving.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
        );
        assert!(!needs_start(&leaving));
    }

    #[test]
    fn the_status_is_a_kubelets() {
        let node = Node {
            status: Some(
                serde_json::from_value(json!({
                    "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}]
                }))
                .unwrap(),
            ),
            ..Default::default()
        };
        let now: Timestamp = "2026-11-24T12:00:00Z".parse().unwrap();
        let patch = serde_json::to_value(running_status(&pod(None), &node, now)).unwrap();
        let status = &patch["status"];
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["hostIP"], "10.0.0.7");
        assert_eq!(status["podIP"], pod_ip("1234"));
        assert_eq!(status["startTime"], "2026-11-24T12:00:00Z");
        let types: Vec<&str> = status["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["Initialized", "Ready", "ContainersReady", "PodScheduled"]
        );
        let containers = status["containerStatuses"].as_array().unwrap();
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[1]["name"], "sidecar");
        assert_eq!(containers[1]["image"], "envoy");
        assert!(containers[0]["state"]["running"]["startedAt"].is_string());
        // A node without an address gives no hostIP rather than a made-up one.
        let bare = serde_json::to_value(running_status(&pod(None), &Node::default(), now));
        assert!(bare.unwrap()["status"].get("hostIP").is_none());
    }

    #[test]
    fn a_report_is_pending_until_the_cache_shows_a_newer_copy() {
        let reported = Reported::default();
        let mut cached = pod(None);
        cached.metadata.resource_version = Some("5".into());
        assert!(!reported.pending(&cached), "nothing reported yet");
        reported.sent(&cached);
        assert!(reported.pending(&cached), "the cache still shows version 5");
        assert!(reported.pending(&cached), "and still does");
        let mut newer = cached.clone();
        newer.metadata.resource_version = Some("6".into());
        assert!(!reported.pending(&newer), "the cache moved on");
        assert!(
            !reported.pending(&cached),
            "forgotten once the cache moved on"
        );
        let mut other = pod(None);
        other.metadata.uid = Some("other".into());
        reported.sent(&cached);
        assert!(!reported.pending(&other), "by uid");
    }

    #[test]
    fn pod_ips_are_stable_and_in_the_pod_cidr() {
        assert_eq!(pod_ip("a"), pod_ip("a"));
        assert_ne!(pod_ip("a"), pod_ip("b"));
        assert!(pod_ip("a").starts_with("10.244."));
    }
}
