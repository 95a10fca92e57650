//! Objects tests create, with names that never collide.
use std::collections::BTreeMap;

use shared_crd::{
    Autoscaler, AutoscalerSpec, NodePool, NodePoolRef, NodePoolSpec, NodeTemplate, ScalingBehavior,
};

/// A NodePool of `replicas` default-sized nodes (2 cpu, 8Gi, 110 pods).
pub fn nodepool(name: &str, replicas: i32) -> NodePool {
    NodePool::new(
        name,
        NodePoolSpec {
            replicas,
            template: NodeTemplate {
                labels: BTreeMap::from([("tier".to_owned(), "test".to_owned())]),
                ..Default::default()
            },
        },
    )
}

/// An Autoscaler of pool `pool` between `min` and `max` nodes.
pub fn autoscaler(name: &str, pool: &str, min: i32, max: i32) -> Autoscaler {
    Autoscaler::new(
        name,
        AutoscalerSpec {
            node_pool_ref: NodePoolRef {
                name: pool.to_owned(),
            },
            min_replicas: min,
            max_replicas: max,
            target_utilization: 80,
            behavior: ScalingBehavior::default(),
            paused: false,
        },
    )
}
