//! The part of a NodePool's status nodepool-operator owns, computed from what it
//! observes (never copied from the cached status).
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube_core::ResourceExt;
use serde::Serialize;
use shared_crd::condition::{self, Condition, ConditionStatus};
use shared_crd::{NodePool, condition_type, reason};

use crate::nodes::is_ready;
use crate::template::{hash_of, template_hash};

/// Why the pool cannot converge right now, if something stops it.
#[derive(Clone, Debug, PartialEq)]
pub enum Blocker {
    AtQuota { max_nodes: u32 },
    ProviderError(String),
    InvalidSpec(String),
}

impl Blocker {
    /// The condition reason it shows as.
    pub fn reason(&self) -> &'static str {
        match self {
            Blocker::AtQuota { .. } => reason::AT_QUOTA,
            Blocker::ProviderError(_) => reason::PROVIDER_ERROR,
            Blocker::InvalidSpec(_) => reason::INVALID_SPEC,
        }
    }
}

/// The part of a NodePool's status nodepool-operator owns, computed from what it
/// observes (never copied from the cached status), as sent with server-side apply.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolStatus {
    pub replicas: i32,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
    pub selector: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Only in the reconcile that scaled, under its own field manager.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// `Ready`, `Scaling` and `Disrupting`: this operator's conditions only.
    pub conditions: Vec<Condition>,
}

