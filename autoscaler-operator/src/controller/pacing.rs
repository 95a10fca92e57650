//! When an Autoscaler is decided: the events of a burst make one decision.
//!
//! Every pod event of a pool can trigger a reconcile, and a decision reads all of the
//! pool's pods. Two rules pace them, per Autoscaler:
//! - **A decision answers a change at least [`SETTLE`] old.** The scheduler refuses the
//!   pods of a burst within milliseconds of each other; the first refusal waits that long
//!   for the rest, so that one decision counts them all rather than the first alone.
//! - **Decisions are at least [`DECISION_INTERVAL`] apart.** 10,000 pods arriving would
//!   otherwise make thousands of decisions and as many `spec.replicas` writes. The events
//!   within an interval join the decision at its end.
//!
//! Karpenter batches the same way, but waits for 1 s without a new pod, up to 10 s: under a
//! steady stream of pods that is the 10 s, where these rules wait 1 s at most.
//!
//! A decision whose writes failed (a 409 under `lazy`) does not count: the retry decides at
//! once. The times are memory only; a restart lets the first decision come sooner, nothing
//! else.
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// The least time between two decisions for one Autoscaler.
pub const DECISION_INTERVAL: Duration = Duration::from_secs(1);

/// How old the first change a decision answers must be.
pub const SETTLE: Duration = Duration::from_millis(100);

/// Whether a reconcile decides now, or waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    Decide,
    Wait(Duration),
}

#[derive(Clone, Copy, Debug, Default)]
struct Pace {
    /// The last decision whose writes were made.
    decided: Option<Instant>,
    /// The first reconcile since then: the oldest change not yet answered.
    first_undecided: Option<Instant>,
}

/// The pace of every Autoscaler this process decides, by uid.
#[derive(Debug, Default)]
pub struct Pacing {
    by_uid: HashMap<String, Pace>,
}

impl Pacing {
    /// A reconcile of `uid` at `now`: decide, or wait until both rules allow it.
    pub fn turn(&mut self, uid: &str, now: Instant) -> Turn {
        let pace = self.by_uid.entry(uid.to_owned()).or_default();
        let first = *pace.first_undecided.get_or_insert(now);
        let allowed = [
            Some(first + SETTLE),
            pace.decided.map(|d| d + DECISION_INTERVAL),
        ]
        .into_iter()
        .flatten()
        .max()
        .expect("one rule always applies");
        if allowed > now {
            Turn::Wait(allowed - now)
        } else {
            Turn::Decide
        }
    }

    /// The decision of `uid` begun at `at` made its writes: it answered every change
    /// before `at`.
    pub fn decided(&mut self, uid: &str, at: Instant) {
        let pace = self.by_uid.entry(uid.to_owned()).or_default();
        pace.decided = Some(at);
        pace.first_undecided = None;
    }

    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    /// Forgets the Autoscalers not in `live`.
    pub fn retain(&mut self, live: &HashSet<String>) {
        self.by_uid.retain(|uid, _| live.contains(uid));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_first_change_waits_for_the_rest_of_its_burst() {
        let (mut p, t0) = (Pacing::default(), Instant::now());
        assert_eq!(p.turn("a", t0), Turn::Wait(SETTLE));
        // A second event of the burst does not push the decision back.
        assert_eq!(p.turn("a", t0 + ms(40)), Turn::Wait(ms(60)));
        assert_eq!(p.turn("a", t0 + SETTLE), Turn::Decide);
    }

    #[test]
    fn decisions_are_an_interval_apart_and_the_events_between_join_the_next() {
        let (mut p, t0) = (Pacing::default(), Instant::now());
        p.turn("a", t0);
        p.decided("a", t0 + SETTLE);
        let next = t0 + SETTLE + DECISION_INTERVAL;
        assert_eq!(p.turn("a", t0 + ms(300)), Turn::Wait(next - (t0 + ms(300))));
        // At the end of the interval the change waiting since 300 ms is old enough.
        assert_eq!(p.turn("a", next), Turn::Decide);
    }

    #[test]
    fn a_change_just_before_the_interval_ends_still_settles() {
        let (mut p, t0) = (Pacing::default(), Instant::now());
        p.decided("a", t0);
        let late = t0 + DECISION_INTERVAL - ms(30);
        assert_eq!(p.turn("a", late), Turn::Wait(SETTLE));
        assert_eq!(p.turn("a", t0 + DECISION_INTERVAL), Turn::Wait(ms(70)));
        assert_eq!(p.turn("a", late + SETTLE), Turn::Decide);
    }

    #[test]
    fn a_failed_decision_is_retried_at_once() {
        let (mut p, t0) = (Pacing::default(), Instant::now());
        p.turn("a", t0);
        assert_eq!(p.turn("a", t0 + SETTLE), Turn::Decide);
        // Its write failed: no `decided`. The retry, after the error's backoff, decides.
        assert_eq!(p.turn("a", t0 + SETTLE + ms(5)), Turn::Decide);
    }

    #[test]
    fn a_quiet_autoscaler_settles_once_then_decides() {
        let (mut p, t0) = (Pacing::default(), Instant::now());
        p.decided("a", t0);
        // A resync an hour later: not held by the interval, only by the settle.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(p.turn("a", later), Turn::Wait(SETTLE));
        assert_eq!(p.turn("a", later + SETTLE), Turn::Decide);
    }

    #[test]
    fn autoscalers_are_paced_apart_and_forgotten_when_gone() {
        let (mut p, t0) = (Pacing::default(), Instant::now());
        p.decided("a", t0);
        assert_eq!(p.turn("b", t0), Turn::Wait(SETTLE));
        assert_eq!(p.len(), 2);
        p.retain(&HashSet::from(["b".to_owned()]));
        assert_eq!(p.len(), 1);
        // "a" is unknown again: nothing holds it but the settle.
        assert_eq!(p.turn("a", t0 + ms(10)), Turn::Wait(SETTLE));
    }
}
