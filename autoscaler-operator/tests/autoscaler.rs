//! Both operators on a real API server: pods that need nodes make the pool grow and the
//! Autoscaler report it; without them the pool shrinks to minReplicas after the
//! scale-down window; an invalid Autoscaler is reported and writes no pool.
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use shared_crd::condition::{ConditionStatus, find};
use shared_crd::{Autoscaler, NodePool, ScalingRules};
use support::{operators, pod, ready_nodes};
use test_support::{eventually, fixtures, shared, unique_name};

const CONVERGE: Duration = Duration::from_secs(60);

async fn setup() -> Client {
    operators();
    shared().client().await.unwrap()
}

/// An Autoscaler of `pool`, 1 to `max` nodes at 100% of a node, that moves up to `max`
/// nodes at once and scales down after `window` seconds.
fn at_full_use(pool: &str, max: i32, window: i32) -> Autoscaler {
    let mut scaler = fixtures::autoscaler(&unique_name("as"), pool, 1, max);
    scaler.spec.target_utilization = 100;
    scaler.spec.behavior.scale_up.max_step = Some(max);
    scaler.spec.behavior.scale_down = ScalingRules {
        max_step: Some(max),
        ..ScalingRules::window(window)
    };
    scaler
}

/// The pods of `selector` in `default`.
async fn pods_of(pods: &Api<Pod>, selector: &str) -> Result<Vec<Pod>, String> {
    let list = pods
        .list(&kube::api::ListParams::default().labels(selector))
        .await
        .map_err(|e| e.to_string())?;
    Ok(list.items)
}

/// Waits until Autoscaler `name` shows condition `type_` with `reason`.
async fn condition_with(
    autoscalers: &Api<Autoscaler>,
    name: &str,
    type_: &str,
    reason: &str,
) -> shared_crd::Condition {
    eventually(&format!("{name}: {type_} {reason}"), CONVERGE, || async {
        let a = autoscalers.get(name).await.map_err(|e| e.to_string())?;
        let conditions = a.status.unwrap_or_default().conditions;
        find(&conditions, type_)
            .filter(|c| c.reason == reason)
            .cloned()
            .ok_or(format!("{conditions:?}"))
    })
    .await
}

