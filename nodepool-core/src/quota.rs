//! The `--max-nodes` quota, reserved atomically.
//!
//! Reconciles of different pools run at once (`--concurrency`), and each sees a node in
//! the cache only once its create has come back through the watch. Counting the cache
//! alone, two reconciles would both find room for the last slot and both fill it. So a
//! reconcile decides how many nodes fit, and reserves their names, under one lock; the
//! count is the cache's nodes plus the names reserved and not yet in the cache. A name
//! leaves the reservations when the cache shows it, when its create failed, or after
//! [`RESERVATION_TTL`] (a create that succeeded and was deleted before the cache saw it).
//!
//! Nothing here outlives the process, and nothing needs to: after a restart the caches
//! sync before any reconcile, and then show every node that exists.
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Longest a reservation counts without the cache showing its node.
pub const RESERVATION_TTL: Duration = Duration::from_secs(60);

/// Names of nodes being created, with when they were reserved.
#[derive(Debug, Default)]
pub struct Reservations {
    names: HashMap<String, Instant>,
}

impl Reservations {
    /// Forgets the names `in_cache` shows and the expired ones; returns how many are left.
    pub fn outstanding(&mut self, now: Instant, in_cache: impl Fn(&str) -> bool) -> usize {
        self.names
            .retain(|name, at| now.duration_since(*at) < RESERVATION_TTL && !in_cache(name));
        self.names.len()
    }

    /// Reserves `names` (a name already reserved counts once).
    pub fn add(&mut self, names: &[String], now: Instant) {
        for name in names {
            self.names.insert(name.clone(), now);
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
        r.add(&names(&["a", "b", "c"]), t0);
        assert_eq!(r.outstanding(t0, |_| false), 3);
        // The cache shows a: it counts there now, not here.
        assert_eq!(r.outstanding(t0, |n| n == "a"), 2);
        r.release("b");
        assert_eq!(r.outstanding(t0, |_| false), 1);
        r.add(&names(&["c"]), t0);
        assert_eq!(r.outstanding(t0, |_| false), 1, "a name counts once");
    }

    #[test]
    fn a_reservation_the_cache_never_shows_expires() {
        let t0 = Instant::now();
        let mut r = Reservations::default();
        r.add(&names(&["a"]), t0);
        assert_eq!(r.outstanding(t0 + RESERVATION_TTL / 2, |_| false), 1);
        assert_eq!(r.outstanding(t0 + RESERVATION_TTL, |_| false), 0);
    }
}
