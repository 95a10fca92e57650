//! nodepool-operator against a real API server: nodes follow spec.replicas, a deleted
//! node comes back, deletion cleans up, bad input stays contained, and the
//! NodePoolReady condition lands on Autoscalers beside the autoscaler's own.
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use nodepool_core::nodes::is_owned_by;
use nodepool_core::nodes::is_ready;
use serde_json::json;
use shared_crd::condition::{ConditionStatus, find};
use shared_crd::{Autoscaler, NodePool};
use support::{config, nodes_of, operator};
use test_support::{eventually, fixtures, shared, unique_name};

const CONVERGE: Duration = Duration::from_secs(30);

async fn setup() -> (Client, Api<NodePool>, Api<Node>) {
    operator(config(None));
    let client = shared().client().await.unwrap();
    (client.clone(), Api::all(client.clone()), Api::all(client))
}

async fn scale(pools: &Api<NodePool>, name: &str, replicas: i32) {
    let patch = json!({"spec": {"replicas": replicas}});
    pools
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// Waits until the pool has exactly `n` Ready nodes and its status says so.
async fn converged(pools: &Api<NodePool>, nodes: &Api<Node>, name: &str, n: usize) -> Vec<Node> {
    eventually(&format!("{name} at {n} ready nodes"), CONVERGE, || async {
        let list = nodes_of(nodes, name).await;
        let ready = list.iter().filter(|n| is_ready(n)).count();
        let pool = pools.get(name).await.map_err(|e| e.to_string())?;
        let status = pool.status.clone().unwrap_or_default();
        let ok = list.len() == n
            && ready == n
            && status.replicas == n as i32
            && status.ready_replicas == n as i32
            && status.observed_generation == pool.metadata.generation;
        if ok {
            Ok(list)
        } else {
            Err(format!(
                "{} nodes, {ready} ready, status {status:?}",
                list.len()
            ))
        }
    })
    .await
}

#[tokio::test]
async fn scales_0_3_1_0_with_exactly_the_right_nodes() {
    let (_, pools, nodes) = setup().await;
    let name = unique_name("scale");
    let created = pools
        .create(&PostParams::default(), &fixtures::nodepool(&name, 0))
        .await
        .unwrap();
    converged(&pools, &nodes, &name, 0).await;

    scale(&pools, &name, 3).await;
    let three = converged(&pools, &nodes, &name, 3).await;
    let pool = pools.get(&name).await.unwrap();
    for node in &three {
        assert!(
            node.name_any().starts_with(&format!("{name}-")),
            "{}",
            node.name_any()
        );
        assert_eq!(
            node.labels().get("tier").map(String::as_str),
            Some("test"),
            "template label"
        );
        assert!(is_owned_by(node, &pool), "owner reference to the pool");
        let spec = node.spec.clone().unwrap();
        assert!(
            spec.taints
                .unwrap_or_default()
                .iter()
                .any(|t| t.key == "nodepool.dev/virtual" && t.effect == "NoSchedule"),
            "virtual taint"
        );
        let capacity = node.status.clone().unwrap().capacity.unwrap();
        assert_eq!(capacity.get("cpu"), Some(&Quantity("2".into())));
        assert_eq!(capacity.get("pods"), Some(&Quantity("110".into())));
    }
    let status = pool.status.unwrap();
    assert_eq!(
        status.selector.as_deref(),
        Some(&*format!("nodepool.dev/pool={name}"))
    );
    let ready = find(&status.conditions, "Ready").unwrap();
    assert_eq!(ready.status, ConditionStatus::True);
    assert!(status.last_scale_time.is_some());

    scale(&pools, &name, 1).await;
    let one = converged(&pools, &nodes, &name, 1).await;
    assert!(
        three.iter().any(|n| n.name_any() == one[0].name_any()),
        "the survivor is one of the three"
    );

    scale(&pools, &name, 0).await;
    converged(&pools, &nodes, &name, 0).await;
    assert_eq!(
        pools.get(&name).await.unwrap().metadata.uid,
        created.metadata.uid
    );
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_deleted_node_is_replaced() {
    let (_, pools, nodes) = setup().await;
    let name = unique_name("replace");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&name, 2))
        .await
        .unwrap();
    let before = converged(&pools, &nodes, &name, 2).await;
    let victim = before[0].name_any();
    nodes
        .delete(&victim, &DeleteParams::default())
        .await
        .unwrap();

    eventually("the node to be replaced", CONVERGE, || async {
        let list = nodes_of(&nodes, &name).await;
        let ready = list.iter().filter(|n| is_ready(n)).count();
        // The replacement fills the free slot, so it may carry the same name; it is a new object.
        let uids: Vec<_> = list.iter().map(|n| n.metadata.uid.clone()).collect();
        if list.len() == 2 && ready == 2 && !uids.contains(&before[0].metadata.uid) {
            Ok(())
        } else {
            Err(format!("{} nodes, {ready} ready", list.len()))
        }
    })
    .await;
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn deleting_a_pool_drains_and_removes_its_nodes() {
    let (client, pools, nodes) = setup().await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, "default");
    let name = unique_name("delete");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&name, 2))
        .await
        .unwrap();
    let two = converged(&pools, &nodes, &name, 2).await;
    let pool = pools.get(&name).await.unwrap();
    assert!(pool.finalizers().is_empty(), "{:?}", pool.finalizers());
    for node in &two {
        assert_eq!(node.finalizers(), ["nodepool.dev/termination"]);
    }
    let pod = unique_name("app");
    pods.create(&PostParams::default(), &pod_on(&two[0].name_any(), &pod))
        .await
        .unwrap();

    pools.delete(&name, &DeleteParams::default()).await.unwrap();
    eventually(
        "the pool's nodes and their pods to be gone",
        CONVERGE,
        || async {
            let left = nodes_of(&nodes, &name).await.len();
            let pod_left = pods.get_opt(&pod).await.map_err(|e| e.to_string())?;
            if left == 0 && pod_left.is_none() {
                Ok(())
            } else {
                Err(format!(
                    "{left} nodes left, pod present: {}",
                    pod_left.is_some()
                ))
            }
        },
    )
    .await;
    assert!(pools.get_opt(&name).await.unwrap().is_none());
}