fn is_running(pod: &Pod) -> bool {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

#[tokio::test]
async fn the_pool_follows_the_demand_of_its_pods() {
    let client = setup().await;
    let pools: Api<NodePool> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client, "default");

    let pool = unique_name("grow");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 1))
        .await
        .unwrap();
    let mut scaler = fixtures::autoscaler(&unique_name("as"), &pool, 1, 6);
    scaler.spec.behavior.scale_down = ScalingRules {
        max_step: Some(1),
        ..ScalingRules::window(3)
    };
    let scaler_name = scaler.name_any();
    autoscalers
        .create(&PostParams::default(), &scaler)
        .await
        .unwrap();

    // 4 pods of 1.5 cores: 6 cores / (2 x 80%) = 4 nodes (3 pods would make 3: so a
    // decision of 4 has seen them all).
    let names: Vec<String> = (0..4).map(|i| format!("{pool}-pod-{i}")).collect();
    for name in &names {
        pods.create(&PostParams::default(), &pod(name, &pool, "1500m"))
            .await
            .unwrap();
    }
    let status = eventually(
        "4 ready nodes and the autoscaler reporting them",
        CONVERGE,
        || async {
            let ready = ready_nodes(&nodes, &pool).await;
            let a = autoscalers
                .get(&scaler_name)
                .await
                .map_err(|e| e.to_string())?;
            let s = a.status.clone().unwrap_or_default();
            if ready == 4 && s.desired_replicas == Some(4) {
                Ok(s)
            } else {
                Err(format!("{ready} ready; status {s:?}"))
            }
        },
    )
    .await;
    assert_eq!(pools.get(&pool).await.unwrap().spec.replicas, 4);
    let decision = status.last_decision.unwrap();
    assert!(
        decision.contains("cpu demand 6 cores / (2 cores x 80%) -> 4 nodes"),
        "{decision}"
    );
    assert!(status.last_scale_time.is_some());
    for (type_, want) in [
        ("Active", ConditionStatus::True),
        ("AbleToScale", ConditionStatus::True),
        ("NodePoolReady", ConditionStatus::True),
    ] {
        let c = find(&status.conditions, type_)
            .unwrap_or_else(|| panic!("{type_} missing: {:?}", status.conditions));
        assert_eq!(c.status, want, "{c:?}");
    }

    // The pool's spec.replicas belongs to the autoscaler's field manager.
    let p = pools.get(&pool).await.unwrap();
    let owner = p
        .managed_fields()
        .iter()
        .find(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.to_string().contains("f:replicas"))
                && m.subresource.is_none()
        })
        .and_then(|m| m.manager.clone());
    assert_eq!(owner.as_deref(), Some("autoscaler-operator"));

    for name in &names {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    eventually("the pool back at minReplicas", CONVERGE, || async {
        let ready = ready_nodes(&nodes, &pool).await;
        let p = pools.get(&pool).await.map_err(|e| e.to_string())?;
        (ready == 1 && p.spec.replicas == 1)
            .then_some(())
            .ok_or(format!("{ready} ready, spec {}", p.spec.replicas))
    })
    .await;
    autoscalers
        .delete(&scaler_name, &DeleteParams::default())
        .await
        .unwrap();
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn an_invalid_autoscaler_is_reported_and_writes_no_pool() {
    let client = setup().await;
    let pools: Api<NodePool> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pool = unique_name("untouched");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 1))
        .await
        .unwrap();
    let before = pools.get(&pool).await.unwrap();
    // Demand that would need 3 nodes, for an Autoscaler whose min exceeds its max.
    for i in 0..3 {
        pods.create(
            &PostParams::default(),
            &pod(&format!("{pool}-pod-{i}"), &pool, "1500m"),
        )
        .await
        .unwrap();
    }
    let name = unique_name("inverted");
    let created = autoscalers
        .create(
            &PostParams::default(),
            &fixtures::autoscaler(&name, &pool, 5, 2),
        )
        .await;
    if created.is_err() {
        // A server with CEL rejects it outright: the schema did the operator's job.
        return;
    }
    let condition = condition_with(&autoscalers, &name, "AbleToScale", "InvalidSpec").await;
    assert_eq!(condition.status, ConditionStatus::False);
    assert!(
        condition
            .message
            .contains("minReplicas (5) must not exceed spec.maxReplicas (2)"),
        "{}",
        condition.message
    );

    test_support::wait_for_event(client, "InvalidSpec", &name, CONVERGE).await;
    let after = pools.get(&pool).await.unwrap();
    assert_eq!(after.spec.replicas, 1, "the pool was written");
    assert_eq!(
        after.metadata.generation, before.metadata.generation,
        "the pool spec changed"
    );

    // A missing pool is reported too, and so is a second Autoscaler of one pool.
    let orphan = unique_name("orphan");
    autoscalers
        .create(
            &PostParams::default(),
            &fixtures::autoscaler(&orphan, "no-such-pool", 1, 2),
        )
        .await
        .unwrap();
    let second = unique_name("second");
    let first = unique_name("first");
    autoscalers
        .create(
            &PostParams::default(),
            &fixtures::autoscaler(&first, &pool, 1, 2),
        )
        .await
        .unwrap();
    autoscalers
        .create(
            &PostParams::default(),
            &fixtures::autoscaler(&second, &pool, 1, 2),
        )
        .await
        .unwrap();
    // The oldest Autoscaler of a pool (by creation time, then name: creation times have
    // whole seconds) holds it, valid or not; each later one says which one holds it.
    let mut claimants = Vec::new();
    for who in [&name, &first, &second] {
        let a = autoscalers.get(who).await.unwrap();
        claimants.push((a.creation_timestamp().map(|t| t.0), who.clone()));
    }
    let holder = claimants.iter().min().unwrap().1.clone();
    let mut expected = vec![(
        orphan.clone(),
        "NotFound",
        "NodePool no-such-pool does not exist".to_owned(),
    )];
    for who in [first, second].into_iter().filter(|w| *w != holder) {
        let message = format!("already scaled by Autoscaler {holder}");
        expected.push((who, "PoolAlreadyTargeted", message));
    }
    for (who, reason, message) in expected {
        let c = condition_with(&autoscalers, &who, "AbleToScale", reason).await;
        assert!(c.message.contains(&message), "{who}: {}", c.message);
    }
    for who in claimants.into_iter().map(|c| c.1).chain([orphan]) {
        autoscalers
            .delete(&who, &DeleteParams::default())
            .await
            .unwrap();
    }
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
    for i in 0..3 {
        pods.delete(&format!("{pool}-pod-{i}"), &DeleteParams::default())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_pool_deleted_while_its_autoscaler_scales_it_is_reported_and_not_brought_back() {
    let client = setup().await;
    let pools: Api<NodePool> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let pool = unique_name("vanishing");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 1))
        .await
        .unwrap();
    let scaler = unique_name("as");
    autoscalers
        .create(
            &PostParams::default(),
            &fixtures::autoscaler(&scaler, &pool, 1, 6),
        )
        .await
        .unwrap();
    let demand: Vec<String> = (0..4).map(|i| format!("{pool}-pod-{i}")).collect();
    for name in &demand {
        pods.create(&PostParams::default(), &pod(name, &pool, "1200m"))
            .await
            .unwrap();
    }
    // Deleted as soon as the autoscaler has grown it, nodes still coming.
    eventually("the autoscaler to grow the pool", CONVERGE, || async {
        let replicas = pools
            .get(&pool)
            .await
            .map_err(|e| e.to_string())?
            .spec
            .replicas;
        (replicas > 1)
            .then_some(())
            .ok_or(format!("spec.replicas {replicas}"))
    })
    .await;
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();

    // Both operators say so on the Autoscaler...
    eventually("NotFound from both operators", CONVERGE, || async {
        let a = autoscalers.get(&scaler).await.map_err(|e| e.to_string())?;
        let conditions = a.status.unwrap_or_default().conditions;
        let not_found = |t: &str| {
            find(&conditions, t)
                .is_some_and(|c| c.status == ConditionStatus::False && c.reason == "NotFound")
        };
        (not_found("AbleToScale") && not_found("NodePoolReady"))
            .then_some(())
            .ok_or(format!("{conditions:?}"))
    })
    .await;
    // ...which proves they saw the deletion: nothing brought the pool back, and its
    // nodes go.
    assert!(pools.get_opt(&pool).await.unwrap().is_none());
    eventually("the pool's nodes gone", CONVERGE, || async {
        let left = ready_nodes(&nodes, &pool).await;
        (left == 0).then_some(()).ok_or(format!("{left} left"))
    })
    .await;

    // The pods the scheduler had bound to the pool's nodes were evicted with them.
    for name in &demand {
        match pods.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.is_not_found() => {}
            Err(e) => panic!("deleting pod {name}: {e}"),
        }
    }
    autoscalers
        .delete(&scaler, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_deployment_of_9_gets_exactly_5_nodes_runs_there_and_shrinks_back() {
    if test_support::Topology::from_env() == test_support::Topology::Bare && !shared().is_external()
    {
        eprintln!("skipped: no scheduler in a bare control plane");
        return;
    }
    let client = setup().await;
    let pools: Api<NodePool> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "default");
    let pool = unique_name("nine");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 1))
        .await
        .unwrap();
    let scaler = at_full_use(&pool, 8, 3);
    let scaler_name = scaler.name_any();
    autoscalers
        .create(&PostParams::default(), &scaler)
        .await
        .unwrap();
    let name = unique_name("web");
    deployments
        .create(
            &PostParams::default(),
            &fixtures::deployment(&name, &pool, 0, "1", "1Gi"),
        )
        .await
        .unwrap();

    // 0 -> 9 replicas of 1 cpu on 2-cpu nodes at 100%: 9 cores / 2 = 4.5 -> 5 nodes.
    let scale = |replicas: i32| {
        let deployments = deployments.clone();
        let name = name.clone();
        async move {
            let patch = serde_json::json!({"spec": {"replicas": replicas}});
            deployments
                .patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&patch),
                )
                .await
                .unwrap();
        }
    };
    scale(9).await;
    let selector = format!("app={name}");
    let running_on_pool = || async {
        let pool_nodes: Vec<String> = nodes
            .list(&kube::api::ListParams::default().labels(&format!("nodepool.dev/pool={pool}")))
            .await
            .map_err(|e| e.to_string())?
            .items
            .iter()
            .map(|n| n.name_any())
            .collect();
        let all = pods_of(&pods, &selector).await?;
        let running: Vec<Pod> = all
            .iter()
            .filter(|p| {
                let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
                node.is_some_and(|n| pool_nodes.contains(&n)) && is_running(p)
            })
            .cloned()
            .collect();
        Ok::<_, String>((all.len(), running, pool_nodes.len()))
    };
    let nine = eventually("9 pods Running on 5 nodes", CONVERGE, || async {
        let (all, running, pool_nodes) = running_on_pool().await?;
        let ready = ready_nodes(&nodes, &pool).await;
        let seen = format!(
            "{all} pods, {} running on the pool, {ready} ready of {pool_nodes} nodes",
            running.len()
        );
        (all == 9 && running.len() == 9 && ready == 5 && pool_nodes == 5)
            .then_some(running)
            .ok_or(seen)
    })
    .await;
    assert_eq!(pools.get(&pool).await.unwrap().spec.replicas, 5);

    // Back to 1 replica: the pool shrinks to 1, and the pod that stays is one of the nine,
    // never evicted (the empty nodes go first): no pod was left unschedulable.
    scale(1).await;
    let last = eventually("1 pod on 1 node", CONVERGE, || async {
        let (all, running, pool_nodes) = running_on_pool().await?;
        (all == 1 && running.len() == 1 && pool_nodes == 1)
            .then(|| running[0].clone())
            .ok_or(format!(
                "{all} pods, {} running, {pool_nodes} nodes",
                running.len()
            ))
    })
    .await;
    assert!(
        nine.iter().any(|p| p.metadata.uid == last.metadata.uid),
        "the last pod was made anew: one was evicted"
    );
    eventually("spec.replicas 1", CONVERGE, || async {
        let replicas = pools
            .get(&pool)
            .await
            .map_err(|e| e.to_string())?
            .spec
            .replicas;
        (replicas == 1).then_some(()).ok_or(format!("{replicas}"))
    })
    .await;

    deployments
        .delete(&name, &DeleteParams::background())
        .await
        .unwrap();
    autoscalers
        .delete(&scaler_name, &DeleteParams::default())
        .await
        .unwrap();
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_pod_no_node_of_the_pool_can_run_is_reported_and_scales_nothing() {
    let client = setup().await;
    let pools: Api<NodePool> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pool = unique_name("small");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 1))
        .await
        .unwrap();
    let scaler = unique_name("as");
    autoscalers
        .create(
            &PostParams::default(),
            &fixtures::autoscaler(&scaler, &pool, 1, 4),
        )
        .await
        .unwrap();
    // 3 cores on nodes of 2.
    let big = format!("{pool}-big");
    pods.create(&PostParams::default(), &pod(&big, &pool, "3"))
        .await
        .unwrap();
    let c = condition_with(&autoscalers, &scaler, "PodsFit", "PodTooLarge").await;
    assert_eq!(c.status, ConditionStatus::False);
    assert!(
        c.message
            .contains(&format!("default/{big} (3 cores > 2 cores)")),
        "{}",
        c.message
    );
    let event =
        test_support::wait_for_event(client.clone(), "PodTooLarge", &scaler, CONVERGE).await;
    assert!(event.note.unwrap_or_default().contains(&big));
    // The decision that said so kept the pool where it was.
    let a = autoscalers.get(&scaler).await.unwrap();
    assert_eq!(a.status.unwrap_or_default().desired_replicas, Some(1));
    assert_eq!(pools.get(&pool).await.unwrap().spec.replicas, 1);

    // A pod that names the pool but also a label its nodes lack: the scheduler leaves it
    // Unschedulable, and no node of the pool would ever take it.
    pods.delete(&big, &DeleteParams::default()).await.unwrap();
    let picky = format!("{pool}-picky");
    let mut wants_ssd = fixtures::pod_wanting(&picky, &pool, "1", "1Gi");
    let spec = wants_ssd.spec.as_mut().unwrap();
    spec.node_selector
        .get_or_insert_default()
        .insert("disk".into(), "ssd".into());
    pods.create(&PostParams::default(), &wants_ssd)
        .await
        .unwrap();
    let c = condition_with(&autoscalers, &scaler, "PodsFit", "PodDoesNotMatch").await;
    assert_eq!(c.status, ConditionStatus::False);
    assert!(
        c.message.contains(&format!(
            "default/{picky} (node selector disk=ssd does not match the pool's nodes)"
        )),
        "{}",
        c.message
    );
    let event =
        test_support::wait_for_event(client.clone(), "PodDoesNotMatch", &scaler, CONVERGE).await;
    assert!(event.note.unwrap_or_default().contains(&picky));
    let unschedulable = pods.get(&picky).await.unwrap();
    assert!(
        unschedulable.spec.unwrap().node_name.is_none(),
        "the scheduler bound a pod no node can run"
    );
    let a = autoscalers.get(&scaler).await.unwrap();
    assert_eq!(a.status.unwrap_or_default().desired_replicas, Some(1));
    assert_eq!(pools.get(&pool).await.unwrap().spec.replicas, 1);

    pods.delete(&picky, &DeleteParams::default()).await.unwrap();
    autoscalers
        .delete(&scaler, &DeleteParams::default())
        .await
        .unwrap();
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
}

