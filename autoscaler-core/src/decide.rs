//! The HPA's decision, per pool: the recommendation per resource, stabilization windows,
//! the scaling policies (per period, counted from the changes recorded), clamping, and
//! the limits (paused, pool at quota).
use shared_crd::{AutoscalerSpec, reason};

use crate::demand::PoolDemand;
use crate::policy::{self, Change, Direction};
use crate::resources::{Capacity, Demand, GI, round};

/// Nodes needed for `demand` at `target_utilization` percent, by the scarcest resource,
/// with the sentence that explains it.
pub fn nodes_needed(demand: Demand, capacity: Capacity, target_utilization: i32) -> (i32, String) {
    let target = f64::from(target_utilization.clamp(1, 100)) / 100.0;
    let per = |d: f64, c: f64| (d / (c * target) - 1e-9).ceil().max(0.0) as i32;
    let candidates = [
        (
            per(demand.cpu, capacity.cpu),
            format!(
                "cpu demand {} cores / ({} cores x {}%)",
                round(demand.cpu),
                round(capacity.cpu),
                target_utilization
            ),
        ),
        (
            per(demand.memory, capacity.memory),
            format!(
                "memory demand {}Gi / ({}Gi x {}%)",
                round(demand.memory / GI),
                round(capacity.memory / GI),
                target_utilization
            ),
        ),
        (
            per(demand.pods, capacity.pods),
            format!(
                "{} pods / ({} pods x {}%)",
                demand.pods, capacity.pods, target_utilization
            ),
        ),
    ];
    let (n, why) = candidates
        .into_iter()
        .max_by_key(|(n, _)| *n)
        .expect("three candidates");
    (n, format!("{why} -> {n} nodes"))
}

/// One past recommendation, for the stabilization windows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recommendation {
    /// Seconds (any monotonic origin).
    pub at: i64,
    pub replicas: i32,
}

/// What to do.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The size to ask of the pool.
    pub desired: i32,
    /// Clamped recommendation before stabilization and steps.
    pub recommendation: i32,
    /// Human-readable reason (the Autoscaler's `lastDecision`).
    pub explanation: String,
    /// Why `desired` is not simply the recommendation, if so: (reason, message).
    pub limited: Option<(&'static str, String)>,
    /// When the decision may change with time alone (a window is holding it back).
    pub recheck_in_seconds: Option<i64>,
}

/// Everything a decision depends on.
pub struct Inputs<'a> {
    pub spec: &'a AutoscalerSpec,
    pub demand: &'a PoolDemand,
    pub capacity: Capacity,
    /// The pool's current `spec.replicas` (the size asked for). The policies count from
    /// it, not from the nodes that exist: replacements under a rollout change nothing.
    pub current: i32,
    /// nodepool-operator says the pool is at its provider quota.
    pub pool_at_quota: bool,
    /// Earlier recommendations (oldest first), not including this one.
    pub history: &'a [Recommendation],
    /// The clock of `history` (any monotonic origin).
    pub now: i64,
    /// The changes this autoscaler made (the Autoscaler's `status.scaleEvents`).
    pub changes: &'a [Change],
    /// Seconds since the epoch: the clock of `changes`.
    pub wall_now: i64,
}

/// The HPA's algorithm, per pool: recommend (clamped to the bounds), stabilize (scale up
/// to the lowest and down to the highest recommendation of each window), limit the rate
/// (the policies), clamp, hold when paused or when the pool cannot get more nodes.
pub fn decide(input: &Inputs) -> Decision {
    let spec = input.spec;
    let mut decision = recommend(input);
    stabilize(input, &mut decision);
    limit_rate(input, &mut decision);
    decision.desired = decision.desired.clamp(spec.min_replicas, spec.max_replicas);
    hold(input, &mut decision);
    decision
}

/// The size the demand asks for, clamped to `[minReplicas, maxReplicas]`, and why.
fn recommend(input: &Inputs) -> Decision {
    let spec = input.spec;
    let (mut raw, mut why) = nodes_needed(
        input.demand.total(),
        input.capacity,
        spec.target_utilization,
    );
    let placement = &input.demand.placement;
    if placement.nodes > raw {
        // The requests fit fewer nodes than the pods do, one by one.
        raw = placement.nodes;
        why += &format!("; but {} -> {raw} nodes", placement.why);
    }
    let recommendation = raw.clamp(spec.min_replicas, spec.max_replicas);
    let mut explanation = format!("{}; {why}", input.demand.summary());
    let mut limited = None;
    if recommendation != raw {
        explanation += &format!(
            ", clamped to {recommendation} (min {}, max {})",
            spec.min_replicas, spec.max_replicas
        );
        limited = Some((
            if raw > spec.max_replicas {
                reason::TOO_MANY_REPLICAS
            } else {
                reason::TOO_FEW_REPLICAS
            },
            format!(
                "{raw} nodes needed, limited to [{}, {}]",
                spec.min_replicas, spec.max_replicas
            ),
        ));
    }
    Decision {
        desired: recommendation,
        recommendation,
        explanation,
        limited,
        recheck_in_seconds: None,
    }
}