#[tokio::test]
async fn a_node_with_the_pool_label_that_the_operator_did_not_create_is_left_alone() {
    let (_, pools, nodes) = setup().await;
    let name = unique_name("foreign");
    let foreign = unique_name("foreign-node");
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": foreign, "labels": {"nodepool.dev/pool": name}},
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&name, 1))
        .await
        .unwrap();
    // The pool gets a node of its own: the foreign one is not counted...
    eventually("one node of the pool's own", CONVERGE, || async {
        let own = nodes_of(&nodes, &name)
            .await
            .iter()
            .filter(|n| n.name_any() != foreign && is_ready(n))
            .count();
        let status = pools.get(&name).await.map_err(|e| e.to_string())?.status;
        let replicas = status.map(|s| s.replicas).unwrap_or(-1);
        (own == 1 && replicas == 1)
            .then_some(())
            .ok_or(format!("{own} own nodes, status replicas {replicas}"))
    })
    .await;
    // ...and neither removed by a scale to zero nor by the pool's deletion.
    scale(&pools, &name, 0).await;
    converged_own(&pools, &nodes, &name, &foreign).await;
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
    eventually("the pool to be gone", CONVERGE, || async {
        let gone = pools
            .get_opt(&name)
            .await
            .map_err(|e| e.to_string())?
            .is_none();
        let own = nodes_of(&nodes, &name)
            .await
            .iter()
            .filter(|n| n.name_any() != foreign)
            .count();
        (gone && own == 0)
            .then_some(())
            .ok_or(format!("{own} own nodes left"))
    })
    .await;
    let kept = nodes.get(&foreign).await.unwrap();
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "the foreign node was deleted"
    );
    assert!(kept.finalizers().is_empty());
    nodes
        .delete(&foreign, &DeleteParams::default())
        .await
        .unwrap();
}

/// Waits until the pool has none of its own nodes and reports 0.
async fn converged_own(pools: &Api<NodePool>, nodes: &Api<Node>, name: &str, foreign: &str) {
    eventually("no own nodes", CONVERGE, || async {
        let own = nodes_of(nodes, name)
            .await
            .iter()
            .filter(|n| n.name_any() != foreign)
            .count();
        let status = pools
            .get(name)
            .await
            .map_err(|e| e.to_string())?
            .status
            .unwrap_or_default();
        (own == 0 && status.replicas == 0)
            .then_some(())
            .ok_or(format!("{own} own nodes, {status:?}"))
    })
    .await;
}

