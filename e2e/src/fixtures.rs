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

/// A pod in `default` that wants `pool` (nodeSelector on the pool label, tolerating the
/// virtual-node taint) and requests `cpu` and `memory`.
pub fn pod_wanting(
    name: &str,
    pool: &str,
    cpu: &str,
    memory: &str,
) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeSelector": {"nodepool.dev/pool": pool},
            "tolerations": [{"key": "nodepool.dev/virtual", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9",
                            "resources": {"requests": {"cpu": cpu, "memory": memory}}}]
        }
    }))
    .expect("a valid pod")
}