/// When the recommendations in force at `t` were made: the last at or before it.
/// Decisions are made on change, so a recommendation holds until the next one.
pub(crate) fn in_force_at(history: &[Recommendation], t: i64) -> Option<i64> {
    history.iter().map(|r| r.at).filter(|&at| at <= t).max()
}

/// The entries of `history` (oldest first) that a window of `seconds` ending at `now`
/// reads, each with when it ages out of that window: one made in it, `seconds` after it
/// was made; the one in force when it began (the last before it, all of its second),
/// `seconds` after the next one (or this decision, at `now`) replaced it. Without that
/// one, a drop after a quiet spell longer than the window would go through at once. A
/// window of 0 s reads none.
fn counted_in(
    history: &[Recommendation],
    now: i64,
    seconds: i64,
) -> impl Iterator<Item = (&Recommendation, i64)> {
    let since = now - seconds;
    let held = (seconds > 0).then(|| in_force_at(history, since)).flatten();
    let next_after = move |at: i64| {
        history
            .iter()
            .map(|r| r.at)
            .find(|&later| later > at)
            .unwrap_or(now)
    };
    history.iter().filter_map(move |r| {
        if seconds > 0 && r.at > since {
            Some((r, r.at + seconds))
        } else if Some(r.at) == held {
            Some((r, next_after(r.at) + seconds))
        } else {
            None
        }
    })
}

/// The stabilization windows: from the current size, up to the lowest recommendation of
/// the scale-up window, or down to the highest of the scale-down window.
fn stabilize(input: &Inputs, decision: &mut Decision) {
    let behavior = &input.spec.behavior;
    let up_window = policy::resolve(&behavior.scale_up, Direction::Up).window_seconds;
    let down_window = policy::resolve(&behavior.scale_down, Direction::Down).window_seconds;
    let recommendation = decision.recommendation;
    let window = |seconds: i64| {
        counted_in(input.history, input.now, seconds)
            .map(|(r, _)| r.replicas)
            .chain(std::iter::once(recommendation))
    };
    let up_to = window(up_window).min().unwrap_or(recommendation);
    let down_to = window(down_window).max().unwrap_or(recommendation);
    let current = input.current;
    decision.desired = if current < up_to {
        up_to
    } else if current > down_to {
        down_to
    } else {
        current
    };
    if decision.desired != recommendation {
        // A window holds the change back; it can move once the oldest entry ages out.
        let oldest_in = |seconds: i64| {
            counted_in(input.history, input.now, seconds)
                .map(|(_, ages_out)| ages_out - input.now)
                .min()
        };
        decision.recheck_in_seconds = if recommendation < current {
            oldest_in(down_window)
        } else {
            oldest_in(up_window)
        };
        decision.explanation += &format!("; stabilized at {}", decision.desired);
    }
}

/// The policies: at most the change they allow in their periods, counted from the
/// changes recorded (the HPA's `convertDesiredReplicasWithBehaviorRate`).
fn limit_rate(input: &Inputs, decision: &mut Decision) {
    let behavior = &input.spec.behavior;
    let (current, now, changes) = (input.current, input.wall_now, input.changes);
    let (direction, spec, reason, word, moving) = match decision.desired.cmp(&current) {
        std::cmp::Ordering::Greater => (
            Direction::Up,
            &behavior.scale_up,
            reason::SCALE_UP_LIMIT,
            "scale-up",
            "increasing",
        ),
        std::cmp::Ordering::Less => (
            Direction::Down,
            &behavior.scale_down,
            reason::SCALE_DOWN_LIMIT,
            "scale-down",
            "decreasing",
        ),
        std::cmp::Ordering::Equal => return,
    };
    let rules = policy::resolve(spec, direction);
    let (limit, beyond) = match direction {
        Direction::Up => {
            let limit = policy::scale_up_limit(current, changes, &rules, now).max(current);
            (limit, decision.desired > limit)
        }
        Direction::Down => {
            let limit = policy::scale_down_limit(current, changes, &rules, now).min(current);
            (limit, decision.desired < limit)
        }
    };
    if !beyond {
        return;
    }
    decision.desired = limit;
    decision.explanation += &format!("; {word} limited to {limit} by its policies");
    decision.limited = Some((
        reason,
        format!("the size is {moving} faster than the {word} policies allow: {limit} for now"),
    ));
    decision.recheck_in_seconds = policy::next_expiry(changes, &rules, now).or(Some(1));
}

