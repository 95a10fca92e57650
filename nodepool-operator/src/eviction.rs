//! Evictions through the Eviction API, so PodDisruptionBudgets are honoured and a refusal
//! says which one (the rules: `nodepool_core::drain`).
use k8s_openapi::api::policy::v1::Eviction as EvictionBody;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Client, ResourceExt};
use nodepool_core::drain::{eviction_version, refusal};
use nodepool_core::pod::BoundPod;
use operator_kit::NotFoundIsDone;
use tokio::sync::OnceCell;

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
    pub async fn evict(&self, pod: &BoundPod) -> Result<Eviction, kube::Error> {
        let namespace = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let eviction = EvictionBody {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        // The same body in every version the server may serve; only its apiVersion differs.
        let mut body = serde_json::to_value(&eviction).map_err(kube::Error::SerdeError)?;
        body["apiVersion"] = self.api_version().await?.into();
        let request = http::Request::post(format!(
            "/api/v1/namespaces/{namespace}/pods/{name}/eviction"
        ))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).map_err(kube::Error::SerdeError)?)
        .map_err(|e| kube::Error::BuildRequest(kube::core::request::Error::BuildRequest(e)))?;
        match self.client.request::<serde_json::Value>(request).await {
            Err(kube::Error::Api(s)) if s.code == 429 => Ok(Eviction::Blocked(refusal(&s))),
            // Gone already, or on its way out.
            sent => sent.ok_if_not_found().map(|_| Eviction::Started),
        }
    }
}
