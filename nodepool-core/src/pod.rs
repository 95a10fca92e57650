//! The Pod as nodepool-operator reads it.
//!
//! nodepool-operator caches every pod bound to a node, and reads of each only what a
//! drain, the disruption plan and the kubelet's part of a virtual node need: its name,
//! namespace, uid and resourceVersion; whether a DaemonSet owns it (such a pod stays on
//! a drain); its deletion; two annotations (mirror pod, `do-not-disrupt`); its node; its
//! containers' names and images (the kubelet reports them running); its phase.
//! `BoundPod` is a Pod narrowed to those fields (see [`shared_crd::view`]): at 10,000
//! pods, the trimmed k8s-openapi `Pod` it replaces was about 4.4 KB a pod (docs/scale.md).
//!
//! It is still a watch of `pods`; it is never written back (the kubelet's part writes a
//! status patch, a drain an Eviction, addressed by name).
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Deserialize;
use shared_crd::DO_NOT_DISRUPT_ANNOTATION;

/// Annotation the kubelet puts on a mirror pod (a static pod's API copy).
pub const MIRROR_POD: &str = "kubernetes.io/config.mirror";

/// A bound Pod, narrowed to what a drain and a kubelet read, as it is read (see
/// [`narrowed`]). Read-only.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(from = "WirePod")]
pub struct BoundPod {
    pub metadata: ObjectMeta,
    pub spec: BoundPodSpec,
    pub status: BoundPodStatus,
    /// A DaemonSet controls the pod (read off its owners, which are not kept).
    pub daemon_set: bool,
}

/// The fields of a Pod that [`BoundPod`] is made from, as the API server sends them.
#[derive(Deserialize)]
struct WirePod {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: BoundPodSpec,
    #[serde(default)]
    status: BoundPodStatus,
}

impl From<WirePod> for BoundPod {
    fn from(wire: WirePod) -> Self {
        narrowed(wire.metadata, wire.spec, wire.status)
    }
}

/// A [`BoundPod`] of these parts. Of the metadata, it keeps what a drain and the
/// disruption plan read: name, namespace, uid, resourceVersion, creation and deletion, and
/// two annotations ([`MIRROR_POD`], `do-not-disrupt`). The owners become
/// [`BoundPod::daemon_set`]; managed fields, labels, finalizers and the rest go.
pub(crate) fn narrowed(
    mut metadata: ObjectMeta,
    spec: BoundPodSpec,
    status: BoundPodStatus,
) -> BoundPod {
    let daemon_set = metadata
        .owner_references
        .take()
        .unwrap_or_default()
        .iter()
        .any(|r| r.kind == "DaemonSet" && r.controller == Some(true));
    metadata.managed_fields = None;
    metadata.labels = None;
    metadata.finalizers = None;
    metadata.generate_name = None;
    if let Some(annotations) = metadata.annotations.as_mut() {
        annotations.retain(|k, _| k == MIRROR_POD || k == DO_NOT_DISRUPT_ANNOTATION);
        if annotations.is_empty() {
            metadata.annotations = None;
        }
    }
    BoundPod {
        metadata,
        spec,
        status,
        daemon_set,
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BoundPodSpec {
    /// The node the scheduler bound the pod to.
    #[serde(default)]
    pub node_name: Option<String>,
    #[serde(default)]
    pub containers: Vec<ContainerImage>,
}

/// A container's name and image; nothing else of it is read.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct ContainerImage {
    pub name: String,
    #[serde(default)]
    pub image: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct BoundPodStatus {
    #[serde(default)]
    pub phase: Option<String>,
}

shared_crd::core_v1_view!(BoundPod, "Pod", "pods", k8s_openapi::NamespaceResourceScope);

impl BoundPod {
    /// The node the pod is bound to.
    pub fn node(&self) -> Option<&str> {
        self.spec.node_name.as_deref()
    }

    /// The pod's phase, if the kubelet has reported one.
    pub fn phase(&self) -> Option<&str> {
        self.status.phase.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube_core::Resource;
    use serde_json::json;

    #[test]
    fn a_full_pod_reads_into_the_view_with_only_what_a_drain_and_a_kubelet_read() {
        let view: BoundPod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1",
                "resourceVersion": "7",
                "generateName": "web-", "labels": {"app": "web"},
                "annotations": {"nodepool.dev/do-not-disrupt": "true", "other": "x"},
                "managedFields": [{"manager": "kubectl", "operation": "Update"}],
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet",
                    "name": "agent", "uid": "ds", "controller": true}],
                "deletionTimestamp": "2026-11-24T12:00:00Z"},
            "spec": {
                "nodeName": "general-abc",
                "containers": [
                    {"name": "app", "image": "web:1", "env": [{"name": "A", "value": "1"}],
                     "resources": {"requests": {"cpu": "500m"}}},
                    {"name": "sidecar"}],
                "volumes": [{"name": "data", "emptyDir": {}}]
            },
            "status": {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "True"}]}
        }))
        .unwrap();
        assert_eq!(view.metadata.name.as_deref(), Some("web-1"));
        assert_eq!(view.metadata.labels, None);
        assert_eq!(view.metadata.managed_fields, None);
        assert_eq!(view.metadata.generate_name, None);
        assert_eq!(
            view.metadata.annotations,
            Some([(DO_NOT_DISRUPT_ANNOTATION.to_owned(), "true".to_owned())].into())
        );
        assert_eq!(view.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(view.metadata.resource_version.as_deref(), Some("7"));
        assert!(view.metadata.deletion_timestamp.is_some());
        assert!(view.daemon_set, "read off the owners");
        assert_eq!(view.metadata.owner_references, None, "which are not kept");
        assert_eq!(view.node(), Some("general-abc"));
        assert_eq!(view.phase(), Some("Pending"));
        assert_eq!(
            view.spec.containers,
            [
                ContainerImage {
                    name: "app".into(),
                    image: Some("web:1".into())
                },
                ContainerImage {
                    name: "sidecar".into(),
                    image: None
                }
            ]
        );
        assert_eq!(
            BoundPod::url_path(&(), Some("shop")),
            Pod::url_path(&(), Some("shop")),
            "the same resource as a Pod"
        );
    }

    #[test]
    fn the_view_is_a_fraction_of_the_pod_it_replaces() {
        // What each cached pod holds inline, before its strings: the view against a
        // k8s-openapi Pod with one Container (the cache this view replaced).
        let view = std::mem::size_of::<BoundPod>() + std::mem::size_of::<ContainerImage>();
        let pod = std::mem::size_of::<Pod>()
            + std::mem::size_of::<k8s_openapi::api::core::v1::Container>();
        assert!(view * 4 < pod, "view {view} B, pod {pod} B");
    }
}