/// What the disruption plan says for the status: the size the pool is driven to now
/// (`replicas` plus the replacements under way), the `Disrupting` condition, and the hash
/// of the current template (computed once per reconcile, for the plan and `updatedReplicas`).
#[derive(Clone, Debug, PartialEq)]
pub struct Disrupting {
    pub desired: i32,
    pub condition: (ConditionStatus, &'static str, String),
    pub template_hash: String,
}

impl Disrupting {
    /// No disruption planned (the spec is invalid): the pool is driven to `replicas`.
    pub fn none(pool: &NodePool, blocker: Option<&Blocker>) -> Self {
        let condition = match blocker {
            Some(Blocker::InvalidSpec(msg)) => {
                (ConditionStatus::False, reason::INVALID_SPEC, msg.clone())
            }
            _ => (ConditionStatus::False, reason::UP_TO_DATE, String::new()),
        };
        Self {
            desired: pool.spec.replicas.max(0),
            condition,
            template_hash: template_hash(&pool.spec.template),
        }
    }
}

/// The status nodepool-operator reports for `pool` with these (live) nodes. Transition
/// times are carried over from the conditions the pool shows when the status is the same.
pub fn desired_status(
    pool: &NodePool,
    nodes: &[&Node],
    blocker: Option<&Blocker>,
    disrupting: &Disrupting,
    now: Time,
) -> PoolStatus {
    let previous = pool
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let replicas = pool.spec.replicas.max(0);
    // The size the pool is driven to: `replicas`, plus replacements under way.
    let desired = disrupting.desired;
    let current = nodes.len() as i32;
    let ready = nodes.iter().filter(|n| is_ready(n)).count() as i32;
    let updated = nodes
        .iter()
        .filter(|n| hash_of(n) == Some(disrupting.template_hash.as_str()))
        .count() as i32;
    let generation = pool.metadata.generation;

    let ready_condition = match blocker {
        Some(Blocker::InvalidSpec(msg)) => {
            (ConditionStatus::False, reason::INVALID_SPEC, msg.clone())
        }
        // A rollout keeps `replicas` nodes Ready: the pool stays Ready through it.
        _ if ready >= replicas && current == desired => (
            ConditionStatus::True,
            reason::NODES_READY,
            format!("{} of {replicas} nodes ready", ready.min(replicas)),
        ),
        _ => (
            ConditionStatus::False,
            reason::NODES_NOT_READY,
            format!("{} of {replicas} nodes ready", ready.min(replicas)),
        ),
    };
    let scaling_condition = match blocker {
        Some(Blocker::InvalidSpec(msg)) => {
            (ConditionStatus::False, reason::INVALID_SPEC, msg.clone())
        }
        Some(Blocker::AtQuota { max_nodes }) => (
            ConditionStatus::False,
            reason::AT_QUOTA,
            format!("provider quota of {max_nodes} nodes reached: {current} of {desired} nodes"),
        ),
        Some(Blocker::ProviderError(msg)) => {
            (ConditionStatus::False, reason::PROVIDER_ERROR, msg.clone())
        }
        None if current < desired => (
            ConditionStatus::True,
            reason::SCALING_UP,
            format!("{current} -> {desired} nodes"),
        ),
        None if current > desired => (
            ConditionStatus::True,
            reason::SCALING_DOWN,
            format!("{current} -> {desired} nodes"),
        ),
        None => (
            ConditionStatus::False,
            reason::STABLE,
            format!("{current} nodes"),
        ),
    };
    let (status, why, message) = &disrupting.condition;
    let disrupting_condition = (*status, *why, message.clone());
    let conditions = [
        (condition_type::READY, ready_condition),
        (condition_type::SCALING, scaling_condition),
        (condition_type::DISRUPTING, disrupting_condition),
    ]
    .into_iter()
    .map(|(type_, (status, why, message))| {
        let new = Condition::new(type_, status, why, message, generation, now.clone());
        condition::carry_transition_time(new, previous)
    })
    .collect();
    PoolStatus {
        replicas: current,
        ready_replicas: ready,
        updated_replicas: updated,
        selector: NodePool::node_selector(&pool.name_any()),
        observed_generation: generation,
        last_scale_time: None,
        conditions,
    }
}

/// The reason of one of the pool's conditions as the cache shows it.
pub fn shown_reason<'a>(pool: &'a NodePool, type_: &str) -> Option<&'a str> {
    pool.status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, type_))
        .map(|c| c.reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::tests::{node, now, pool};
    use k8s_openapi::jiff::Timestamp;
    use shared_crd::NodePoolStatus;

    #[test]
    fn status_counts_nodes_and_reports_scaling_up() {
        let (a, b) = (node("a", 1, true), node("b", 2, false));
        let s = desired_status(
            &pool(3),
            &[&a, &b],
            None,
            &Disrupting::none(&pool(3), None),
            now(),
        );
        assert_eq!((s.replicas, s.ready_replicas), (2, 1));
        assert_eq!(s.selector, "nodepool.dev/pool=p");
        assert_eq!(s.observed_generation, Some(7));
        assert_eq!(
            s.last_scale_time, None,
            "only the reconcile that scaled sets it"
        );
        let scaling = condition::find(&s.conditions, "Scaling").unwrap();
        assert_eq!(
            (scaling.status, scaling.reason.as_str()),
            (ConditionStatus::True, "ScalingUp")
        );
        let ready = condition::find(&s.conditions, "Ready").unwrap();
        assert_eq!(
            (ready.status, ready.message.as_str()),
            (ConditionStatus::False, "1 of 3 nodes ready")
        );
    }

    #[test]
    fn recomputed_later_with_nothing_changed_the_status_is_the_same() {
        let (a, b) = (node("a", 1, true), node("b", 2, true));
        let mut p = pool(2);
        let s = desired_status(&p, &[&a, &b], None, &Disrupting::none(&p, None), now());
        assert_eq!(
            condition::find(&s.conditions, "Ready").unwrap().status,
            ConditionStatus::True
        );
        assert_eq!(
            condition::find(&s.conditions, "Scaling").unwrap().reason,
            "Stable"
        );
        // The server stores it; later, the same observation gives the same status.
        p.status = Some(serde_json::from_value(serde_json::to_value(&s).unwrap()).unwrap());
        let later = Time(Timestamp::from_second(2_000).unwrap());
        assert_eq!(
            desired_status(&p, &[&a, &b], None, &Disrupting::none(&p, None), later),
            s
        );
    }

    #[test]
    fn only_this_operators_conditions_are_in_the_status_it_sends() {
        let mut p = pool(0);
        p.status = Some(NodePoolStatus {
            conditions: vec![Condition::new(
                "Theirs",
                ConditionStatus::True,
                "X",
                "",
                None,
                now(),
            )],
            ..Default::default()
        });
        let s = desired_status(&p, &[], None, &Disrupting::none(&p, None), now());
        let types: Vec<_> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Scaling", "Disrupting"]);
    }

    #[test]
    fn blockers_show_in_the_scaling_condition() {
        let a = node("a", 1, true);
        let s = desired_status(
            &pool(3),
            &[&a],
            Some(&Blocker::AtQuota { max_nodes: 1 }),
            &Disrupting::none(&pool(3), None),
            now(),
        );
        let c = condition::find(&s.conditions, "Scaling").unwrap();
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::False, "AtQuota")
        );
        assert!(c.message.contains("quota of 1 nodes"));
        let s = desired_status(
            &pool(3),
            &[],
            Some(&Blocker::InvalidSpec("bad cpu".into())),
            &Disrupting::none(&pool(3), Some(&Blocker::InvalidSpec("bad cpu".into()))),
            now(),
        );
        let c = condition::find(&s.conditions, "Ready").unwrap();
        assert_eq!(
            (c.reason.as_str(), c.message.as_str()),
            ("InvalidSpec", "bad cpu")
        );
    }
}
