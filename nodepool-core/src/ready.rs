//! The `NodePoolReady` condition nodepool-operator owns in each Autoscaler's status:
//! whether the pool the Autoscaler targets can get nodes.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use shared_crd::condition::{self, Condition, ConditionStatus};
use shared_crd::{NodePool, condition_type, reason};

/// The `NodePoolReady` condition for an Autoscaler that targets `pool`.
pub fn nodepool_ready(
    pool_name: &str,
    pool: Option<&NodePool>,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    let (status, why, message) = match pool {
        None => (
            ConditionStatus::False,
            reason::NOT_FOUND,
            format!("NodePool {pool_name} does not exist"),
        ),
        Some(p) if p.metadata.deletion_timestamp.is_some() => (
            ConditionStatus::False,
            reason::DELETING,
            format!("NodePool {pool_name} is being deleted"),
        ),
        Some(p) => match blocking_condition(p) {
            Some(c) => (ConditionStatus::False, c.reason.as_str(), c.message.clone()),
            None => (
                ConditionStatus::True,
                reason::READY,
                format!("NodePool {pool_name} can get nodes"),
            ),
        },
    };
    Condition::new(
        condition_type::NODEPOOL_READY,
        status,
        why,
        message,
        generation,
        now,
    )
}

/// The pool's `Scaling` condition when it says the pool cannot get nodes.
pub fn blocking_condition(pool: &NodePool) -> Option<&Condition> {
    pool.status
        .as_ref()
        .and_then(|s| condition::find(&s.conditions, condition_type::SCALING))
        .filter(|c| {
            [
                reason::AT_QUOTA,
                reason::PROVIDER_ERROR,
                reason::INVALID_SPEC,
            ]
            .contains(&c.reason.as_str())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared_crd::{NodePoolSpec, NodePoolStatus, NodeTemplate};

    fn t() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1).unwrap())
    }

    fn pool_with_scaling(reason: &str) -> NodePool {
        let mut p = NodePool::new(
            "p",
            NodePoolSpec {
                replicas: 1,
                template: NodeTemplate::default(),
                disruption: None,
            },
        );
        p.status = Some(NodePoolStatus {
            conditions: vec![Condition::new(
                "Scaling",
                ConditionStatus::False,
                reason,
                "why",
                None,
                t(),
            )],
            ..Default::default()
        });
        p
    }

    #[test]
    fn missing_pool_is_not_found() {
        let c = nodepool_ready("p", None, Some(1), t());
        assert_eq!(
            (c.status, c.reason.as_str()),
            (ConditionStatus::False, "NotFound")
        );
        assert_eq!(c.type_, "NodePoolReady");
    }

    #[test]
    fn quota_and_provider_errors_carry_over_from_the_pool() {
        for r in ["AtQuota", "ProviderError", "InvalidSpec"] {
            let c = nodepool_ready("p", Some(&pool_with_scaling(r)), None, t());
            assert_eq!(
                (c.status, c.reason.as_str(), c.message.as_str()),
                (ConditionStatus::False, r, "why")
            );
        }
    }

    #[test]
    fn a_healthy_or_stable_pool_is_ready_and_a_deleting_one_is_not() {
        let c = nodepool_ready("p", Some(&pool_with_scaling("Stable")), None, t());
        assert_eq!(c.status, ConditionStatus::True);
        let mut deleting = pool_with_scaling("Stable");
        deleting.metadata.deletion_timestamp = Some(t());
        assert_eq!(
            nodepool_ready("p", Some(&deleting), None, t()).reason,
            "Deleting"
        );
    }
}