/// Holds the current request when the pool is at its quota (no more), or paused.
fn hold(input: &Inputs, decision: &mut Decision) {
    let current = input.current;
    if input.pool_at_quota && decision.desired > current {
        // Asking for more than the pool can get only makes the two operators fight; asking
        // for less would clear AtQuota and ask again next time: hold the current request.
        decision.explanation += &format!("; pool at quota, holding at {current}");
        decision.limited = Some((
            reason::AT_QUOTA,
            format!(
                "the pool is at its provider quota; holding at {current} instead of {}",
                decision.desired
            ),
        ));
        decision.desired = current;
        decision.recheck_in_seconds = None;
    }
    if input.spec.paused {
        let would = format!("paused; would ask for {}", decision.desired);
        decision.explanation = would.clone();
        decision.limited = Some((reason::PAUSED, would));
        decision.desired = current;
        decision.recheck_in_seconds = None;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::resources::tests::{NODE, cpu};
    use shared_crd::{NodePoolRef, PolicyType, ScalingBehavior, ScalingRules};

    pub(crate) fn spec(min: i32, max: i32) -> AutoscalerSpec {
        AutoscalerSpec {
            node_pool_ref: NodePoolRef { name: "p".into() },
            min_replicas: min,
            max_replicas: max,
            target_utilization: 80,
            behavior: ScalingBehavior {
                scale_up: ScalingRules {
                    max_step: Some(10),
                    ..ScalingRules::window(0)
                },
                scale_down: ScalingRules {
                    max_step: Some(10),
                    ..ScalingRules::window(0)
                },
            },
            paused: false,
        }
    }

    /// Demand of pods bound to the pool, which pack as well as the sum says.
    fn used(usage: Demand) -> PoolDemand {
        PoolDemand {
            usage,
            ..PoolDemand::default()
        }
    }

    fn run(
        spec: &AutoscalerSpec,
        demand: Demand,
        current: i32,
        history: &[Recommendation],
        now: i64,
    ) -> Decision {
        decide(&Inputs {
            spec,
            demand: &used(demand),
            capacity: NODE,
            current,
            pool_at_quota: false,
            history,
            now,
            changes: &[],
            wall_now: now,
        })
    }

    #[test]
    fn utilization_math_per_resource() {
        // (demand, expected nodes): 2 cores x 80% = 1.6 usable cores per node.
        let table = [
            (Demand::default(), 0),
            (cpu(0.0), 1), // one pod needs a node even with no requests
            (cpu(1.6), 1),
            (cpu(1.7), 2),
            (cpu(5.5), 4),
            (
                Demand {
                    cpu: 0.1,
                    memory: 20.0 * GI,
                    pods: 1.0,
                },
                4,
            ), // 6.4Gi usable per node
            (
                Demand {
                    cpu: 0.1,
                    memory: 0.0,
                    pods: 200.0,
                },
                3,
            ), // 88 pods usable per node
        ];
        for (demand, want) in table {
            assert_eq!(nodes_needed(demand, NODE, 80).0, want, "{demand:?}");
        }
        let (_, why) = nodes_needed(cpu(5.5), NODE, 80);
        assert_eq!(why, "cpu demand 5.5 cores / (2 cores x 80%) -> 4 nodes");
    }

    #[test]
    fn recommendations_are_clamped_to_min_and_max() {
        let d = run(&spec(2, 3), cpu(0.0), 2, &[], 0);
        assert_eq!(
            (d.desired, d.limited.map(|l| l.0)),
            (2, Some("TooFewReplicas"))
        );
        let d = run(&spec(1, 3), cpu(100.0), 1, &[], 0);
        assert_eq!(
            (d.desired, d.limited.map(|l| l.0)),
            (3, Some("TooManyReplicas"))
        );
        let d = run(&spec(1, 10), cpu(5.5), 1, &[], 0);
        assert_eq!((d.desired, d.limited), (4, None));
    }

    #[test]
    fn scale_down_waits_for_the_highest_recommendation_of_its_window() {
        let mut s = spec(1, 10);
        s.behavior.scale_down.stabilization_window_seconds = Some(60);
        let history = [Recommendation {
            at: 100,
            replicas: 4,
        }];
        // Demand dropped at t=130: the window (since t=70) still holds 4.
        let d = run(&s, cpu(0.0), 4, &history, 130);
        assert_eq!(d.desired, 4);
        assert_eq!(
            d.recheck_in_seconds,
            Some(30),
            "re-check when the 4 ages out"
        );
        // The drop was recorded at t=130: from t=190 the window holds only what came after.
        let recorded = [
            history[0],
            Recommendation {
                at: 130,
                replicas: 1,
            },
        ];
        let d = run(&s, cpu(0.0), 4, &recorded, 161);
        assert_eq!(d.desired, 4, "the 4 was in force until t=130");
        assert_eq!(d.recheck_in_seconds, Some(29));
        let d = run(&s, cpu(0.0), 4, &recorded, 190);
        assert_eq!(d.desired, 1);
    }

    #[test]
    fn a_drop_after_a_quiet_spell_longer_than_the_window_still_waits_for_it() {
        // 25 nodes asked for at t=0, then nothing changed (no decision) until t=100, when
        // the demand is gone: the 25 held until now, so a 5 s window still holds it.
        let mut s = spec(1, 30);
        s.behavior.scale_down.stabilization_window_seconds = Some(5);
        let history = [Recommendation {
            at: 0,
            replicas: 25,
        }];
        let d = run(&s, cpu(0.0), 25, &history, 100);
        assert_eq!(d.desired, 25);
        assert_eq!(
            d.recheck_in_seconds,
            Some(5),
            "5 s after this decision replaces it"
        );
    }

    #[test]
    fn scale_up_waits_for_the_lowest_recommendation_of_its_window() {
        let mut s = spec(1, 10);
        s.behavior.scale_up.stabilization_window_seconds = Some(30);
        let history = [Recommendation {
            at: 100,
            replicas: 1,
        }];
        assert_eq!(run(&s, cpu(5.5), 1, &history, 110).desired, 1);
        // The rise was recorded at t=110; the 1 was in force until then.
        let recorded = [
            history[0],
            Recommendation {
                at: 110,
                replicas: 4,
            },
        ];
        assert_eq!(run(&s, cpu(5.5), 1, &recorded, 131).desired, 1);
        assert_eq!(run(&s, cpu(5.5), 1, &recorded, 140).desired, 4);
    }

    #[test]
    fn policies_limit_the_change_per_period_from_the_changes_recorded() {
        let mut s = spec(0, 20);
        s.behavior.scale_up = ScalingRules::window(0).with_policy(PolicyType::Nodes, 2, 60);
        s.behavior.scale_down = ScalingRules::window(0).with_policy(PolicyType::Nodes, 1, 60);
        let up = run(&s, cpu(16.0), 1, &[], 0);
        assert_eq!(up.desired, 3);
        assert!(
            up.explanation
                .contains("scale-up limited to 3 by its policies"),
            "{}",
            up.explanation
        );
        assert_eq!(up.limited.unwrap().0, "ScaleUpLimit");
        assert_eq!(run(&s, cpu(0.0), 5, &[], 0).desired, 4);
        // Asked for 4 from 5 twenty seconds ago: the period allows no more.
        let idle = used(cpu(0.0));
        let changes = [Change {
            at: 80,
            from: 5,
            to: 4,
        }];
        let input = Inputs {
            spec: &s,
            demand: &idle,
            capacity: NODE,
            current: 4,
            pool_at_quota: false,
            history: &[],
            now: 100,
            changes: &changes,
            wall_now: 100,
        };
        let d = decide(&input);
        assert_eq!((d.desired, d.recheck_in_seconds), (4, Some(40)));
        assert_eq!(d.limited.unwrap().0, "ScaleDownLimit");
        // Once it leaves the period, the next node goes.
        let later = Inputs {
            wall_now: 141,
            ..input
        };
        assert_eq!(decide(&later).desired, 3);
    }

    #[test]
    fn paused_keeps_the_current_size() {
        let mut s = spec(1, 10);
        s.paused = true;
        let d = run(&s, cpu(5.5), 2, &[], 0);
        assert_eq!((d.desired, d.limited.unwrap().0), (2, "Paused"));
    }

    #[test]
    fn at_quota_holds_the_request_instead_of_asking_for_more() {
        let s = spec(1, 10);
        let (busy, idle) = (used(cpu(9.0)), used(cpu(1.0)));
        let input = Inputs {
            spec: &s,
            demand: &busy,
            capacity: NODE,
            current: 3,
            pool_at_quota: true,
            history: &[],
            now: 0,
            changes: &[],
            wall_now: 0,
        };
        let d = decide(&input);
        assert_eq!((d.desired, d.limited.clone().unwrap().0), (3, "AtQuota"));
        // Scaling down is still allowed at quota.
        let input = Inputs {
            demand: &idle,
            ..input
        };
        assert_eq!(decide(&input).desired, 1);
    }
}
