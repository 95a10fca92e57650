//! How many nodes a pool gets and which go first: the sizing rules of the NodePool
//! controller.
use k8s_openapi::api::core::v1::Node;
use kube_core::ResourceExt;
use shared_crd::nodepool::removal_order;

use crate::nodes::is_ready;

/// How many nodes to create: the shortfall, limited by the provider quota.
/// `total_nodes` counts every pool's nodes (the quota is per provider).
pub fn nodes_to_add(
    desired: i32,
    current: usize,
    total_nodes: usize,
    max_nodes: Option<u32>,
) -> Growth {
    let shortfall = (desired.max(0) as usize).saturating_sub(current);
    let room = max_nodes.map_or(usize::MAX, |max| (max as usize).saturating_sub(total_nodes));
    Growth {
        add: shortfall.min(room),
        at_quota: shortfall > room,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Growth {
    pub add: usize,
    /// The quota held back part of the shortfall.
    pub at_quota: bool,
}

/// The `count` nodes to remove, in [`removal_order`] (shared with the autoscaler, which
/// checks that their pods fit on the nodes that stay before it shrinks a pool).
pub fn nodes_to_remove<'a>(
    nodes: &[&'a Node],
    count: usize,
    pods_on: impl Fn(&Node) -> usize,
) -> Vec<&'a Node> {
    let mut ranked: Vec<&Node> = nodes.to_vec();
    ranked.sort_by_cached_key(|n| {
        let created = n.creation_timestamp().map(|t| t.0.as_second()).unwrap_or(0);
        removal_order(is_ready(n), pods_on(n), created, &n.name_any())
    });
    ranked.truncate(count);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::tests::node;

    #[test]
    fn growth_fills_the_shortfall_within_the_quota() {
        assert_eq!(
            nodes_to_add(3, 0, 0, None),
            Growth {
                add: 3,
                at_quota: false
            }
        );
        assert_eq!(
            nodes_to_add(3, 3, 3, None),
            Growth {
                add: 0,
                at_quota: false
            }
        );
        assert_eq!(
            nodes_to_add(1, 3, 3, None),
            Growth {
                add: 0,
                at_quota: false
            }
        );
        // Quota of 4 with 3 nodes elsewhere: room for one more.
        assert_eq!(
            nodes_to_add(3, 0, 3, Some(4)),
            Growth {
                add: 1,
                at_quota: true
            }
        );
        assert_eq!(
            nodes_to_add(3, 1, 4, Some(4)),
            Growth {
                add: 0,
                at_quota: true
            }
        );
        assert_eq!(
            nodes_to_add(2, 1, 1, Some(2)),
            Growth {
                add: 1,
                at_quota: false
            }
        );
    }

    #[test]
    fn removal_prefers_not_ready_then_empty_then_newest() {
        let (old, new, sick) = (
            node("old", 10, true),
            node("new", 20, true),
            node("sick", 5, false),
        );
        let names = |v: Vec<&Node>| v.iter().map(|n| n.name_any()).collect::<Vec<_>>();
        assert_eq!(
            names(nodes_to_remove(&[&old, &new, &sick], 1, |_| 0)),
            ["sick"]
        );
        assert_eq!(
            names(nodes_to_remove(&[&old, &new, &sick], 2, |_| 0)),
            ["sick", "new"]
        );
        let busy_new = |n: &Node| if n.name_any() == "new" { 3 } else { 0 };
        assert_eq!(names(nodes_to_remove(&[&old, &new], 1, busy_new)), ["old"]);
        assert!(nodes_to_remove(&[], 1, |_| 0).is_empty());
        assert!(nodes_to_remove(&[&old], 0, |_| 0).is_empty());
    }
}
