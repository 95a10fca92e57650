//! What the autoscaler remembers per Autoscaler, as the HPA controller does: its past
//! recommendations, for the stabilization windows. In memory only, and seeded from the
//! pool's size, so that losing it (a restart, a new leader) only ever holds a scale-down
//! back, never starts one early.
use std::collections::{HashMap, HashSet};

use crate::decide::{Recommendation, in_force_at};

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

    /// Records this decision's recommendation, only as far back as the longer window
    /// reaches, and at most two entries a second: the lowest and the highest of that
    /// second. The windows read nothing else (the scale-up window its lowest entry, the
    /// scale-down window its highest), so they see what keeping every recommendation would
    /// show, however many reconciles a second runs; a later recommendation of the same
    /// second never replaces a higher one (or the seed), which would let a scale-down
    /// through the window at once.
    pub fn record(&mut self, uid: &str, now: i64, replicas: i32) {
        let Some(memory) = self.by_uid.get_mut(uid) else {
            return;
        };
        let keep = memory.keep;
        let recommendations = &mut memory.recommendations;
        // The windows read back `keep` seconds, and the last entry before that (all of its
        // second): it was in force when they begin.
        let cutoff = now - keep.max(1);
        let held = in_force_at(recommendations, cutoff);
        recommendations.retain(|r| r.at > cutoff || Some(r.at) == held);
        let this_second = recommendations
            .iter()
            .rposition(|r| r.at != now)
            .map_or(0, |i| i + 1);
        let (low, high) = recommendations[this_second..]
            .iter()
            .fold((replicas, replicas), |(low, high), r| {
                (low.min(r.replicas), high.max(r.replicas))
            });
        recommendations.truncate(this_second);
        recommendations.push(Recommendation {
            at: now,
            replicas: low,
        });
        if high != low {
            recommendations.push(Recommendation {
                at: now,
                replicas: high,
            });
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
    fn two_entries_a_second_at_most_and_only_as_far_back_as_the_window() {
        let mut h = History::default();
        h.recommendations("a", 5, 4, 0);
        h.record("a", 0, 3);
        h.record("a", 0, 2);
        assert_eq!(
            h.recommendations("a", 5, 4, 0),
            [at(0, 2), at(0, 4)],
            "the same second: its lowest and its highest, the seed among them"
        );
        h.record("a", 3, 1);
        h.record("a", 3, 1);
        h.record("a", 6, 1);
        assert_eq!(
            h.recommendations("a", 5, 4, 6),
            [at(0, 2), at(0, 4), at(3, 1), at(6, 1)],
            "second 0 is older than the 5 s window, but was in force when it began (t=1)"
        );
        h.record("a", 9, 1);
        assert_eq!(
            h.recommendations("a", 5, 4, 9),
            [at(3, 1), at(6, 1), at(9, 1)],
            "second 3 replaced it before the window began (t=4)"
        );
        h.record("b", 1, 1);
        assert_eq!(h.len(), 1, "nothing recorded for an Autoscaler never read");
    }

    #[test]
    fn a_drop_in_the_second_of_a_rise_still_waits_for_the_scale_down_window() {
        // Scaled up to 4 and, later in the same second of this process's clock, the demand
        // is gone: the scale-down window must still hold the 4.
        let mut h = History::default();
        h.recommendations("a", 5, 1, 0);
        h.record("a", 1, 4);
        h.record("a", 1, 1);
        let past = h.recommendations("a", 5, 1, 1);
        assert_eq!(past.iter().map(|r| r.replicas).max(), Some(4), "{past:?}");
        assert_eq!(past.iter().map(|r| r.replicas).min(), Some(1), "{past:?}");
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
