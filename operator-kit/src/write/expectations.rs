//! A writer's memory of its own recent writes, the "expectations" of controller-runtime's
//! ReplicaSet controller: a reconcile that runs before the cache shows this writer's last
//! write to an object does not send it again. Memory that only saves requests: a restart
//! that loses it costs at most one repeated write.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a write is remembered while the cache has not shown it yet.
const TTL: Duration = Duration::from_secs(10);
/// Keys a repeated write is compared without: a transition time recomputed against a
/// stale copy is not news.
const IGNORES: [&str; 1] = ["lastTransitionTime"];
/// Past this many objects remembered, the expired ones are dropped at the next write.
const PRUNE_AT: usize = 1024;

#[derive(Debug)]
struct Expectation {
    resource_version: Option<String>,
    body: Value,
    at: Instant,
}

/// Recent writes by object key.
#[derive(Debug, Default)]
pub(super) struct Expectations(Mutex<HashMap<String, Expectation>>);

impl Expectations {
    /// The body last written to `key`, while the cached copy (at `cached_version`) does
    /// not show that write yet, and for [`TTL`] at most.
    pub fn pending(&self, key: &str, cached_version: Option<&str>) -> Option<Value> {
        let mut expectations = self.0.lock().expect("not poisoned");
        let e = expectations.get(key)?;
        let caught_up =
            e.resource_version.is_some() && e.resource_version.as_deref() == cached_version;
        if caught_up || e.at.elapsed() > TTL {
            expectations.remove(key);
            return None;
        }
        Some(e.body.clone())
    }

    /// Remembers that `body` was written to `key`, the server's copy now at
    /// `resource_version`.
    pub fn remember(&self, key: String, resource_version: Option<String>, body: &Value) {
        let mut expectations = self.0.lock().expect("not poisoned");
        if expectations.len() >= PRUNE_AT {
            expectations.retain(|_, e| e.at.elapsed() <= TTL);
        }
        expectations.insert(
            key,
            Expectation {
                resource_version,
                body: body.clone(),
                at: Instant::now(),
            },
        );
    }
}

/// Whether a write of `body` says nothing that `pending`, the writer's own last write,
/// did not.
pub(super) fn covered(body: &Value, pending: &Value) -> bool {
    crate::merge::is_within(body, pending, &IGNORES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_write_is_pending_until_the_cache_shows_its_version() {
        let e = Expectations::default();
        e.remember(
            "a".into(),
            Some("7".into()),
            &json!({"spec": {"replicas": 3}}),
        );
        assert!(e.pending("a", Some("6")).is_some(), "the cache is behind");
        assert!(e.pending("a", Some("7")).is_none(), "the cache caught up");
        assert!(e.pending("a", Some("6")).is_none(), "and it is forgotten");
        assert!(e.pending("b", None).is_none());
    }

    #[test]
    fn a_recomputed_transition_time_is_no_news() {
        let written = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "t1"}]}});
        let again = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "t2"}]}});
        assert!(covered(&again, &written));
        let flipped = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "lastTransitionTime": "t2"}]}});
        assert!(!covered(&flipped, &written));
    }
}
