//! The Node objects of the virtual provider: what a pool's template describes, registered
//! as kwok registers its nodes, and the Ready condition their kubelet (this operator)
//! reports.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Resource;
use nodepool_core::nodes::pool_of;
use nodepool_core::template::template_hash;
use shared_crd::{NodePool, TEMPLATE_HASH_ANNOTATION, TERMINATION_FINALIZER};

/// `spec.providerID` prefix of the virtual provider's nodes.
pub const VIRTUAL_PROVIDER_ID: &str = "virtual://";

/// The Node a pool's template describes, carrying the termination finalizer, an owner
/// reference to the pool and the template's hash. Ready at once when `ready`.
pub fn node_for(pool: &NodePool, node_name: &str, taint_nodes: bool, ready: bool) -> Node {
    let template = &pool.spec.template;
    let mut labels = pool.node_labels();
    labels.insert("kubernetes.io/hostname".into(), node_name.into());
    let taints = pool.node_taints(taint_nodes);
    let resources = BTreeMap::from([
        ("cpu".to_owned(), template.capacity.cpu.clone()),
        ("memory".to_owned(), template.capacity.memory.clone()),
        ("pods".to_owned(), template.capacity.pods.clone()),
    ]);
    Node {
        metadata: ObjectMeta {
            name: Some(node_name.into()),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([
                ("node.alpha.kubernetes.io/ttl".to_owned(), "0".to_owned()),
                (TEMPLATE_HASH_ANNOTATION.to_owned(), template_hash(template)),
            ])),
            owner_references: pool.controller_owner_ref(&()).map(|r| vec![r]),
            finalizers: Some(vec![TERMINATION_FINALIZER.to_owned()]),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!taints.is_empty()).then_some(taints),
            provider_id: Some(format!("{VIRTUAL_PROVIDER_ID}{node_name}")),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            conditions: Some(vec![ready_condition(ready, shared_crd::time::now(), None)]),
            ..Default::default()
        }),
    }
}

/// The Ready condition a virtual node reports, heartbeat `at`; the transition time is
/// kept from `previous` when the status did not change.
pub fn ready_condition(ready: bool, at: Time, previous: Option<&NodeCondition>) -> NodeCondition {
    let status = if ready { "True" } else { "False" };
    let last_transition_time = previous
        .filter(|p| p.status == status)
        .and_then(|p| p.last_transition_time.clone())
        .or_else(|| Some(at.clone()));
    NodeCondition {
        type_: "Ready".into(),
        status: status.into(),
        reason: Some(
            if ready {
                "VirtualNodeReady"
            } else {
                "Provisioning"
            }
            .into(),
        ),
        message: Some(
            if ready {
                "virtual node is ready"
            } else {
                "virtual node is starting"
            }
            .into(),
        ),
        last_heartbeat_time: Some(at),
        last_transition_time,
    }
}

/// Whether `node` is a virtual node of this operator (the kubelet's part is ours).
pub fn is_virtual(node: &Node) -> bool {
    pool_of(node).is_some()
        && node
            .spec
            .as_ref()
            .and_then(|s| s.provider_id.as_deref())
            .is_some_and(|id| id.starts_with(VIRTUAL_PROVIDER_ID))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::ResourceExt;
    use nodepool_core::nodes::{is_owned_by, is_ready};
    use shared_crd::{NodePoolSpec, NodeTemplate};

    fn pool() -> NodePool {
        let mut pool = NodePool::new(
            "web",
            NodePoolSpec {
                replicas: 3,
                template: NodeTemplate::default(),
                disruption: None,
            },
        );
        pool.metadata.uid = Some("uid-1".into());
        pool
    }

    #[test]
    fn a_node_carries_the_finalizer_owner_and_pool_label() {
        let pool = pool();
        let node = node_for(&pool, "web-abcde", true, false);
        assert_eq!(node.finalizers(), [TERMINATION_FINALIZER]);
        assert_eq!(pool_of(&node), Some("web"));
        assert!(is_virtual(&node));
        assert!(is_owned_by(&node, &pool));
        assert_eq!(
            nodepool_core::template::hash_of(&node),
            Some(template_hash(&pool.spec.template).as_str())
        );
        let ready = node_for(&pool, "web-abcde", true, true);
        assert!(is_ready(&ready));
        assert!(!is_ready(&node));
    }

    #[test]
    fn a_labelled_node_without_our_owner_reference_is_foreign() {
        let mut node = node_for(&pool(), "x", true, true);
        node.metadata.owner_references = None;
        assert_eq!(pool_of(&node), None);
        assert!(!is_virtual(&node));
    }

    #[test]
    fn the_ready_transition_time_moves_only_when_the_status_flips() {
        let t = |s| Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap());
        let first = ready_condition(true, t(10), None);
        let later = ready_condition(true, t(20), Some(&first));
        assert_eq!(later.last_transition_time, Some(t(10)));
        assert_eq!(later.last_heartbeat_time, Some(t(20)));
        let flipped = ready_condition(false, t(30), Some(&later));
        assert_eq!(flipped.last_transition_time, Some(t(30)));
    }
}
