//! The Node as the autoscaler reads it: the nodes of the pools (`nodepool.dev/pool`
//! label) narrowed to what placement depends on, their labels, taints and readiness. As
//! with [`crate::pod::PodView`], the watch deserialises into the view, so nothing else is
//! cached, and a view is never written back.

use k8s_openapi::api::core::v1::Taint;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use shared_crd::POOL_LABEL;

/// A Node, narrowed to its labels, taints and Ready condition. Read-only.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct NodeView {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: NodeViewSpec,
    #[serde(default)]
    pub status: NodeViewStatus,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct NodeViewSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct NodeViewStatus {
    /// Only `Ready` is kept (see [`trim`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<crate::pod::PodConditionView>,
}

impl NodeView {
    pub fn is_ready(&self) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    }

    /// The pool the node belongs to, by its label.
    pub fn pool(&self) -> Option<&str> {
        self.metadata
            .labels
            .as_ref()?
            .get(POOL_LABEL)
            .map(String::as_str)
    }
}

shared_crd::core_v1_view!(NodeView, "Node", "nodes", k8s_openapi::ClusterResourceScope);

/// Keeps name, labels, creation and deletion times, taints and the Ready condition.
pub fn trim(node: &mut NodeView) {
    node.status.conditions.retain(|c| c.type_ == "Ready");
    let meta = &mut node.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;
    use kube_core::Resource;
    use serde_json::json;

    #[test]
    fn a_full_node_reads_into_the_view_with_labels_taints_and_readiness() {
        let mut view: NodeView = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "general-abc", "labels": {"nodepool.dev/pool": "general", "tier": "web"},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
                "finalizers": ["nodepool.dev/termination"],
                "creationTimestamp": "2026-11-24T12:00:00Z"},
            "spec": {"providerID": "virtual://general-abc",
                "taints": [{"key": "nodepool.dev/virtual", "value": "true", "effect": "NoSchedule"}]},
            "status": {"capacity": {"cpu": "2"}, "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "lastHeartbeatTime": "2026-11-24T12:00:00Z"}]}
        }))
        .unwrap();
        trim(&mut view);
        assert_eq!(view.pool(), Some("general"));
        assert!(view.is_ready());
        assert_eq!(view.spec.taints.len(), 1);
        assert_eq!(view.status.conditions.len(), 1);
        assert_eq!(view.metadata.finalizers, None);
        assert!(view.metadata.creation_timestamp.is_some());
        assert_eq!(
            NodeView::url_path(&(), None),
            Node::url_path(&(), None),
            "the same resource as a Node"
        );
    }
}
