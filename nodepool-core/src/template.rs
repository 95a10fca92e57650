//! The template a node was made from, as a hash on the node (`nodepool.dev/template-hash`),
//! in the manner of a ReplicaSet's `pod-template-hash`: a node whose hash is not the
//! pool's current one is Drifted.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Taint};
use kube_core::ResourceExt;
use serde::Serialize;
use shared_crd::{NodeCapacity, NodeTemplate, TEMPLATE_HASH_ANNOTATION};

use crate::naming::fnv1a;

/// What of a template shapes a node. `expireAfter` and `terminationGracePeriodSeconds`
/// say how a node is treated, not what it is: changing them drifts no node.
#[derive(Serialize)]
struct Shape<'a> {
    labels: &'a BTreeMap<String, String>,
    taints: &'a [Taint],
    capacity: &'a NodeCapacity,
}

/// The hash of what `template` makes a node carry: 10 characters of `[0-9a-z]`, the same
/// in every build (FNV-1a over the JSON of the shape, whose maps are sorted).
pub fn template_hash(template: &NodeTemplate) -> String {
    let shape = Shape {
        labels: &template.labels,
        taints: &template.taints,
        capacity: &template.capacity,
    };
    let json = serde_json::to_vec(&shape).expect("a template serialises");
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut h = fnv1a(&json);
    (0..10)
        .map(|_| {
            let c = ALPHABET[(h % 36) as usize] as char;
            h /= 36;
            c
        })
        .collect()
}

/// The template hash a node carries, if any.
pub fn hash_of(node: &Node) -> Option<&str> {
    node.annotations()
        .get(TEMPLATE_HASH_ANNOTATION)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    /// The default template's hash in this release and every later one.
    const PINNED: &str = "8xgnxpqmjl";

    #[test]
    fn the_hash_follows_what_shapes_a_node_and_nothing_else() {
        let base = NodeTemplate::default();
        let h = template_hash(&base);
        assert_eq!(h.len(), 10);
        assert_eq!(h, PINNED, "a new hash would drift every node of every pool");
        assert_eq!(h, template_hash(&base.clone()), "deterministic");
        let relabelled = NodeTemplate {
            labels: [("tier".to_owned(), "web".to_owned())].into(),
            ..base.clone()
        };
        let bigger = NodeTemplate {
            capacity: NodeCapacity {
                cpu: Quantity("4".into()),
                ..NodeCapacity::default()
            },
            ..base.clone()
        };
        let tainted = NodeTemplate {
            taints: vec![Taint {
                key: "gpu".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }],
            ..base.clone()
        };
        for changed in [&relabelled, &bigger, &tainted] {
            assert_ne!(template_hash(changed), h);
        }
        let behaviour_only = NodeTemplate {
            expire_after: Some("720h".into()),
            termination_grace_period_seconds: Some(60),
            ..base
        };
        assert_eq!(template_hash(&behaviour_only), h);
    }
}