#[tokio::test]
async fn an_invalid_template_is_reported_and_touches_no_other_pool() {
    let (client, pools, nodes) = setup().await;
    let good = unique_name("good");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&good, 1))
        .await
        .unwrap();
    let bad = unique_name("bad");
    let mut pool = fixtures::nodepool(&bad, 2);
    pool.spec.template.capacity.cpu = Quantity("lots".into());
    pools.create(&PostParams::default(), &pool).await.unwrap();

    let condition = eventually("InvalidSpec on the bad pool", CONVERGE, || async {
        let p = pools.get(&bad).await.map_err(|e| e.to_string())?;
        let status = p.status.unwrap_or_default();
        find(&status.conditions, "Ready")
            .filter(|c| c.reason == "InvalidSpec")
            .cloned()
            .ok_or(format!("{status:?}"))
    })
    .await;
    assert_eq!(condition.status, ConditionStatus::False);
    assert!(
        condition.message.contains("spec.template.capacity.cpu"),
        "{}",
        condition.message
    );
    assert!(
        nodes_of(&nodes, &bad).await.is_empty(),
        "no nodes for an invalid pool"
    );

    // The event says the same.
    test_support::wait_for_event(client, "InvalidSpec", &bad, CONVERGE).await;

    // The good pool converges all the same, and so does the bad one once fixed.
    converged(&pools, &nodes, &good, 1).await;
    let fix = json!({"spec": {"template": {"capacity": {"cpu": "2"}}}});
    pools
        .patch(&bad, &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .unwrap();
    converged(&pools, &nodes, &bad, 2).await;
    for name in [good, bad] {
        pools.delete(&name, &DeleteParams::default()).await.unwrap();
    }
}

