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
            disruption: None,
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

/// The status patch with which kube-scheduler marks a pod it found no node for
/// (`PodScheduled=False`, reason `Unschedulable`): for control planes without a scheduler.
pub fn unschedulable_status() -> serde_json::Value {
    serde_json::json!({"status": {"conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/0 nodes are available (marked by the test, which plays the scheduler)",
    }]}})
}

/// A pod in `default` bound to `node` (as the scheduler would bind it), labelled
/// `app=<app>`, tolerating the virtual-node taint.
pub fn pod_on(node: &str, name: &str, app: &str) -> k8s_openapi::api::core::v1::Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {
            "nodeName": node,
            "tolerations": [{"key": "nodepool.dev/virtual", "operator": "Exists", "effect": "NoSchedule"}],
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9"}]
        }
    }))
    .expect("a valid pod")
}

/// A Deployment `name` in `default` of `replicas` pods labelled `app=<name>` that want
/// `pool` (nodeSelector on the pool label, tolerating the virtual-node taint), each
/// requesting `cpu` and `memory`.
pub fn deployment(
    name: &str,
    pool: &str,
    replicas: i32,
    cpu: &str,
    memory: &str,
) -> k8s_openapi::api::apps::v1::Deployment {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "nodeSelector": {"nodepool.dev/pool": pool},
                    "tolerations": [{"key": "nodepool.dev/virtual", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9",
                        "resources": {"requests": {"cpu": cpu, "memory": memory}}}]
                }
            }
        }
    }))
    .expect("a valid Deployment")
}

/// Creates, in `default`, a PodDisruptionBudget named `name` over the pods labelled
/// `app=<app>` that allows no disruption (`maxUnavailable` 0), as policy/v1
/// where the server serves it, else policy/v1beta1 (1.20). Its status is written as the
/// disruption controller would write it, so it blocks evictions with or without one.
/// Returns the API to delete it with.
pub async fn blocking_pdb(
    client: &kube::Client,
    name: &str,
    app: &str,
) -> kube::Api<kube::api::DynamicObject> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let mut last = None;
    for version in ["v1", "v1beta1"] {
        let gvk = GroupVersionKind::gvk("policy", version, "PodDisruptionBudget");
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk));
        let pdb: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": format!("policy/{version}"), "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"maxUnavailable": 0, "selector": {"matchLabels": {"app": app}}}
        }))
        .expect("a valid PodDisruptionBudget");
        match api.create(&Default::default(), &pdb).await {
            Ok(created) => {
                let status = serde_json::json!({"status": {
                    "observedGeneration": created.metadata.generation,
                    "disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1,
                    "expectedPods": 1
                }});
                api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .expect("PodDisruptionBudget status");
                return api;
            }
            Err(kube::Error::Api(s)) if s.is_not_found() => last = Some(s),
            Err(e) => panic!("creating PodDisruptionBudget {name}: {e}"),
        }
    }
    panic!("the server serves no PodDisruptionBudget: {last:?}")
}
