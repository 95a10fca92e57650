//! What the autoscaler remembers per Autoscaler, as the HPA controller does: its past
//! recommendations, for the stabilization windows. In memory only, and seeded from the
//! pool's size, so that losing it (a restart, a new leader) only ever holds a scale-down
//! back, never starts one early.
use std::collections::{HashMap, HashSet};

use crate::decide::Recommendation;

/// Past recommendations by Autoscaler uid.
#[derive(Debug, Default)]
pub struct History {
    by_uid: HashMap<String, Memory>,
}

#[derive(Debug)]
struct Memory {
    recommendations: Vec<Recommendation>,
    /// Seconds of history the longer window needs.
    keep: i64,
}

impl History {
    /// The past recommendations of the Autoscaler `uid` (oldest first), whose longer window
    /// is `keep` seconds. One this process has none of (it just started, or just became
    /// leader) starts from the pool's current size, `current`, at `now`.
    pub fn recommendations(
        &mut self,
        uid: &str,
        keep: i64,
        current: i32,
        now: i64,
    ) -> Vec<Recommendation> {
        let memory = self.by_uid.entry(uid.to_owned()).or_insert_with(|| Memory {
            recommendations: vec![Recommendation {
                at: now,
                replicas: current,
            }],
            keep,
        });
        memory.keep = keep;
        memory.recommendations.clone()
    }

    /// Records this decision's recommendation: at most one entry per second, and only as
    /// far back as the longer window reaches.
    pub fn record(&mut self, uid: &str, now: i64, replicas: i32) {
        let Some(memory) = self.by_uid.get_mut(uid) else {
            return;
        };
        let keep = memory.keep;
        memory.recommendations.retain(|r| r.at > now - keep.max(1));
        match memory.recommendations.last_mut() {
            Some(last) if last.at == now => last.replicas = replicas,
            _ => memory
                .recommendations
                .push(Recommendation { at: now, replicas }),
        }
    }

    /// How many Autoscalers it remembers.
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }

    /// Forgets the Autoscalers whose uid is not in `live` (no reconcile runs for a deleted
    /// object, so nothing else would).
    pub fn retain(&mut self, live: &HashSet<String>) {
        self.by_uid.retain(|uid, _| live.contains(uid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(at: i64, replicas: i32) -> Recommendation {
        Recommendation { at, replicas }
    }

    #[test]
    fn a_new_autoscaler_starts_from_the_pools_size() {
        let mut h = History::default();
        assert_eq!(h.recommendations("a", 300, 4, 10), [at(10, 4)]);
        // Known now: the seed is not taken again.
        assert_eq!(h.recommendations("a", 300, 9, 11), [at(10, 4)]);
    }

    #[test]
    fn one_entry_a_second_and_only_as_far_back_as_the_window() {
        let mut h = History::default();
        h.recommendations("a", 5, 4, 0);
        h.record("a", 0, 3);
        h.record("a", 0, 2);
        assert_eq!(h.recommendations("a", 5, 4, 0), [at(0, 2)], "same second");
        h.record("a", 3, 1);
        h.record("a", 6, 1);
        assert_eq!(
            h.recommendations("a", 5, 4, 6),
            [at(3, 1), at(6, 1)],
            "the entry of second 0 is older than the 5 s window"
        );
        h.record("b", 1, 1);
        assert_eq!(h.len(), 1, "nothing recorded for an Autoscaler never read");
    }

    #[test]
    fn deleted_autoscalers_are_forgotten() {
        let mut h = History::default();
        h.recommendations("a", 5, 1, 0);
        h.recommendations("b", 5, 1, 0);
        h.retain(&HashSet::from(["b".to_owned()]));
        assert_eq!(h.len(), 1);
        assert_eq!(h.recommendations("a", 5, 7, 9), [at(9, 7)], "a starts over");
    }
}