#[tokio::test]
async fn nodepool_ready_lands_beside_the_autoscalers_own_conditions() {
    let (client, pools, nodes) = setup().await;
    let autoscalers: Api<Autoscaler> = Api::all(client);
    let pool = unique_name("target");
    let name = unique_name("as");
    autoscalers
        .create(
            &PostParams::default(),
            &fixtures::autoscaler(&name, &pool, 1, 3),
        )
        .await
        .unwrap();
    // Another field manager (the autoscaler's) owns a condition in the same list.
    let theirs = json!({"apiVersion": "nodepool.dev/v1alpha1", "kind": "Autoscaler", "metadata": {"name": name},
        "status": {"conditions": [{"type": "Active", "status": "True", "reason": "Test", "message": "autoscaler's own",
        "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    autoscalers
        .patch_status(
            &name,
            &PatchParams::apply("autoscaler-operator").force(),
            &Patch::Apply(&theirs),
        )
        .await
        .unwrap();

    let wait_for = |reason: &'static str| {
        let (autoscalers, name) = (autoscalers.clone(), name.clone());
        async move {
            eventually(&format!("NodePoolReady {reason}"), CONVERGE, || async {
                let a = autoscalers.get(&name).await.map_err(|e| e.to_string())?;
                let conditions = a.status.unwrap_or_default().conditions;
                match find(&conditions, "NodePoolReady") {
                    Some(c) if c.reason == reason => Ok(conditions.clone()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await
        }
    };
    // The pool does not exist yet.
    let conditions = wait_for("NotFound").await;
    assert!(
        find(&conditions, "Active").is_some(),
        "the autoscaler's condition was removed: {conditions:?}"
    );

    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 1))
        .await
        .unwrap();
    converged(&pools, &nodes, &pool, 1).await;
    let conditions = wait_for("Ready").await;
    assert_eq!(
        find(&conditions, "NodePoolReady").unwrap().status,
        ConditionStatus::True
    );
    let active = find(&conditions, "Active").expect("the autoscaler's condition survives");
    assert_eq!(active.message, "autoscaler's own");

    let a = autoscalers.get(&name).await.unwrap();
    let managers: Vec<_> = a
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.contains(&"nodepool-operator".to_owned()),
        "{managers:?}"
    );
    assert!(
        managers.contains(&"autoscaler-operator".to_owned()),
        "{managers:?}"
    );
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
    wait_for("NotFound").await;
}

/// A new pool of one node, once that node is Ready: (pool, node).
async fn one_node_pool(pools: &Api<NodePool>, nodes: &Api<Node>, prefix: &str) -> (String, String) {
    let name = unique_name(prefix);
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&name, 1))
        .await
        .unwrap();
    let node = converged(pools, nodes, &name, 1).await[0].name_any();
    (name, node)
}

/// Waits until `get` finds nothing.
async fn gone<T, F, Fut>(what: &str, get: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = kube::Result<Option<T>>>,
{
    eventually(&format!("{what} gone"), CONVERGE, || async {
        match get().await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(_) => Err("still there".to_owned()),
        }
    })
    .await
}

/// A pod bound to a pool node, tolerating the virtual taint, in namespace `default`,
/// labelled `app=<name>`.
fn pod_on(node: &str, name: &str) -> k8s_openapi::api::core::v1::Pod {
    fixtures::pod_on(node, name, name)
}

#[tokio::test]
async fn scale_down_evicts_the_pods_of_the_removed_node() {
    let (client, pools, nodes) = setup().await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, "default");
    let name = unique_name("drain");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&name, 2))
        .await
        .unwrap();
    let two = converged(&pools, &nodes, &name, 2).await;
    // One busy node and one empty one: the empty one goes first, the busy one stays.
    let busy = two[0].name_any();
    let pod = unique_name("app");
    pods.create(&PostParams::default(), &pod_on(&busy, &pod))
        .await
        .unwrap();

    scale(&pools, &name, 1).await;
    let one = converged(&pools, &nodes, &name, 1).await;
    assert_eq!(
        one[0].name_any(),
        busy,
        "the empty node is removed before the busy one"
    );
    assert!(
        pods.get_opt(&pod).await.unwrap().is_some(),
        "the pod on the surviving node stays"
    );

    // Now the busy node must go: its pod is evicted (and finished: no kubelet), then the node.
    scale(&pools, &name, 0).await;
    converged(&pools, &nodes, &name, 0).await;
    assert!(
        pods.get_opt(&pod).await.unwrap().is_none(),
        "the pod was evicted"
    );
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_deleted_pod_on_a_virtual_node_does_not_stay_terminating() {
    let (client, pools, nodes) = setup().await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, "default");
    let (name, node) = one_node_pool(&pools, &nodes, "finish").await;
    let pod = unique_name("app");
    pods.create(&PostParams::default(), &pod_on(&node, &pod))
        .await
        .unwrap();
    pods.delete(&pod, &DeleteParams::default()).await.unwrap();
    eventually("the pod to be gone", CONVERGE, || async {
        match pods.get_opt(&pod).await.map_err(|e| e.to_string())? {
            None => Ok(()),
            Some(p) => Err(format!(
                "still there, deletionTimestamp {:?}",
                p.metadata.deletion_timestamp
            )),
        }
    })
    .await;
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
}

/// Waits until the operator (the kubelet's part) reports the pod Running.
async fn running(
    pods: &Api<k8s_openapi::api::core::v1::Pod>,
    pod: &str,
) -> k8s_openapi::api::core::v1::Pod {
    eventually(&format!("{pod} Running"), CONVERGE, || async {
        let p = pods.get(pod).await.map_err(|e| e.to_string())?;
        let phase = p.status.as_ref().and_then(|s| s.phase.clone());
        (phase.as_deref() == Some("Running"))
            .then_some(p)
            .ok_or(format!("phase {phase:?}"))
    })
    .await
}

#[tokio::test]
async fn a_pod_bound_to_a_virtual_node_runs_with_a_kubelets_status() {
    let (client, pools, nodes) = setup().await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, "default");
    let (name, node) = one_node_pool(&pools, &nodes, "run").await;
    let first = unique_name("app");
    pods.create(&PostParams::default(), &pod_on(&node, &first))
        .await
        .unwrap();
    let started = running(&pods, &first).await;
    let status = started.status.clone().unwrap();
    let conditions: Vec<(String, String)> = status
        .conditions
        .unwrap_or_default()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    for type_ in ["Initialized", "Ready", "ContainersReady", "PodScheduled"] {
        assert!(
            conditions.contains(&(type_.to_owned(), "True".to_owned())),
            "{type_}: {conditions:?}"
        );
    }
    assert!(status.pod_ip.is_some_and(|ip| ip.starts_with("10.244.")));
    assert!(status.start_time.is_some());
    let containers = status.container_statuses.unwrap_or_default();
    assert_eq!(containers.len(), 1);
    assert!(containers[0].ready);
    assert!(
        containers[0]
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some()
    );

    // A second pod on the node makes the node's pods be looked at again: the first, already
    // Running, is not written again.
    let second = unique_name("app");
    pods.create(&PostParams::default(), &pod_on(&node, &second))
        .await
        .unwrap();
    running(&pods, &second).await;
    assert_eq!(
        pods.get(&first).await.unwrap().resource_version(),
        started.resource_version(),
        "the running pod was written again"
    );
    for pod in [&first, &second] {
        pods.delete(pod, &DeleteParams::default()).await.unwrap();
    }
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
}

