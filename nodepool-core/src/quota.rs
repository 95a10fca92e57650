//! Nodes being created that the cache does not show yet, reserved atomically: the
//! creation expectations of the ReplicaSet controller, and the `--max-nodes` quota.
//!
//! A reconcile sees a node in the cache only once its create has come back through the
//! watch. Counting the cache alone:
//! - a pool's next reconcile, triggered before the watch delivered all of its last
//!   creates, would create them again (`make bench-envelope` saw 1,269 creates for a pool
//!   that needed 1,249, and the surplus removed again);
//! - reconciles of different pools running at once (`--concurrency`) would both find
//!   room for the last slot of the quota and both fill it.
//!
//! So a reconcile decides how many nodes to add, and reserves their names for its pool,
//! under one lock; a pool counts its cached nodes plus its names reserved and not yet
//! cached, and the quota counts every pool's. A name leaves the reservations when the
//! cache shows it, when its create failed, or after [`RESERVATION_TTL`] (a create that
//! succeeded and was deleted before the cache saw it).
//!
//! Nothing here outlives the process, and nothing needs to: after a restart the caches
//! sync before any reconcile, and then show every node that exists.
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Longest a reservation counts without the cache showing its node.
pub const RESERVATION_TTL: Duration = Duration::from_secs(60);

/// Names of nodes being created, with their pool and when they were reserved.
#[derive(Debug, Default)]
pub struct Reservations {
    names: HashMap<String, (String, Instant)>,
}

impl Reservations {
    /// Forgets the names `in_cache` shows and the expired ones; returns how many are left.
    pub fn outstanding(&mut self, now: Instant, in_cache: impl Fn(&str) -> bool) -> usize {
        self.names
            .retain(|name, (_, at)| now.duration_since(*at) < RESERVATION_TTL && !in_cache(name));
        self.names.len()
    }

    /// The names left for `pool` (after [`Reservations::outstanding`]).
    pub fn of<'a>(&'a self, pool: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.names
            .iter()
            .filter(move |(_, (p, _))| p == pool)
            .map(|(name, _)| name.as_str())
    }

    /// Reserves `names` for `pool` (a name already reserved counts once).
    pub fn add(&mut self, pool: &str, names: &[String], now: Instant) {
        for name in names {
            self.names.insert(name.clone(), (pool.to_owned(), now));
        }
    }

    /// Frees `name`: its create failed.
    pub fn release(&mut self, name: &str) {
        self.names.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_name_counts_until_the_cache_shows_it_or_its_create_failed() {
        let t0 = Instant::now();
        let mut r = Reservations::default();
        r.add("p", &names(&["a", "b", "c"]), t0);
        assert_eq!(r.outstanding(t0, |_| false), 3);
        // The cache shows a: it counts there now, not here.
        assert_eq!(r.outstanding(t0, |n| n == "a"), 2);
        r.release("b");
        assert_eq!(r.outstanding(t0, |_| false), 1);
        r.add("p", &names(&["c"]), t0);
        assert_eq!(r.outstanding(t0, |_| false), 1, "a name counts once");
    }

    #[test]
    fn a_reservation_the_cache_never_shows_expires() {
        let t0 = Instant::now();
        let mut r = Reservations::default();
        r.add("p", &names(&["a"]), t0);
        assert_eq!(r.outstanding(t0 + RESERVATION_TTL / 2, |_| false), 1);
        assert_eq!(r.outstanding(t0 + RESERVATION_TTL, |_| false), 0);
    }

    #[test]
    fn each_pool_counts_its_own_names() {
        let t0 = Instant::now();
        let mut r = Reservations::default();
        r.add("a", &names(&["a-1", "a-2"]), t0);
        r.add("a-b", &names(&["a-b-1"]), t0);
        assert_eq!(r.outstanding(t0, |_| false), 3, "the quota counts all");
        let mut of_a: Vec<&str> = r.of("a").collect();
        of_a.sort();
        assert_eq!(of_a, ["a-1", "a-2"]);
        assert_eq!(r.of("a-b").collect::<Vec<_>>(), ["a-b-1"]);
        assert_eq!(r.of("c").count(), 0);
    }
}
