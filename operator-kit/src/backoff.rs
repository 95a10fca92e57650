//! Exponential backoff with client-go's semantics (`k8s.io/apimachinery/pkg/util/wait.Backoff`),
//! as used by `retry.RetryOnConflict`.
use std::time::Duration;

/// Steps, Duration, Factor, Jitter and Cap, exactly as client-go defines them:
///
/// - `steps`: how many attempts in all (the first one included);
/// - `duration`: the first sleep;
/// - `factor`: each sleep is the previous one times this (`0` or `1`: constant);
/// - `jitter`: each sleep gets `+ rand[0,1) * jitter * sleep`, not carried into the next one;
/// - `cap`: when the next duration would exceed it, it becomes `cap` and no step is left
///   (client-go's rule: the attempt after a capped sleep is the last one not taken).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub steps: u32,
    pub duration: Duration,
    pub factor: f64,
    pub jitter: f64,
    pub cap: Option<Duration>,
}

/// client-go `retry.DefaultBackoff`: for a client changing an object that
/// controllers actively manage. Up to 4 attempts; sleeps ~10ms, 50ms, 250ms.
pub const DEFAULT_BACKOFF: Backoff = Backoff {
    steps: 4,
    duration: Duration::from_millis(10),
    factor: 5.0,
    jitter: 0.1,
    cap: None,
};

impl Default for Backoff {
    fn default() -> Self {
        DEFAULT_BACKOFF
    }
}

impl Backoff {
    /// The next sleep, with jitter drawn from `unit` (a number in `[0, 1)`);
    /// advances the backoff (client-go's `Backoff.Step`).
    pub fn step_with(&mut self, unit: f64) -> Duration {
        if self.steps < 1 {
            return jittered(self.duration, self.jitter, unit);
        }
        self.steps -= 1;
        let sleep = self.duration;
        if self.factor != 0.0 {
            self.duration = self.duration.mul_f64(self.factor);
            if let Some(cap) = self.cap
                && self.duration > cap
            {
                self.duration = cap;
                self.steps = 0;
            }
        }
        jittered(sleep, self.jitter, unit)
    }

    /// The next sleep with random jitter.
    pub fn step(&mut self) -> Duration {
        self.step_with(rand::random::<f64>())
    }

    /// The sleeps a run that never succeeds goes through, with jitter drawn from `unit`
    /// (client-go's `ExponentialBackoff` loop): `steps - 1` sleeps between `steps` attempts,
    /// except that a sleep truncated by `cap` is the last thing the loop does.
    pub fn sleeps_with(mut self, mut unit: impl FnMut() -> f64) -> Vec<Duration> {
        let mut sleeps = Vec::new();
        while self.steps > 1 {
            sleeps.push(self.step_with(unit()));
        }
        sleeps
    }
}

fn jittered(d: Duration, jitter: f64, unit: f64) -> Duration {
    if jitter > 0.0 {
        d + d.mul_f64(unit * jitter)
    } else {
        d
    }
}

/// The per-object delay after a failed reconcile, as controller-runtime's
/// `ItemExponentialFailureRateLimiter` (5 ms doubling to 1000 s): each failure of one
/// object doubles its delay; a success forgets it. kube-runtime has none (kube-rs issue 297).
/// Memory that only paces retries: a restart starts every object at 5 ms again.
#[derive(Debug)]
pub struct ErrorBackoff {
    base: Duration,
    max: Duration,
    failures: std::sync::Mutex<std::collections::HashMap<String, u32>>,
}

impl Default for ErrorBackoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(5), Duration::from_secs(1000))
    }
}

