//! Nodes this process deleted that the cache still shows alive: the deletion expectations
//! of the ReplicaSet controller, the other half of [`crate::quota::Reservations`].
//!
//! A DELETE comes back through the watch a moment later, as a deletion timestamp (the
//! node has the drain finalizer) or as the node gone. A pool's reconcile that runs in
//! between, triggered by the first of its nodes' updates, would find the others still
//! alive: it would delete them again (`make bench-envelope` saw 1,254 node DELETEs for
//! 1,249 nodes), and with a plan that chose another victim it would take one node too
//! many. So the names deleted are remembered per pool until the cache shows them deleting
//! or gone, or for at most [`DELETION_TTL`], and a reconcile counts them as terminating.
//!
//! Nothing here outlives the process, and nothing needs to: after a restart the caches
//! sync before any reconcile, and then show every deletion the server has.
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Longest a deleted node counts as terminating without the cache showing it so.
pub const DELETION_TTL: Duration = Duration::from_secs(60);

/// Names of nodes deleted, with their pool and when.
#[derive(Debug, Default)]
pub struct Deletions {
    names: HashMap<String, (String, Instant)>,
}

impl Deletions {
    /// Remembers that `names` of `pool` were deleted at `now`.
    pub fn add<'a>(&mut self, pool: &str, names: impl IntoIterator<Item = &'a str>, now: Instant) {
        for name in names {
            self.names.insert(name.to_owned(), (pool.to_owned(), now));
        }
    }

    /// The names of `pool` still on their way to the cache: it forgets the ones
    /// `alive_in_cache` no longer holds (the cache shows them deleting, or gone) and the
    /// expired ones, and returns the rest.
    pub fn pending(
        &mut self,
        pool: &str,
        now: Instant,
        alive_in_cache: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        self.names.retain(|name, (p, at)| {
            p != pool || (now.duration_since(*at) < DELETION_TTL && alive_in_cache(name))
        });
        self.names
            .iter()
            .filter(|(_, (p, _))| p == pool)
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// How many names are remembered, over all pools.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deletion_counts_until_the_cache_shows_it() {
        let t0 = Instant::now();
        let mut d = Deletions::default();
        d.add("p", ["a", "b"], t0);
        let mut pending = d.pending("p", t0, |_| true);
        pending.sort();
        assert_eq!(pending, ["a", "b"]);
        // The cache shows a deleting (or gone): it counts there now, not here.
        assert_eq!(d.pending("p", t0, |n| n != "a"), ["b"]);
        assert_eq!(d.pending("p", t0, |_| true), ["b"], "a does not come back");
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn a_deletion_the_cache_never_shows_expires() {
        let t0 = Instant::now();
        let mut d = Deletions::default();
        d.add("p", ["a"], t0);
        assert_eq!(d.pending("p", t0 + DELETION_TTL / 2, |_| true), ["a"]);
        assert!(d.pending("p", t0 + DELETION_TTL, |_| true).is_empty());
        assert!(d.is_empty());
    }

    #[test]
    fn each_pool_settles_its_own_names() {
        let t0 = Instant::now();
        let mut d = Deletions::default();
        d.add("a", ["a-1"], t0);
        d.add("a-b", ["a-b-1"], t0);
        // Pool a's cache shows nothing of a-b-1: that is not a's to settle.
        assert_eq!(d.pending("a", t0, |_| false), Vec::<String>::new());
        assert_eq!(d.pending("a-b", t0, |_| true), ["a-b-1"]);
        assert_eq!(d.len(), 1);
    }
}
