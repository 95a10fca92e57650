//! The part of an Autoscaler's status autoscaler-operator owns, and the Warning events a
//! new status calls for. Computed from what was observed and decided, never copied from
//! the cached status; each condition's transition time is carried over from the one shown
//! when its status did not change.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;
use shared_crd::condition::{self, Condition, ConditionStatus};
use shared_crd::{Autoscaler, ScaleEvent, condition_type, event_reason, reason};

use crate::check::Blocked;
use crate::decide::Decision;
use crate::demand::Unfit;
use crate::policy::Change;

/// autoscaler-operator's fields of an Autoscaler's status, as sent with server-side apply
/// (`None` fields left out).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Only from the reconcile that scaled, under its own field manager.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_decision: Option<String>,
    /// Only from the reconcile that scales, under the same manager: the changes within the
    /// longest policy period, this one last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_events: Option<Vec<ScaleEvent>>,
    /// `Active`, `AbleToScale`, `ScalingLimited`, `PodsFit`; never `NodePoolReady`.
    pub conditions: Vec<Condition>,
}

/// A Warning event to publish once the status that calls for it is written.
#[derive(Clone, Debug, PartialEq)]
pub struct Warning {
    pub reason: &'static str,
    pub note: String,
}

/// The status after a decision for `a` (as cached); `scaled`: this reconcile wrote the
/// pool's new size, so it records when and why.
pub fn decided(
    a: &Autoscaler,
    decision: &Decision,
    unfit: &[Unfit],
    scaled: bool,
    at: Time,
) -> OwnStatus {
    let pool_name = &a.spec.node_pool_ref.name;
    let g = a.metadata.generation;
    let own = |type_, status, why: &str, message: String| {
        Condition::new(type_, status, why, message, g, at.clone())
    };
    let conditions = vec![
        if a.spec.paused {
            own(
                condition_type::ACTIVE,
                ConditionStatus::False,
                reason::PAUSED,
                "paused".to_owned(),
            )
        } else {
            own(
                condition_type::ACTIVE,
                ConditionStatus::True,
                reason::RECOMMENDING,
                format!("recommending a size for NodePool {pool_name} from its pods' requests"),
            )
        },
        own(
            condition_type::ABLE_TO_SCALE,
            ConditionStatus::True,
            reason::READY_FOR_NEW_SCALE,
            format!("NodePool {pool_name} found"),
        ),
        match &decision.limited {
            Some((why, message)) => own(
                condition_type::SCALING_LIMITED,
                ConditionStatus::True,
                why,
                message.clone(),
            ),
            None => own(
                condition_type::SCALING_LIMITED,
                ConditionStatus::False,
                reason::WITHIN_BOUNDS,
                "desired size within bounds".to_owned(),
            ),
        },
        pods_fit(unfit, pool_name, own),
    ];
    OwnStatus {
        desired_replicas: Some(decision.desired),
        observed_generation: g,
        last_scale_time: scaled.then(|| at.clone()),
        last_decision: scaled.then(|| decision.explanation.clone()),
        scale_events: None,
        conditions: carry_times(conditions, a),
    }
}

/// The changes recorded for `a`: its status's, or `also`, the list this process last wrote
/// (the server has it; the cache may not show it yet), whichever ends later.
fn latest<'a>(a: &'a Autoscaler, also: &'a [ScaleEvent]) -> &'a [ScaleEvent] {
    let shown = a
        .status
        .as_ref()
        .map(|s| s.scale_events.as_slice())
        .unwrap_or_default();
    let end = |list: &[ScaleEvent]| list.last().map(|e| e.time.0);
    if end(also) > end(shown) { also } else { shown }
}

/// The changes of the pool's size the policies count (see [`latest`]).
pub fn changes(a: &Autoscaler, also: &[ScaleEvent]) -> Vec<Change> {
    latest(a, also)
        .iter()
        .map(|e| Change {
            at: e.time.0.as_second(),
            from: e.from,
            to: e.to,
        })
        .collect()
}

/// Whether the last change recorded is `from` -> `to`: the pool write of a change already
/// recorded is being retried (after a 409, say), and is not recorded again.
pub fn records(a: &Autoscaler, also: &[ScaleEvent], from: i32, to: i32) -> bool {
    latest(a, also)
        .last()
        .is_some_and(|e| e.from == from && e.to == to)
}