impl ErrorBackoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            failures: Default::default(),
        }
    }

    /// The delay before retrying `key` after one more failure.
    pub fn next(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("not poisoned");
        let n = failures.entry(key.to_owned()).or_insert(0);
        let delay = self
            .base
            .checked_mul(1u32.checked_shl(*n).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        *n = n.saturating_add(1);
        delay
    }

    /// Runs one reconcile of `key`; a success forgets its failures.
    pub async fn track<T, E>(
        &self,
        key: &str,
        reconcile: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let result = reconcile.await;
        if result.is_ok() {
            self.reset(key);
        }
        result
    }

    /// Forgets the failures of `key` (after a success).
    pub fn reset(&self, key: &str) {
        self.failures.lock().expect("not poisoned").remove(key);
    }

    /// Objects with failures on record.
    pub fn len(&self) -> usize {
        self.failures.lock().expect("not poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// client-go `retry.DefaultRetry`: for conflicts among several clients changing
    /// the same object. Up to 5 attempts; sleeps ~10ms each.
    const DEFAULT_RETRY: Backoff = Backoff {
        steps: 5,
        duration: Duration::from_millis(10),
        factor: 1.0,
        jitter: 0.1,
        cap: None,
    };

    #[test]
    fn error_backoff_doubles_per_object_up_to_the_cap_and_resets() {
        let b = ErrorBackoff::default();
        let delays: Vec<_> = (0..4).map(|_| b.next("a")).collect();
        assert_eq!(delays, vec![ms(5), ms(10), ms(20), ms(40)]);
        assert_eq!(b.next("other"), ms(5), "objects do not share a delay");
        for _ in 0..40 {
            b.next("a");
        }
        assert_eq!(b.next("a"), Duration::from_secs(1000), "capped at 1000 s");
        b.reset("a");
        assert_eq!(b.next("a"), ms(5));
        b.reset("a");
        b.reset("other");
        assert!(b.is_empty(), "successes leave nothing behind");
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn default_backoff_sleeps_10_50_250ms_over_4_attempts() {
        assert_eq!(
            DEFAULT_BACKOFF.sleeps_with(|| 0.0),
            vec![ms(10), ms(50), ms(250)]
        );
    }

    #[test]
    fn default_retry_sleeps_10ms_four_times_over_5_attempts() {
        assert_eq!(DEFAULT_RETRY.sleeps_with(|| 0.0), vec![ms(10); 4]);
    }

    #[test]
    fn jitter_adds_at_most_its_fraction_and_is_not_carried_over() {
        // unit just below 1: each sleep is at most 10% longer than its base...
        let max = DEFAULT_BACKOFF.sleeps_with(|| 0.999_999);
        for (sleep, base) in max.iter().zip([10, 50, 250]) {
            assert!(*sleep >= ms(base), "{sleep:?} < {base}ms");
            assert!(
                *sleep < ms(base).mul_f64(1.1),
                "{sleep:?} >= 1.1 x {base}ms"
            );
        }
        // ...and the base of the next sleep is unaffected by the jitter of the previous one.
        let mut b = DEFAULT_BACKOFF;
        b.step_with(0.999_999);
        assert_eq!(b.duration, ms(50));
    }

    #[test]
    fn random_jitter_stays_within_bounds() {
        for _ in 0..1000 {
            let mut b = DEFAULT_BACKOFF;
            let first = b.step();
            assert!(first >= ms(10) && first < ms(11), "{first:?}");
        }
    }

    #[test]
    fn cap_limits_the_duration_and_ends_the_steps() {
        let b = Backoff {
            steps: 10,
            duration: ms(10),
            factor: 5.0,
            jitter: 0.0,
            cap: Some(ms(100)),
        };
        let mut stepped = b;
        assert_eq!(stepped.step_with(0.0), ms(10));
        assert_eq!(stepped.step_with(0.0), ms(50));
        // 250ms would exceed the cap: the duration is capped and no steps are left.
        assert_eq!(stepped.duration, ms(100));
        assert_eq!(stepped.steps, 0);
        assert_eq!(b.sleeps_with(|| 0.0), vec![ms(10), ms(50)]);
    }

    #[test]
    fn factor_zero_or_one_keeps_the_duration() {
        for factor in [0.0, 1.0] {
            let b = Backoff {
                factor,
                jitter: 0.0,
                ..DEFAULT_BACKOFF
            };
            assert_eq!(b.sleeps_with(|| 0.0), vec![ms(10); 3]);
        }
    }

    #[test]
    fn a_single_step_means_a_single_attempt_and_no_sleep() {
        let b = Backoff {
            steps: 1,
            ..DEFAULT_BACKOFF
        };
        assert!(b.sleeps_with(|| 0.0).is_empty());
    }
}
