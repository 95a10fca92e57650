//! Names: of a pool's new nodes, stable across releases, so that a create from a cache
//! that lags is an AlreadyExists, not a second node; and the one stable hash they and the
//! virtual kubelet (pod IPs, Lease spreading) are built on.
use std::collections::HashSet;

use kube_core::ResourceExt;
use shared_crd::NodePool;

/// Node names for new nodes: `<pool>-<5 chars>`, derived from the pool's uid and a slot
/// number with a stable hash (FNV-1a), so that creating a node twice is an
/// AlreadyExists, not a second node, in this release and the next. `taken` holds every
/// name in use, terminating nodes included.
pub fn free_node_names(pool: &NodePool, taken: &HashSet<String>, count: usize) -> Vec<String> {
    let uid = pool.metadata.uid.clone().unwrap_or_default();
    (0u32..)
        .map(|slot| format!("{}-{}", pool.name_any(), short_id(&uid, slot)))
        .filter(|n| !taken.contains(n))
        .take(count)
        .collect()
}

fn short_id(uid: &str, slot: u32) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut h = fnv1a(uid.as_bytes().iter().chain(&slot.to_le_bytes()));
    (0..5)
        .map(|_| {
            let c = ALPHABET[(h % 36) as usize] as char;
            h /= 36;
            c
        })
        .collect()
}

/// FNV-1a, 64 bits: a hash whose values never change between builds.
pub fn fnv1a<'a>(bytes: impl IntoIterator<Item = &'a u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn node_names_are_stable_per_slot_and_skip_taken_ones() {
        let pool = pool();
        let none = Default::default();
        let first = free_node_names(&pool, &none, 3);
        assert_eq!(first.len(), 3);
        assert!(first.iter().all(|n| n.starts_with("web-") && n.len() == 9));
        // The same in every build: a fixed hash, not std's DefaultHasher.
        assert_eq!(first[0], format!("web-{}", short_id("uid-1", 0)));
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c, "FNV-1a test vector");
        let taken = [first[0].clone()].into_iter().collect();
        assert_eq!(free_node_names(&pool, &taken, 2), first[1..3]);
    }
}