/// The time a change made at `now` is recorded at: the next whole second.
///
/// `scaleEvents` times are `metav1.Time`, whole seconds on the wire, and the policies
/// read the clock in whole seconds. Truncated, a change made at 10.9 s would read back
/// as 10 s and leave a 1 s period at 11.0 s, 0.1 s after it was made (the timeline showed
/// two 1-node steps 72 ms apart). Rounded up, the recorded time is never before the
/// change, so a period is never shorter than its `periodSeconds`.
pub fn recorded_at(now: k8s_openapi::jiff::Timestamp) -> Time {
    let whole = now.as_second();
    let up = if now.subsec_nanosecond() > 0 {
        whole + 1
    } else {
        whole
    };
    Time(k8s_openapi::jiff::Timestamp::from_second(up).unwrap_or(now))
}

/// The changes to record for `from` -> `to` at `at`: those still within `keep` seconds
/// (the longest policy period), then this one. A last change that starts from `from` too
/// never took effect (the pool is still there: its write failed, and this decision
/// differs): it is replaced, not counted beside this one. Counting it would hold the pool
/// back a whole period: `make bench` showed it, 16 s to scale up under `lazy`'s 409s.
pub fn with_change(
    a: &Autoscaler,
    also: &[ScaleEvent],
    from: i32,
    to: i32,
    at: Time,
    keep: i64,
) -> Vec<ScaleEvent> {
    let now = at.0.as_second();
    let mut events: Vec<ScaleEvent> = latest(a, also)
        .iter()
        .filter(|e| e.time.0.as_second() + keep > now)
        .cloned()
        .collect();
    if events.last().is_some_and(|e| e.from == from) {
        events.pop();
    }
    events.push(ScaleEvent { time: at, from, to });
    events
}

/// What a written [`decided`] status newly shows: a limit, or pods that name the pool but
/// cannot run on it.
pub fn decided_warnings(a: &Autoscaler, decision: &Decision, unfit: &[Unfit]) -> Vec<Warning> {
    let mut warnings = Vec::new();
    if let Some((why, message)) = &decision.limited
        && shown(a, condition_type::SCALING_LIMITED)
            != Some((ConditionStatus::True, why.to_string()))
    {
        warnings.push(Warning {
            reason: event_reason::SCALING_LIMITED,
            note: format!("{why}: {message}"),
        });
    }
    if let Some(reason) = unfit_reason(unfit)
        && shown(a, condition_type::PODS_FIT) != Some((ConditionStatus::False, reason.to_owned()))
    {
        let pool_name = &a.spec.node_pool_ref.name;
        let which = if unfit.len() == 1 {
            "this pod"
        } else {
            "these pods"
        };
        let pods: Vec<String> = unfit.iter().map(ToString::to_string).collect();
        warnings.push(Warning {
            reason,
            note: format!(
                "no node of NodePool {pool_name} can run {which}: {}",
                pods.join(", ")
            ),
        });
    }
    warnings
}

/// The status of an Autoscaler that cannot act: every condition it owns says why.
pub fn blocked(a: &Autoscaler, why: &Blocked, at: Time) -> OwnStatus {
    let g = a.metadata.generation;
    let conditions = [
        condition_type::ACTIVE,
        condition_type::ABLE_TO_SCALE,
        condition_type::SCALING_LIMITED,
    ]
    .into_iter()
    .map(|t| {
        Condition::new(
            t,
            ConditionStatus::False,
            why.reason,
            why.message.clone(),
            g,
            at.clone(),
        )
    })
    .collect();
    OwnStatus {
        desired_replicas: None,
        observed_generation: g,
        last_scale_time: None,
        last_decision: None,
        scale_events: None,
        conditions: carry_times(conditions, a),
    }
}

/// Whether a written [`blocked`] status is news: `Active` did not show this reason yet.
pub fn newly_blocked(a: &Autoscaler, why: &Blocked) -> bool {
    shown(a, condition_type::ACTIVE) != Some((ConditionStatus::False, why.reason.into()))
}

/// The reason of `PodsFit=False`, if a pod names the pool but cannot run on it:
/// `PodTooLarge` when every such pod is too large for a node, else `PodDoesNotMatch`.
pub fn unfit_reason(unfit: &[Unfit]) -> Option<&'static str> {
    if unfit.is_empty() {
        None
    } else if unfit.iter().all(|u| u.too_large) {
        Some(reason::POD_TOO_LARGE)
    } else {
        Some(reason::POD_DOES_NOT_MATCH)
    }
}