/// The condition `type_` of the node, from the API server.
async fn node_condition(
    nodes: &Api<Node>,
    node: &str,
    type_: &str,
) -> Option<k8s_openapi::api::core::v1::NodeCondition> {
    let node = nodes.get_opt(node).await.unwrap()?;
    node.status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == type_)
}

#[tokio::test]
async fn a_drain_that_a_budget_blocks_waits_says_which_and_goes_on_when_it_allows() {
    let (client, pools, nodes) = setup().await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let (name, node) = one_node_pool(&pools, &nodes, "pdb").await;
    let pod = unique_name("guarded");
    pods.create(&PostParams::default(), &pod_on(&node, &pod))
        .await
        .unwrap();
    running(&pods, &pod).await;
    let budget = unique_name("budget");
    let budgets = fixtures::blocking_pdb(&client, &budget, &pod).await;

    scale(&pools, &name, 0).await;
    // Past the drain timeout (5 s here) the Node says which budget blocks it.
    let condition = eventually("the DrainBlocked condition", CONVERGE, || async {
        node_condition(&nodes, &node, "DrainBlocked")
            .await
            .ok_or_else(|| "none yet".to_owned())
    })
    .await;
    assert_eq!(condition.status, "True");
    assert_eq!(condition.reason.as_deref(), Some("DisruptionBudget"));
    let message = condition.message.unwrap_or_default();
    assert!(
        message.contains(&budget) && message.contains(&pod),
        "{message}"
    );
    let event = test_support::wait_for_event(client.clone(), "DrainBlocked", &node, CONVERGE).await;
    assert!(
        event.note.as_deref().unwrap_or_default().contains(&budget),
        "{event:?}"
    );
    // Honoured: the node stays, cordoned, and the pod is not touched.
    let held = nodes.get(&node).await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    assert_eq!(held.spec.and_then(|s| s.unschedulable), Some(true));
    let guarded = pods.get(&pod).await.unwrap();
    assert!(guarded.metadata.deletion_timestamp.is_none(), "{guarded:?}");

    // The budget gone, the next try evicts the pod and the node goes.
    budgets
        .delete(&budget, &DeleteParams::default())
        .await
        .unwrap();
    converged(&pools, &nodes, &name, 0).await;
    assert!(
        pods.get_opt(&pod).await.unwrap().is_none(),
        "the pod was evicted"
    );
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_pool_with_a_termination_grace_period_forces_a_blocked_drain() {
    let (client, pools, nodes) = setup().await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let name = unique_name("force");
    let mut pool = fixtures::nodepool(&name, 1);
    pool.spec.template.termination_grace_period_seconds = Some(2);
    pools.create(&PostParams::default(), &pool).await.unwrap();
    let node = converged(&pools, &nodes, &name, 1).await[0].name_any();
    let pod = unique_name("guarded");
    pods.create(&PostParams::default(), &pod_on(&node, &pod))
        .await
        .unwrap();
    running(&pods, &pod).await;
    let budget = unique_name("budget");
    let budgets = fixtures::blocking_pdb(&client, &budget, &pod).await;

    scale(&pools, &name, 0).await;
    converged(&pools, &nodes, &name, 0).await;
    let event =
        test_support::wait_for_event(client.clone(), "NodeDrainForced", &node, CONVERGE).await;
    assert!(
        event
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("bypassed"),
        "{event:?}"
    );
    assert!(
        pods.get_opt(&pod).await.unwrap().is_none(),
        "the pod was deleted"
    );
    budgets
        .delete(&budget, &DeleteParams::default())
        .await
        .unwrap();
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_deployments_pods_are_scheduled_onto_the_pool_and_run() {
    if test_support::Topology::from_env() == test_support::Topology::Bare && !shared().is_external()
    {
        eprintln!("skipped: no scheduler in a bare control plane");
        return;
    }
    let (client, pools, nodes) = setup().await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "default");
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, "default");
    let name = unique_name("deploy");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&name, 2))
        .await
        .unwrap();
    let pool_nodes: Vec<String> = converged(&pools, &nodes, &name, 2)
        .await
        .iter()
        .map(|n| n.name_any())
        .collect();
    // Three replicas of half a core that want the pool: the real scheduler places them.
    let deployment = fixtures::deployment(&name, &name, 3, "500m", "256Mi");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let selector = format!("app={name}");
    eventually("3 pods Running on the pool's nodes", CONVERGE, || async {
        let list = pods
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .map_err(|e| e.to_string())?;
        let running: Vec<_> = list
            .items
            .iter()
            .filter(|p| {
                let on_pool = p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.as_ref())
                    .is_some_and(|n| pool_nodes.contains(n));
                let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
                on_pool && phase == Some("Running")
            })
            .collect();
        (running.len() == 3 && list.items.len() == 3)
            .then_some(())
            .ok_or(format!(
                "{} pods, {} running on the pool",
                list.items.len(),
                running.len()
            ))
    })
    .await;

    // Deleted, the Deployment's pods go through the garbage collector, and each ends as a
    // kubelet ends it.
    deployments
        .delete(&name, &DeleteParams::background())
        .await
        .unwrap();
    eventually("the Deployment's pods gone", CONVERGE, || async {
        let left = pods
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .map_err(|e| e.to_string())?
            .items
            .len();
        (left == 0).then_some(()).ok_or(format!("{left} left"))
    })
    .await;
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_drain_waits_for_a_do_not_disrupt_pod_and_evicts_the_rest() {
    let (client, pools, nodes) = setup().await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let (name, node) = one_node_pool(&pools, &nodes, "dnd-drain").await;
    let (kept, other) = (unique_name("kept"), unique_name("other"));
    let mut protected = pod_on(&node, &kept);
    protected.metadata.annotations = Some(
        [(
            shared_crd::DO_NOT_DISRUPT_ANNOTATION.to_owned(),
            "true".to_owned(),
        )]
        .into(),
    );
    pods.create(&PostParams::default(), &protected)
        .await
        .unwrap();
    pods.create(&PostParams::default(), &pod_on(&node, &other))
        .await
        .unwrap();
    running(&pods, &kept).await;
    running(&pods, &other).await;

    // Deleted by hand, past the plan (which would not pick it): the drain evicts the
    // other pod, waits for the protected one, and past the drain timeout (5 s here) the
    // Node says why it stays.
    nodes.delete(&node, &DeleteParams::default()).await.unwrap();
    gone("the other pod", || pods.get_opt(&other)).await;
    let condition = eventually("the DrainBlocked condition", CONVERGE, || async {
        node_condition(&nodes, &node, "DrainBlocked")
            .await
            .ok_or_else(|| "none yet".to_owned())
    })
    .await;
    assert_eq!(condition.reason.as_deref(), Some("DoNotDisrupt"));
    let message = condition.message.unwrap_or_default();
    assert!(
        message.contains(&kept) && message.contains("do-not-disrupt"),
        "{message}"
    );
    let waiting = pods.get(&kept).await.unwrap();
    assert!(
        waiting.metadata.deletion_timestamp.is_none(),
        "the do-not-disrupt pod was evicted: {waiting:?}"
    );
    assert!(nodes.get_opt(&node).await.unwrap().is_some(), "node gone");

    // The pool is not short meanwhile: a replacement is Ready beside the draining node.
    eventually("a replacement", CONVERGE, || async {
        let ready = nodes_of(&nodes, &name)
            .await
            .iter()
            .filter(|n| n.name_any() != node && is_ready(n))
            .count();
        (ready == 1).then_some(()).ok_or(format!("{ready} ready"))
    })
    .await;

    // The pod ends; the node goes.
    pods.delete(&kept, &DeleteParams::default()).await.unwrap();
    gone("the drained node", || nodes.get_opt(&node)).await;
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
}
