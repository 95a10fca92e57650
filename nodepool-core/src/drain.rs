//! The rules of a drain, as `kubectl drain` and Karpenter's termination controller follow
//! them: which pods it moves, how an eviction is addressed and what its refusal means,
//! what a blocked drain reports, and when it tries again.
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use kube_core::{ResourceExt, Status};
use shared_crd::DO_NOT_DISRUPT_ANNOTATION;

use crate::nodes::is_ready;
use crate::pod::{BoundPod, MIRROR_POD};

/// The cause the API server gives when a PodDisruptionBudget refuses an eviction.
const DISRUPTION_BUDGET_CAUSE: &str = "DisruptionBudget";

/// How often a drain that budgets block tries again (`kubectl drain` tries every 5 s).
pub const EVICTION_RETRY: Duration = Duration::from_secs(10);

/// The longest `DrainBlocked` message: a condition message is for people, and a node full
/// of refused pods would not fit.
const MESSAGE_LIMIT: usize = 1024;

/// Whether a drain leaves `pod` alone: a DaemonSet's pod (it would come straight back)
/// or a mirror pod (the API cannot delete a static pod).
pub fn stays_on_drain(pod: &BoundPod) -> bool {
    pod.annotations().contains_key(MIRROR_POD) || pod.daemon_set
}

/// A pod that keeps its node out of voluntary disruptions: `nodepool.dev/do-not-disrupt:
/// "true"`, and not finished (Succeeded or Failed).
pub fn holds_its_node(pod: &BoundPod) -> bool {
    let finished = pod
        .phase()
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    !finished
        && pod
            .annotations()
            .get(DO_NOT_DISRUPT_ANNOTATION)
            .is_some_and(|v| v == "true")
}

/// Whether the drain of `node` waits for `pod` instead of evicting it: a pod that holds
/// its node, as Karpenter's termination controller keeps `do-not-disrupt` pods, until it
/// ends or the pool's `terminationGracePeriodSeconds` forces it. On a node that is not
/// Ready (a repair, or a node that went down while it drained) it is evicted: it cannot
/// be running there as far as the control plane knows.
pub fn waits_for(pod: &BoundPod, node: &Node) -> bool {
    holds_its_node(pod) && is_ready(node)
}

/// How a pod a drain waits for is listed with the refused evictions.
pub const WAITING_FOR: &str = "nodepool.dev/do-not-disrupt: kept until it ends \
                               (or the pool's terminationGracePeriodSeconds)";

/// `group/version` of the `pods/eviction` subresource in the core `v1` resource list.
pub fn eviction_version(core: &APIResourceList) -> Option<String> {
    let eviction = core.resources.iter().find(|r| r.name == "pods/eviction")?;
    match (eviction.group.as_deref(), eviction.version.as_deref()) {
        (Some(group), Some(version)) if !group.is_empty() && !version.is_empty() => {
            Some(format!("{group}/{version}"))
        }
        // Servers that leave them out serve the oldest: policy/v1beta1.
        _ => Some("policy/v1beta1".to_owned()),
    }
}

/// Why a 429 refused an eviction: the DisruptionBudget causes, else the message.
pub fn refusal(status: &Status) -> String {
    let causes: Vec<&str> = status
        .details
        .iter()
        .flat_map(|d| &d.causes)
        .filter(|c| c.reason == DISRUPTION_BUDGET_CAUSE || c.message.contains("disruption budget"))
        .map(|c| c.message.as_str())
        .collect();
    if causes.is_empty() {
        status.message.clone()
    } else {
        causes.join("; ")
    }
}