/// Three pods of 1.2 cores that name no pool, only a label of its template: the scheduler
/// marks them Unschedulable, the autoscaler finds the pool whose nodes can run them, and
/// asks for 3 nodes where the sum of requests (3.6 cores at 100%) would say 2, because no
/// two of them fit on one node. Once they run, a decision after the scale-down window keeps
/// 3: removing a node would leave its pod with nowhere to go (and the next decision would
/// scale up again).
#[tokio::test]
async fn pods_that_fit_one_per_node_get_a_node_each_and_the_pool_does_not_flap() {
    let client = setup().await;
    let pools: Api<NodePool> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "default");
    let pool = unique_name("wide");
    let workload = unique_name("workload");
    let mut nodepool = fixtures::nodepool(&pool, 1);
    nodepool
        .spec
        .template
        .labels
        .insert("workload".into(), workload.clone());
    pools
        .create(&PostParams::default(), &nodepool)
        .await
        .unwrap();
    let scaler = at_full_use(&pool, 6, 2);
    let scaler_name = scaler.name_any();
    autoscalers
        .create(&PostParams::default(), &scaler)
        .await
        .unwrap();
    let name = unique_name("wide");
    let mut deployment = fixtures::deployment(&name, &pool, 3, "1200m", "1Gi");
    let pod_spec = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .unwrap();
    pod_spec.node_selector = Some([("workload".to_owned(), workload.clone())].into());
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    let selector = format!("app={name}");
    eventually("3 pods Running on 3 nodes", CONVERGE, || async {
        let all = pods_of(&pods, &selector).await?;
        let running = all.iter().filter(|p| is_running(p)).count();
        let ready = ready_nodes(&nodes, &pool).await;
        (all.len() == 3 && running == 3 && ready == 3)
            .then_some(())
            .ok_or(format!(
                "{} pods, {running} running, {ready} ready nodes",
                all.len()
            ))
    })
    .await;
    let status = autoscalers
        .get(&scaler_name)
        .await
        .unwrap()
        .status
        .unwrap_or_default();
    let decision = status.last_decision.unwrap_or_default();
    assert!(
        decision.contains("cpu demand 3.6 cores / (2 cores x 100%) -> 2 nodes; but ")
            && decision.ends_with("-> 3 nodes"),
        "{decision}"
    );

    // Watch the pool's size from here on, then make the autoscaler decide again after its
    // scale-down window: a spec change it must observe.
    let sizes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let watch = {
        let (pools, pool, sizes) = (pools.clone(), pool.clone(), sizes.clone());
        tokio::spawn(async move {
            use futures::StreamExt;
            let config =
                kube::runtime::watcher::Config::default().fields(&format!("metadata.name={pool}"));
            let mut events = std::pin::pin!(kube::runtime::watcher(pools, config));
            while let Some(Ok(event)) = events.next().await {
                if let kube::runtime::watcher::Event::Apply(p)
                | kube::runtime::watcher::Event::InitApply(p) = event
                {
                    sizes.lock().unwrap().push(p.spec.replicas);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await; // past the 2 s scale-down window
    let patch = serde_json::json!({"spec": {"maxReplicas": 7}});
    let changed = autoscalers
        .patch(
            &scaler_name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    let generation = changed.metadata.generation;
    eventually("the change observed", CONVERGE, || async {
        let a = autoscalers
            .get(&scaler_name)
            .await
            .map_err(|e| e.to_string())?;
        let observed = a.status.and_then(|s| s.observed_generation);
        (observed == generation)
            .then_some(())
            .ok_or(format!("observed {observed:?}, generation {generation:?}"))
    })
    .await;
    watch.abort();
    let seen = sizes.lock().unwrap().clone();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|&r| r == 3),
        "the pool's size moved: {seen:?}"
    );
    assert_eq!(pools.get(&pool).await.unwrap().spec.replicas, 3);

    deployments
        .delete(&name, &DeleteParams::background())
        .await
        .unwrap();
    autoscalers
        .delete(&scaler_name, &DeleteParams::default())
        .await
        .unwrap();
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
}
