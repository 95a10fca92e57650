//! The HPA's scaling policies (`autoscaling/v2` `behavior`), per direction: how much the
//! size may change per period, counted from the changes this autoscaler made within it.
//! Defaults, selection and rounding are the HPA controller's:
//! - scale up: per 15 s, 4 nodes or 100%, whichever is more; no stabilization window;
//! - scale down: per 15 s, 100%; a 300 s stabilization window;
//! - `Percent` rounds up when scaling up (a change that rounds to nothing would never
//!   scale), down (truncates) when scaling down;
//! - `selectPolicy: Max` takes the largest change, `Min` the smallest, `Disabled` none.
use shared_crd::{PolicyType, ScalingBehavior, ScalingRules, SelectPolicy};

/// The HPA's default period of a policy, and of the `maxStep` shorthand.
pub const DEFAULT_PERIOD_SECONDS: i32 = 15;

/// One direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

/// One direction's rules with every default filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Rules {
    pub window_seconds: i64,
    pub select: SelectPolicy,
    pub policies: Vec<Policy>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Policy {
    pub type_: PolicyType,
    pub value: i32,
    pub period_seconds: i64,
}

/// A change of the pool's size this autoscaler made: when (seconds since the epoch),
/// from and to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub at: i64,
    pub from: i32,
    pub to: i32,
}

/// `rules` of `direction` with the HPA's defaults for what they leave out.
pub fn resolve(rules: &ScalingRules, direction: Direction) -> Rules {
    let policy = |type_, value, period_seconds| Policy {
        type_,
        value,
        period_seconds,
    };
    let policies = if !rules.policies.is_empty() {
        rules
            .policies
            .iter()
            .map(|p| policy(p.type_, p.value, i64::from(p.period_seconds)))
            .collect()
    } else if let Some(step) = rules.max_step {
        vec![policy(
            PolicyType::Nodes,
            step,
            i64::from(DEFAULT_PERIOD_SECONDS),
        )]
    } else {
        let period = i64::from(DEFAULT_PERIOD_SECONDS);
        match direction {
            Direction::Up => vec![
                policy(PolicyType::Nodes, 4, period),
                policy(PolicyType::Percent, 100, period),
            ],
            Direction::Down => vec![policy(PolicyType::Percent, 100, period)],
        }
    };
    let default_window = match direction {
        Direction::Up => 0,
        Direction::Down => 300,
    };
    Rules {
        window_seconds: i64::from(rules.stabilization_window_seconds.unwrap_or(default_window)),
        select: rules.select_policy,
        policies,
    }
}

/// What the schema cannot say: `maxStep` and `policies` exclude each other.
pub fn validate(behavior: &ScalingBehavior) -> Result<(), String> {
    for (field, rules) in [
        ("scaleUp", &behavior.scale_up),
        ("scaleDown", &behavior.scale_down),
    ] {
        if rules.max_step.is_some() && !rules.policies.is_empty() {
            return Err(format!(
                "spec.behavior.{field}: maxStep is a shorthand for one policy; give maxStep or \
                 policies, not both"
            ));
        }
    }
    Ok(())
}

/// The longest period of either direction: how long changes must be remembered.
pub fn longest_period(behavior: &ScalingBehavior) -> i64 {
    [
        resolve(&behavior.scale_up, Direction::Up),
        resolve(&behavior.scale_down, Direction::Down),
    ]
    .iter()
    .flat_map(|r| r.policies.iter().map(|p| p.period_seconds))
    .max()
    .unwrap_or(0)
}

/// Nodes added and removed by `changes` within the `period` seconds before `now` (a
/// change counts while `at + period > now`, as in the HPA).
fn changed_in_period(changes: &[Change], period: i64, now: i64) -> (i32, i32) {
    changes
        .iter()
        .filter(|c| c.at + period > now)
        .fold((0, 0), |(added, removed), c| {
            let delta = c.to - c.from;
            (added + delta.max(0), removed + (-delta).max(0))
        })
}

/// The size at the start of the policy's period: the current one, without the changes
/// made within it.
fn period_start(current: i32, changes: &[Change], policy: &Policy, now: i64) -> i32 {
    let (added, removed) = changed_in_period(changes, policy.period_seconds, now);
    current - added + removed
}

