//! What must hold before the autoscaler decides anything for an Autoscaler: checked in
//! order, and the first that fails is reported on the Autoscaler (its `Active`,
//! `AbleToScale` and `ScalingLimited` conditions and a Warning event), with no write to any
//! pool.
use shared_crd::{AutoscalerSpec, NodePool, reason};

use crate::resources::Capacity;

/// Why an Autoscaler cannot act.
#[derive(Clone, Debug, PartialEq)]
pub struct Blocked {
    pub reason: &'static str,
    pub message: String,
}

/// The capacity of one of the target pool's nodes, or why the Autoscaler cannot act:
/// its spec is inconsistent, the pool (`pool`, from the cache) does not exist, another
/// Autoscaler (`holder`) keeps it, or its template cannot be read.
pub fn check(
    spec: &AutoscalerSpec,
    pool: Option<&NodePool>,
    holder: Option<String>,
) -> Result<Capacity, Blocked> {
    let pool_name = &spec.node_pool_ref.name;
    validate(spec).map_err(|message| Blocked {
        reason: reason::INVALID_SPEC,
        message,
    })?;
    let pool = pool.ok_or_else(|| Blocked {
        reason: reason::NOT_FOUND,
        message: format!("NodePool {pool_name} does not exist"),
    })?;
    if let Some(holder) = holder {
        return Err(Blocked {
            reason: reason::POOL_ALREADY_TARGETED,
            message: format!("NodePool {pool_name} is already scaled by Autoscaler {holder}"),
        });
    }
    pool.spec.template.capacity.values().map_err(|e| Blocked {
        reason: reason::INVALID_NODE_POOL,
        message: format!("NodePool {pool_name}: {e}"),
    })
}

/// Checks the 1.20 server cannot do (no CEL there): the spec's own consistency.
pub fn validate(spec: &AutoscalerSpec) -> Result<(), String> {
    if spec.min_replicas > spec.max_replicas {
        return Err(format!(
            "spec.minReplicas ({}) must not exceed spec.maxReplicas ({})",
            spec.min_replicas, spec.max_replicas
        ));
    }
    crate::policy::validate(&spec.behavior)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::tests::spec;
    use crate::resources::tests::NODE;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use shared_crd::{NodePoolSpec, NodeTemplate};

    #[test]
    fn min_above_max_is_invalid() {
        assert!(validate(&spec(1, 3)).is_ok());
        assert!(
            validate(&spec(5, 2))
                .unwrap_err()
                .contains("minReplicas (5) must not exceed spec.maxReplicas (2)")
        );
    }

    fn pool(cpu: &str) -> NodePool {
        let mut template = NodeTemplate::default();
        template.capacity.cpu = Quantity(cpu.into());
        NodePool::new(
            "p",
            NodePoolSpec {
                replicas: 1,
                template,
                disruption: None,
            },
        )
    }

    #[test]
    fn the_first_check_that_fails_is_the_reason() {
        let reason = |r: Result<Capacity, Blocked>| r.map_err(|b| b.reason);
        assert_eq!(reason(check(&spec(1, 3), Some(&pool("2")), None)), Ok(NODE));
        assert_eq!(
            reason(check(&spec(4, 3), None, Some("x".into()))),
            Err(reason::INVALID_SPEC)
        );
        assert_eq!(
            reason(check(&spec(1, 3), None, Some("x".into()))),
            Err(reason::NOT_FOUND)
        );
        let held = check(&spec(1, 3), Some(&pool("lots")), Some("first".into()));
        assert_eq!(
            held,
            Err(Blocked {
                reason: reason::POOL_ALREADY_TARGETED,
                message: "NodePool p is already scaled by Autoscaler first".into()
            })
        );
        let bad = check(&spec(1, 3), Some(&pool("lots")), None).unwrap_err();
        assert_eq!(bad.reason, reason::INVALID_NODE_POOL);
        assert!(bad.message.contains("capacity.cpu"), "{}", bad.message);
    }
}