/// The `DrainBlocked` message for the pods whose evictions were refused (`blocked`, each
/// `namespace/name: why`) after `drain_timeout`.
pub fn blocked_message(blocked: &[String], drain_timeout: Duration) -> String {
    let mut message = format!(
        "{} pod(s) not evicted after {}s: {}",
        blocked.len(),
        drain_timeout.as_secs(),
        blocked.join("; ")
    );
    if message.len() > MESSAGE_LIMIT {
        let mut cut = MESSAGE_LIMIT - 3;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    message
}

/// When a drain that is `elapsed` old and still has pods to evict tries again: every
/// [`EVICTION_RETRY`], or sooner at the drain timeout (to report a blocked drain on time)
/// or at the pool's `terminationGracePeriodSeconds` (`force_after`, to delete what is left).
pub fn next_try(
    elapsed: Duration,
    drain_timeout: Duration,
    force_after: Option<Duration>,
) -> Duration {
    let mut next = EVICTION_RETRY;
    if let Some(left) = drain_timeout.checked_sub(elapsed).filter(|d| !d.is_zero()) {
        next = next.min(left);
    }
    if let Some(left) = force_after.and_then(|f| f.checked_sub(elapsed)) {
        next = next.min(left.max(Duration::from_millis(100)));
    }
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIResource, ObjectMeta, OwnerReference};
    use serde_json::json;

    fn owned_by(kind: &str) -> BoundPod {
        let owner = OwnerReference {
            kind: kind.into(),
            controller: Some(true),
            ..Default::default()
        };
        crate::pod::narrowed(
            ObjectMeta {
                owner_references: Some(vec![owner]),
                ..Default::default()
            },
            Default::default(),
            Default::default(),
        )
    }

    fn core_with(eviction: Option<(&str, &str)>) -> APIResourceList {
        let resource = |name: &str, gv: Option<(&str, &str)>| APIResource {
            name: name.into(),
            group: gv.map(|g| g.0.into()),
            version: gv.map(|g| g.1.into()),
            ..Default::default()
        };
        APIResourceList {
            group_version: "v1".into(),
            resources: vec![resource("pods", None), resource("pods/eviction", eviction)],
        }
    }

    #[test]
    fn the_eviction_version_is_the_one_discovery_names() {
        assert_eq!(
            eviction_version(&core_with(Some(("policy", "v1")))).as_deref(),
            Some("policy/v1")
        );
        assert_eq!(
            eviction_version(&core_with(Some(("policy", "v1beta1")))).as_deref(),
            Some("policy/v1beta1")
        );
        assert_eq!(
            eviction_version(&core_with(None)).as_deref(),
            Some("policy/v1beta1")
        );
        let no_eviction = APIResourceList {
            resources: vec![],
            ..core_with(None)
        };
        assert_eq!(eviction_version(&no_eviction), None);
    }

    #[test]
    fn a_refusal_names_the_budget_when_the_server_does() {
        // What a 1.20 API server answers when a budget allows no disruption.
        let status: Status = serde_json::from_value(json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 429,
            "reason": "TooManyRequests",
            "message": "Cannot evict pod as it would violate the pod's disruption budget.",
            "details": {"causes": [{
                "reason": "DisruptionBudget",
                "message": "The disruption budget web needs 2 healthy pods and has 2 currently"
            }]}
        }))
        .unwrap();
        assert_eq!(
            refusal(&status),
            "The disruption budget web needs 2 healthy pods and has 2 currently"
        );
        let bare = Status {
            details: None,
            ..status
        };
        assert_eq!(
            refusal(&bare),
            "Cannot evict pod as it would violate the pod's disruption budget."
        );
    }

    #[test]
    fn a_blocked_drain_reports_at_most_1024_bytes() {
        let few = blocked_message(&["ns/a: budget web".into()], Duration::from_secs(60));
        assert_eq!(few, "1 pod(s) not evicted after 60s: ns/a: budget web");
        let many: Vec<String> = (0..100).map(|i| format!("ns/pod-{i}: budget é")).collect();
        let long = blocked_message(&many, Duration::from_secs(60));
        assert!(
            long.len() <= 1024 && long.ends_with("..."),
            "{}",
            long.len()
        );
        assert!(long.starts_with("100 pod(s) not evicted after 60s: ns/pod-0"));
    }

    #[test]
    fn a_drain_tries_again_in_time_for_its_deadlines() {
        let s = Duration::from_secs;
        assert_eq!(next_try(s(0), s(60), None), EVICTION_RETRY);
        // 3 s before the drain timeout: then, to report the blocked drain.
        assert_eq!(next_try(s(57), s(60), None), s(3));
        assert_eq!(next_try(s(70), s(60), None), EVICTION_RETRY);
        // The grace period ends in 2 s: then, to delete the pods anyway.
        assert_eq!(next_try(s(70), s(60), Some(s(72))), s(2));
        assert_eq!(
            next_try(s(72), s(60), Some(s(72))),
            Duration::from_millis(100),
            "due now: at once, but not in a busy loop"
        );
    }

    fn with(annotation: Option<&str>, phase: Option<&str>) -> BoundPod {
        let mut pod = BoundPod::default();
        pod.metadata.annotations =
            annotation.map(|v| [(DO_NOT_DISRUPT_ANNOTATION.to_owned(), v.to_owned())].into());
        pod.status.phase = phase.map(Into::into);
        pod
    }

    fn node(ready: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "status": {"conditions": [{"type": "Ready", "status": ready}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_drain_waits_for_a_running_do_not_disrupt_pod_on_a_ready_node_only() {
        let (ready, down) = (node("True"), node("Unknown"));
        assert!(waits_for(&with(Some("true"), Some("Running")), &ready));
        assert!(waits_for(&with(Some("true"), None), &ready), "pending too");
        assert!(
            !waits_for(&with(Some("true"), Some("Running")), &down),
            "a node that is down is drained whatever runs there"
        );
        assert!(!waits_for(&with(Some("true"), Some("Succeeded")), &ready));
        assert!(!waits_for(&with(Some("false"), Some("Running")), &ready));
        assert!(!waits_for(&with(None, Some("Running")), &ready));
    }

    #[test]
    fn daemonset_and_mirror_pods_stay_the_rest_go() {
        assert!(stays_on_drain(&owned_by("DaemonSet")));
        assert!(!stays_on_drain(&owned_by("ReplicaSet")));
        assert!(!stays_on_drain(&BoundPod::default()));
        let mut mirror = BoundPod::default();
        mirror.metadata.annotations = Some([(MIRROR_POD.to_owned(), "x".to_owned())].into());
        assert!(stays_on_drain(&mirror));
    }
}
