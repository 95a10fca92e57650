//! What a fresh control plane gets before a test uses it: the CRDs, and each operator
//! identity bound to the ClusterRole its chart grants.
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, PostParams};

use super::Identity;

/// Gives each operator identity the ClusterRole its Helm chart grants (rendered with
/// `helm template`), so tests run the operators with exactly those permissions.
pub async fn grant_chart_roles(client: &Client, assets: &Path) -> Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
    use serde::Deserialize;

    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let params = kube::api::PatchParams::apply("nodepool-e2e").force();
    for identity in [Identity::NodepoolOperator, Identity::AutoscalerOperator] {
        let chart = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../charts")
            .join(identity.name());
        let out = Command::new(assets.join("helm"))
            .args(["template", "e2e"])
            .arg(&chart)
            .output()?;
        if !out.status.success() {
            bail!(
                "helm template {}: {}",
                chart.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8(out.stdout)?;
        let mut role = None;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc)?;
            if value["kind"] == "ClusterRole" {
                role = Some(serde_json::from_value::<ClusterRole>(value)?);
            }
        }
        let mut role =
            role.with_context(|| format!("no ClusterRole in chart {}", chart.display()))?;
        let name = format!("e2e-{}", identity.name());
        role.metadata = kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        };
        roles
            .patch(&name, &params, &kube::api::Patch::Apply(&role))
            .await?;
        let binding = ClusterRoleBinding {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: name.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "User".into(),
                name: identity.name().into(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                namespace: None,
            }]),
        };
        bindings
            .patch(&name, &params, &kube::api::Patch::Apply(&binding))
            .await?;
    }
    Ok(())
}

/// Installs (creates or replaces) both CRDs and waits until they are Established.
///
/// Not server-side apply: servers before 1.25 reject an applied CRD that carries the
/// CEL rule (`x-kubernetes-validations` is not in their typed schema), while a plain
/// create or update drops the unknown field, so the same YAML installs everywhere.
pub async fn install_crds(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in shared_crd::crd::all() {
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                let mut updated = crd.clone();
                updated.metadata.resource_version =
                    crds.get(&name).await?.metadata.resource_version;
                crds.replace(&name, &PostParams::default(), &updated)
                    .await
                    .with_context(|| format!("updating CRD {name}"))?;
            }
            Err(e) => return Err(e).with_context(|| format!("installing CRD {name}")),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for crd in shared_crd::crd::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        loop {
            let current = crds.get(&name).await?;
            let established = current
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                bail!("CRD {name} not Established after 30s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