/// `PodsFit`: True, or False naming (up to five of) the pods that name the pool but cannot
/// run on its nodes.
fn pods_fit(
    unfit: &[Unfit],
    pool_name: &str,
    own: impl Fn(&'static str, ConditionStatus, &str, String) -> Condition,
) -> Condition {
    let Some(reason) = unfit_reason(unfit) else {
        return own(
            condition_type::PODS_FIT,
            ConditionStatus::True,
            reason::ALL_FIT,
            format!("every pod that names NodePool {pool_name} can run on its nodes"),
        );
    };
    let shown: Vec<String> = unfit.iter().take(5).map(ToString::to_string).collect();
    let more = unfit.len().saturating_sub(shown.len());
    own(
        condition_type::PODS_FIT,
        ConditionStatus::False,
        reason,
        format!(
            "{} pod(s) name NodePool {pool_name} but no node of it can run them, and they are \
             left out of the demand: {}{}",
            unfit.len(),
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        ),
    )
}

/// Keeps each condition's transition time when its status is the one `a` shows.
fn carry_times(conditions: Vec<Condition>, a: &Autoscaler) -> Vec<Condition> {
    let shown = a
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    conditions
        .into_iter()
        .map(|c| condition::carry_transition_time(c, shown))
        .collect()
}

/// A condition's status and reason as `a` (the cached copy) shows them.
pub fn shown(a: &Autoscaler, type_: &str) -> Option<(ConditionStatus, String)> {
    let c = condition::find(&a.status.as_ref()?.conditions, type_)?;
    Some((c.status, c.reason.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    fn t(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    fn autoscaler() -> Autoscaler {
        let mut a: Autoscaler = serde_json::from_value(json!({
            "apiVersion": "nodepool.dev/v1alpha1", "kind": "Autoscaler",
            "metadata": {"name": "a", "generation": 3},
            "spec": {"nodePoolRef": {"name": "p"}, "minReplicas": 1, "maxReplicas": 3}
        }))
        .unwrap();
        a.metadata.generation = Some(3);
        a
    }

    fn decision(limited: Option<(&'static str, &str)>) -> Decision {
        Decision {
            desired: 3,
            recommendation: 3,
            explanation: "because".into(),
            limited: limited.map(|(r, m)| (r, m.to_owned())),
            recheck_in_seconds: None,
        }
    }

    fn unfit(pod: &str, too_large: bool) -> Unfit {
        Unfit {
            pod: pod.into(),
            why: "why".into(),
            too_large,
        }
    }

    fn types(status: &OwnStatus) -> Vec<(&str, ConditionStatus, &str)> {
        status
            .conditions
            .iter()
            .map(|c| (c.type_.as_str(), c.status, c.reason.as_str()))
            .collect()
    }

    #[test]
    fn a_decision_shows_in_four_conditions_and_a_scale_records_when_and_why() {
        let s = decided(&autoscaler(), &decision(None), &[], true, t(10));
        assert_eq!(
            types(&s),
            [
                ("Active", ConditionStatus::True, "Recommending"),
                ("AbleToScale", ConditionStatus::True, "ReadyForNewScale"),
                ("ScalingLimited", ConditionStatus::False, "WithinBounds"),
                ("PodsFit", ConditionStatus::True, "AllFit"),
            ]
        );
        assert_eq!(s.desired_replicas, Some(3));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.last_scale_time, Some(t(10)));
        assert_eq!(s.last_decision.as_deref(), Some("because"));
        let unscaled = decided(&autoscaler(), &decision(None), &[], false, t(10));
        assert_eq!(
            (unscaled.last_scale_time, unscaled.last_decision),
            (None, None)
        );
    }

    #[test]
    fn pods_that_cannot_run_are_named_up_to_five() {
        let many: Vec<Unfit> = (0..7).map(|i| unfit(&format!("ns/p{i}"), true)).collect();
        let s = decided(&autoscaler(), &decision(None), &many, false, t(1));
        let c = condition::find(&s.conditions, "PodsFit").unwrap();
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::False, "PodTooLarge")
        );
        assert!(
            c.message.contains("ns/p4 (why) and 2 more"),
            "{}",
            c.message
        );
        assert!(!c.message.contains("ns/p5"), "{}", c.message);
        let mixed = [unfit("ns/a", true), unfit("ns/b", false)];
        assert_eq!(unfit_reason(&mixed), Some("PodDoesNotMatch"));
        assert_eq!(unfit_reason(&[]), None);
    }

    #[test]
    fn transition_times_are_kept_while_a_status_holds() {
        let mut a = autoscaler();
        let first = decided(&a, &decision(None), &[], false, t(10));
        a.status = Some(serde_json::from_value(serde_json::to_value(&first).unwrap()).unwrap());
        let limited = decision(Some((reason::TOO_MANY_REPLICAS, "5 nodes needed")));
        let later = decided(&a, &limited, &[], false, t(20));
        let time = |s: &OwnStatus, type_| {
            condition::find(&s.conditions, type_)
                .unwrap()
                .last_transition_time
                .clone()
        };
        assert_eq!(time(&later, "Active"), t(10), "still True");
        assert_eq!(time(&later, "ScalingLimited"), t(20), "False -> True");
    }

    #[test]
    fn warnings_only_for_what_the_status_did_not_show_yet() {
        let mut a = autoscaler();
        let limited = decision(Some((reason::TOO_MANY_REPLICAS, "5 nodes needed")));
        let pods = [unfit("ns/big", true)];
        let warnings = decided_warnings(&a, &limited, &pods);
        assert_eq!(
            warnings,
            [
                Warning {
                    reason: "ScalingLimited",
                    note: "TooManyReplicas: 5 nodes needed".into()
                },
                Warning {
                    reason: "PodTooLarge",
                    note: "no node of NodePool p can run this pod: ns/big (why)".into()
                },
            ]
        );
        // Once written and shown, the same decision is no news.
        let status = decided(&a, &limited, &pods, false, t(1));
        a.status = Some(serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap());
        assert!(decided_warnings(&a, &limited, &pods).is_empty());
    }

    #[test]
    fn a_blocked_autoscaler_says_why_in_each_of_its_conditions() {
        let mut a = autoscaler();
        let why = Blocked {
            reason: reason::NOT_FOUND,
            message: "NodePool p does not exist".into(),
        };
        let s = blocked(&a, &why, t(5));
        assert_eq!(
            types(&s),
            [
                ("Active", ConditionStatus::False, "NotFound"),
                ("AbleToScale", ConditionStatus::False, "NotFound"),
                ("ScalingLimited", ConditionStatus::False, "NotFound"),
            ]
        );
        assert_eq!(s.desired_replicas, None);
        assert!(newly_blocked(&a, &why));
        a.status = Some(serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap());
        assert!(!newly_blocked(&a, &why));
    }

    #[test]
    fn a_change_holds_its_whole_period_on_a_clock_of_whole_seconds() {
        use crate::policy::{Direction, resolve, scale_down_limit};
        let rules = resolve(
            &shared_crd::ScalingRules::default().with_policy(shared_crd::PolicyType::Nodes, 1, 1),
            Direction::Down,
        );
        let at = |ms| k8s_openapi::jiff::Timestamp::from_millisecond(ms).unwrap();
        // 3 -> 2 made at 10.9 s, written to the status and read back (as after a restart).
        let made = ScaleEvent {
            time: recorded_at(at(10_900)),
            from: 3,
            to: 2,
        };
        let read_back: ScaleEvent =
            serde_json::from_value(serde_json::to_value(&made).unwrap()).unwrap();
        let mut a = autoscaler();
        a.status = Some(shared_crd::AutoscalerStatus {
            scale_events: vec![read_back],
            ..Default::default()
        });
        let changes = changes(&a, &[]);
        let limit = |ms| scale_down_limit(2, &changes, &rules, at(ms).as_second());
        assert_eq!(limit(11_200), 2, "0.3 s after the change: no second step");
        assert_eq!(
            limit(11_999),
            2,
            "1.099 s after: still held, a period may run a second long"
        );
        assert_eq!(limit(12_000), 1, "1.1 s after: over");
        assert_eq!(recorded_at(at(12_000)), Time(at(12_000)), "whole already");
    }

    #[test]
    fn the_changes_recorded_are_read_back_pruned_and_not_counted_twice() {
        let mut a = autoscaler();
        let event = |at, from, to| ScaleEvent {
            time: t(at),
            from,
            to,
        };
        a.status = Some(shared_crd::AutoscalerStatus {
            scale_events: vec![event(100, 4, 3), event(110, 3, 2)],
            ..Default::default()
        });
        // The status's list, or the one this process wrote last if it ends later.
        assert_eq!(changes(&a, &[]).len(), 2);
        let written = [event(100, 4, 3), event(110, 3, 2), event(120, 2, 1)];
        let changes = changes(&a, &written);
        assert_eq!(changes.len(), 3);
        assert_eq!((changes[2].at, changes[2].from, changes[2].to), (120, 2, 1));
        // A pool write being retried for the change last recorded is not a new change,
        // whether the status shows it yet or only this process knows it.
        assert!(records(&a, &[], 3, 2));
        assert!(!records(&a, &[], 2, 1));
        assert!(records(&a, &written, 2, 1));
        // A new change keeps what the longest period (15 s here) still counts.
        let next = with_change(&a, &[], 2, 1, t(120), 15);
        assert_eq!(next, [event(110, 3, 2), event(120, 2, 1)]);
        // 2 -> 1 recorded, its pool write refused; the next decision is 2 -> 0 instead:
        // it replaces the change that never took effect.
        let replaced = with_change(&a, &written, 2, 0, t(121), 60);
        assert_eq!(
            replaced,
            [event(100, 4, 3), event(110, 3, 2), event(121, 2, 0)]
        );
    }
}