/// The most the size may grow to now (the HPA's `calculateScaleUpLimitWithScalingRules`).
pub fn scale_up_limit(current: i32, changes: &[Change], rules: &Rules, now: i64) -> i32 {
    if rules.select == SelectPolicy::Disabled {
        return current;
    }
    let proposals = rules.policies.iter().map(|p| {
        let start = period_start(current, changes, p, now);
        match p.type_ {
            PolicyType::Nodes => start + p.value,
            PolicyType::Percent => {
                (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32
            }
        }
    });
    let limit = match rules.select {
        SelectPolicy::Min => proposals.min(),
        _ => proposals.max(),
    };
    limit.unwrap_or(current)
}

/// The least the size may shrink to now (the HPA's `calculateScaleDownLimitWithBehaviors`).
pub fn scale_down_limit(current: i32, changes: &[Change], rules: &Rules, now: i64) -> i32 {
    if rules.select == SelectPolicy::Disabled {
        return current;
    }
    let proposals = rules.policies.iter().map(|p| {
        let start = period_start(current, changes, p, now);
        match p.type_ {
            PolicyType::Nodes => start - p.value,
            PolicyType::Percent => (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32,
        }
    });
    // The largest change down is the lowest limit.
    let limit = match rules.select {
        SelectPolicy::Min => proposals.max(),
        _ => proposals.min(),
    };
    limit.unwrap_or(current)
}

/// Seconds until the first change within one of `rules`' periods leaves it, if any.
pub fn next_expiry(changes: &[Change], rules: &Rules, now: i64) -> Option<i64> {
    rules
        .policies
        .iter()
        .flat_map(|p| {
            changes
                .iter()
                .map(move |c| c.at + p.period_seconds - now)
                .filter(|s| *s > 0)
        })
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(select: Option<SelectPolicy>, policies: &[(PolicyType, i32, i32)]) -> Rules {
        let mut r = ScalingRules {
            select_policy: select.unwrap_or_default(),
            ..Default::default()
        };
        for (t, v, p) in policies {
            r = r.with_policy(*t, *v, *p);
        }
        resolve(&r, Direction::Up)
    }

    const NOW: i64 = 10_000;

    fn up(by: i32, ago: i64) -> Change {
        Change {
            at: NOW - ago,
            from: 0,
            to: by,
        }
    }

    fn down(by: i32, ago: i64) -> Change {
        Change {
            at: NOW - ago,
            from: by,
            to: 0,
        }
    }

    use PolicyType::{Nodes, Percent};

    /// The cases of the HPA controller's own tables for the two limits
    /// (`calculateScaleUpLimitWithScalingRules`, `calculateScaleDownLimitWithBehaviors`).
    #[test]
    fn limits_follow_the_hpas_table() {
        let min = Some(SelectPolicy::Min);
        let disabled = Some(SelectPolicy::Disabled);
        // (current, changes, rules, expected up limit)
        let up_cases: Vec<(i32, Vec<Change>, Rules, i32)> = vec![
            (5, vec![], rules(None, &[(Nodes, 4, 60)]), 9),
            (5, vec![up(2, 30)], rules(None, &[(Nodes, 4, 60)]), 7),
            (5, vec![], rules(disabled, &[(Nodes, 4, 60)]), 5),
            (5, vec![], rules(min, &[(Nodes, 4, 60), (Nodes, 2, 60)]), 7),
            (10, vec![], rules(None, &[(Percent, 50, 60)]), 15),
            // A change older than the period is not counted.
            (5, vec![up(2, 60)], rules(None, &[(Nodes, 4, 60)]), 9),
            // Percent rounds up: 3 nodes + 10% -> 4, not 3.
            (3, vec![], rules(None, &[(Percent, 10, 60)]), 4),
        ];
        for (i, (current, changes, r, want)) in up_cases.iter().enumerate() {
            assert_eq!(
                scale_up_limit(*current, changes, r, NOW),
                *want,
                "up case {i}"
            );
        }
        // (current, changes, rules, expected down limit)
        let down_cases: Vec<(i32, Vec<Change>, Rules, i32)> = vec![
            (10, vec![], rules(None, &[(Percent, 20, 60)]), 8),
            // 10 + the 1 removed 30 s ago = 11 at the period's start; 80% of 11 is 8.8 -> 8.
            (10, vec![down(1, 30)], rules(None, &[(Percent, 20, 60)]), 8),
            (
                100,
                vec![],
                rules(None, &[(Percent, 10, 60), (Nodes, 5, 60)]),
                90,
            ),
            (10, vec![], rules(disabled, &[(Percent, 20, 60)]), 10),
            (
                100,
                vec![],
                rules(min, &[(Percent, 10, 60), (Nodes, 15, 60)]),
                90,
            ),
        ];
        for (i, (current, changes, r, want)) in down_cases.iter().enumerate() {
            assert_eq!(
                scale_down_limit(*current, changes, r, NOW),
                *want,
                "down case {i}"
            );
        }
    }

    #[test]
    fn defaults_are_the_hpas_and_max_step_is_one_nodes_policy() {
        let up = resolve(&ScalingRules::default(), Direction::Up);
        assert_eq!(up.window_seconds, 0);
        assert_eq!(up.select, SelectPolicy::Max);
        assert_eq!(
            up.policies,
            [
                Policy {
                    type_: Nodes,
                    value: 4,
                    period_seconds: 15
                },
                Policy {
                    type_: Percent,
                    value: 100,
                    period_seconds: 15
                }
            ]
        );
        // 1 node: 4 more or double, whichever is more: 5. 10 nodes: 20.
        assert_eq!(scale_up_limit(1, &[], &up, NOW), 5);
        assert_eq!(scale_up_limit(10, &[], &up, NOW), 20);
        let down = resolve(&ScalingRules::default(), Direction::Down);
        assert_eq!(down.window_seconds, 300);
        assert_eq!(
            scale_down_limit(10, &[], &down, NOW),
            0,
            "100%: down to minReplicas"
        );
        // A window alone, as `behavior: {scaleDown: {stabilizationWindowSeconds: 5}}`.
        let windowed = resolve(&ScalingRules::window(5), Direction::Down);
        assert_eq!(
            (windowed.window_seconds, windowed.policies),
            (5, down.policies)
        );
        let step = ScalingRules {
            max_step: Some(2),
            ..Default::default()
        };
        assert_eq!(
            resolve(&step, Direction::Down).policies,
            [Policy {
                type_: Nodes,
                value: 2,
                period_seconds: 15
            }]
        );
        let both = ScalingBehavior {
            scale_down: ScalingRules {
                max_step: Some(1),
                ..ScalingRules::default().with_policy(Nodes, 1, 60)
            },
            ..Default::default()
        };
        assert!(
            validate(&both)
                .unwrap_err()
                .contains("spec.behavior.scaleDown")
        );
        assert_eq!(longest_period(&both), 60);
    }

    /// `[{type: Nodes, value: 1, periodSeconds: 15}]` takes 4 to 1 one node per period,
    /// however often decisions run, and the changes recorded carry over a restart.
    #[test]
    fn one_node_per_period_however_often_it_decides() {
        let r = resolve(
            &ScalingRules::window(0).with_policy(Nodes, 1, 15),
            Direction::Down,
        );
        let mut changes: Vec<Change> = Vec::new();
        let mut size = 4;
        let mut steps = Vec::new();
        // A decision every second for a minute, each wanting 1 node.
        for t in 0..60 {
            let now = NOW + t;
            let limit = scale_down_limit(size, &changes, &r, now).max(1);
            if limit < size {
                changes.push(Change {
                    at: now,
                    from: size,
                    to: limit,
                });
                steps.push((t, limit));
                size = limit;
            }
        }
        assert_eq!(steps, [(0, 3), (15, 2), (30, 1)]);
        // A new process that reads the changes back allows no extra step.
        let restarted = changes.clone();
        assert_eq!(scale_down_limit(3, &restarted[..1], &r, NOW + 14), 3);
        assert_eq!(next_expiry(&restarted[..1], &r, NOW + 14), Some(1));
    }
}
