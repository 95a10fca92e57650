//! The kubelet's part for pods on virtual nodes, as kwok plays it: a pod the scheduler
//! bound to a Ready virtual node is reported Running, with the status a kubelet writes
//! (phase, the four conditions, pod and host IPs, start time, each container running).
//! There are no containers: the pod is Running the moment it is bound. Its end is in
//! `drain::finish`.
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use operator_kit::NotFoundIsDone;
use serde_json::{Value, json};

/// Whether `pod` waits for its kubelet: bound, not on its way out, not started or ended.
pub fn needs_start(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Running" | "Succeeded" | "Failed")
        )
}

/// A stable pod IP from the pod's uid, in 10.244.0.0/16 (kwok's default pod CIDR); a
/// virtual cluster routes nothing to it.
pub fn pod_ip(uid: &str) -> String {
    let h = crate::provider::fnv1a(uid.as_bytes());
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
pub fn running_status(pod: &Pod, node: &Node, now: Timestamp) -> Value {
    let now = now.to_string();
    let ip = pod_ip(pod.metadata.uid.as_deref().unwrap_or_default());
    let condition = |type_: &str| json!({"type": type_, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let containers: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| {
            json!({
                "name": c.name,
                "image": c.image.clone().unwrap_or_default(),
                "imageID": "",
                "ready": true,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": now}},
            })
        })
        .collect();
    let mut status = json!({
        "phase": "Running",
        "conditions": [
            condition("Initialized"),
            condition("Ready"),
            condition("ContainersReady"),
            condition("PodScheduled"),
        ],
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "startTime": now,
        "containerStatuses": containers,
    });
    if let Some(host) = host_ip(node) {
        status["hostIP"] = json!(host);
    }
    json!({ "status": status })
}

/// Reports `pod` Running on `node`.
pub async fn start(client: &Client, pod: &Pod, node: &Node) -> Result<(), kube::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: Option<&str>) -> Pod {
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
        let status = &running_status(&pod(None), &node, now)["status"];
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
        let bare = running_status(&pod(None), &Node::default(), now);
        assert!(bare["status"].get("hostIP").is_none());
    }

    #[test]
    fn pod_ips_are_stable_and_in_the_pod_cidr() {
        assert_eq!(pod_ip("a"), pod_ip("a"));
        assert_ne!(pod_ip("a"), pod_ip("b"));
        assert!(pod_ip("a").starts_with("10.244."));
    }
}
