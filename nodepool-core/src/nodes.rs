//! What this operator reads off a Node: its readiness, and whether it is one of a
//! pool's (a controller reference to a NodePool, not just the pool label).
use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube_core::{Resource, ResourceExt};
use shared_crd::{NodePool, POOL_LABEL};

/// A node's `Ready` condition.
pub fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// Whether a node reports `Ready=True`.
pub fn is_ready(node: &Node) -> bool {
    ready_condition(node).is_some_and(|c| c.status == "True")
}

/// The pool a node of this operator belongs to: it carries the pool label and a
/// controller reference to a NodePool. Nodes that only carry the label were made by
/// someone else: they are never adopted, counted or deleted.
pub fn pool_of(node: &Node) -> Option<&str> {
    pool_owner(node)?;
    node.labels().get(POOL_LABEL).map(String::as_str)
}

/// The node's controller reference to a NodePool, if it has one.
pub fn pool_owner(node: &Node) -> Option<&OwnerReference> {
    node.owner_references()
        .iter()
        .find(|r| r.kind == NodePool::kind(&()) && r.controller == Some(true))
}

/// Whether `node` is owned by `pool` (this uid).
pub fn is_owned_by(node: &Node, pool: &NodePool) -> bool {
    node.owner_references()
        .iter()
        .any(|r| r.kind == NodePool::kind(&()) && Some(&r.uid) == pool.metadata.uid.as_ref())
}

/// Whether the pool whose metadata is `pool` no longer owns what `owner` points at: it
/// was made anew under the same name (another uid), or it is being deleted.
pub fn replaced_or_deleted(pool: &ObjectMeta, owner: &OwnerReference) -> bool {
    pool.uid.as_deref() != Some(owner.uid.as_str()) || pool.deletion_timestamp.is_some()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use shared_crd::{NodePoolSpec, NodeTemplate};

    pub(crate) fn node(name: &str, created: i64, ready: bool) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some(name.into());
        n.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).unwrap()));
        n.status = Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        n
    }

    pub(crate) fn pool(replicas: i32) -> NodePool {
        let mut p = NodePool::new(
            "p",
            NodePoolSpec {
                replicas,
                template: NodeTemplate::default(),
                disruption: None,
            },
        );
        p.metadata.generation = Some(7);
        p
    }

    pub(crate) fn now() -> Time {
        Time(Timestamp::from_second(1_000).unwrap())
    }

    fn owned(node: &mut Node, pool: &NodePool, controller: bool) {
        node.metadata.labels = Some([(POOL_LABEL.to_owned(), pool.name_any())].into());
        node.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "nodepool.dev/v1alpha1".into(),
            kind: "NodePool".into(),
            name: pool.name_any(),
            uid: pool.metadata.uid.clone().unwrap_or_default(),
            controller: Some(controller),
            ..Default::default()
        }]);
    }

    #[test]
    fn a_node_is_a_pools_by_its_controller_reference_not_its_label() {
        let mut p = pool(1);
        p.metadata.uid = Some("u1".into());
        let mut n = node("n", 1, true);
        assert_eq!(pool_of(&n), None);
        owned(&mut n, &p, true);
        assert_eq!(pool_of(&n), Some("p"));
        assert!(is_owned_by(&n, &p));
        owned(&mut n, &p, false);
        assert_eq!(
            pool_of(&n),
            None,
            "an owner reference that is no controller"
        );
        assert!(is_ready(&n));
        assert!(!is_ready(&node("m", 1, false)));
    }

    #[test]
    fn a_pool_made_anew_or_being_deleted_owns_its_nodes_no_more() {
        let owner = OwnerReference {
            uid: "u1".into(),
            ..Default::default()
        };
        let mut meta = ObjectMeta {
            uid: Some("u1".into()),
            ..Default::default()
        };
        assert!(!replaced_or_deleted(&meta, &owner));
        meta.uid = Some("u2".into());
        assert!(replaced_or_deleted(&meta, &owner));
        meta.uid = Some("u1".into());
        meta.deletion_timestamp = Some(Time(Timestamp::from_second(1).unwrap()));
        assert!(replaced_or_deleted(&meta, &owner));
    }
}
