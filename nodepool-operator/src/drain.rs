//! Taking pods off a node: which pods a drain moves (not DaemonSet or mirror pods, as
//! `kubectl drain --ignore-daemonsets`), eviction through the Eviction API (so
//! PodDisruptionBudgets are honoured, and a refusal says which one), and finishing a pod
//! the way a kubelet does.
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::APIResourceList;
use kube::api::{Api, DeleteParams};
use kube::{Client, ResourceExt};
use operator_kit::NotFoundIsDone;
use serde_json::json;
use tokio::sync::OnceCell;

/// The cause the API server gives when a PodDisruptionBudget refuses an eviction.
const DISRUPTION_BUDGET_CAUSE: &str = "DisruptionBudget";

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

/// What the API server made of one eviction.
#[derive(Clone, Debug, PartialEq)]
pub enum Eviction {
    /// The pod is on its way out (or was already gone).
    Started,
    /// Refused with 429: a PodDisruptionBudget allows no disruption now. The text is the
    /// server's cause, which names the budget (`The disruption budget web needs 2 healthy
    /// pods and has 2 currently`), or its message when it gave no cause.
    Blocked(String),
}

/// Evicts pods through the Eviction API version the server serves for `pods/eviction`,
/// found by discovery on first use (policy/v1 from 1.22, policy/v1beta1 before), as
/// `kubectl drain` does.
pub struct Evictor {
    client: Client,
    api_version: OnceCell<String>,
}

impl Evictor {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            api_version: OnceCell::new(),
        }
    }

    /// The `apiVersion` of `pods/eviction` in the core group's discovery document.
    async fn api_version(&self) -> Result<&str, kube::Error> {
        let version = self
            .api_version
            .get_or_try_init(|| async {
                let core = self.client.list_core_api_resources("v1").await?;
                let version = eviction_version(&core).ok_or_else(|| {
                    kube::Error::Discovery(kube::error::DiscoveryError::MissingResource(
                        "pods/eviction".into(),
                    ))
                })?;
                tracing::info!(%version, "evicting pods with {version} Eviction");
                Ok::<_, kube::Error>(version)
            })
            .await?;
        Ok(version)
    }

    /// Evicts `pod`.
    pub async fn evict(&self, pod: &Pod) -> Result<Eviction, kube::Error> {
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let body = json!({
            "apiVersion": self.api_version().await?,
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
        });
        let request = http::Request::post(format!(
            "/api/v1/namespaces/{namespace}/pods/{name}/eviction"
        ))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).map_err(kube::Error::SerdeError)?)
        .map_err(|e| kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e)))?;
        match self.client.request::<serde_json::Value>(request).await {
            Err(kube::Error::Api(s)) if s.code == 429 => Ok(Eviction::Blocked(blocker(&s))),
            // Gone already, or on its way out.
            sent => sent.ok_if_not_found().map(|_| Eviction::Started),
        }
    }
}

/// `group/version` of the `pods/eviction` subresource in the core `v1` resource list.
fn eviction_version(core: &APIResourceList) -> Option<String> {
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
fn blocker(status: &kube::core::Status) -> String {
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

/// Removes `pod` at once (grace period 0): what the kubelet does once a pod's containers
/// have stopped. A virtual node has no containers to stop.
pub async fn finish(client: &Client, pod: &Pod) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    api.delete(&pod.name_any(), &DeleteParams::default().grace_period(0))
        .await
        .ok_if_not_found()
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{APIResource, OwnerReference};

    fn owned_by(kind: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.owner_references = Some(vec![OwnerReference {
            kind: kind.into(),
            controller: Some(true),
            ..Default::default()
        }]);
        pod
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
        let status: kube::core::Status = serde_json::from_value(json!({
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
            blocker(&status),
            "The disruption budget web needs 2 healthy pods and has 2 currently"
        );
        let bare = kube::core::Status {
            details: None,
            ..status
        };
        assert_eq!(
            blocker(&bare),
            "Cannot evict pod as it would violate the pod's disruption budget."
        );
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
