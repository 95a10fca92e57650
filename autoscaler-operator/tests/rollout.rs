//! Both operators on the same pool at once: nodepool-operator replaces every node after a
//! template change while autoscaler-operator, facing new demand, grows the pool. The
//! autoscaler decides as if no rollout ran: the replacements are no capacity that lets it
//! shrink the pool, the pods a drain evicts are no new demand. Sampled every 100 ms: the
//! pool's size only ever grows, to exactly what the demand needs, and the rollout keeps
//! its promises throughout.
mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use nodepool_core::nodes::is_ready;
use nodepool_core::template::{hash_of, template_hash};
use serde_json::json;
use shared_crd::{NodePool, ScalingRules};
use support::operators;
use test_support::{Topology, eventually, fixtures, running_pods, shared, unique_name};

const CONVERGE: Duration = Duration::from_secs(120);

/// One look at the pool: its `spec.replicas`, its nodes (all, and Ready schedulable ones).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Look {
    replicas: i32,
    total: usize,
    ready_schedulable: usize,
}

async fn look(client: &Client, pool: &str) -> (Look, Vec<Node>) {
    let pools: Api<NodePool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let replicas = pools.get(pool).await.unwrap().spec.replicas;
    let list = nodes
        .list(&ListParams::default().labels(&format!("nodepool.dev/pool={pool}")))
        .await
        .unwrap()
        .items;
    let ready_schedulable = list
        .iter()
        .filter(|n| is_ready(n) && n.metadata.deletion_timestamp.is_none())
        .filter(|n| {
            !n.spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false)
        })
        .count();
    let l = Look {
        replicas,
        total: list.len(),
        ready_schedulable,
    };
    (l, list)
}

#[tokio::test]
async fn an_autoscaler_grows_a_pool_mid_rollout_and_neither_operator_flaps() {
    if Topology::from_env() == Topology::Bare && !shared().is_external() {
        eprintln!("skipped: needs kube-scheduler and kube-controller-manager");
        return;
    }
    operators();
    let client = shared().client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client.clone());
    let autoscalers: Api<shared_crd::Autoscaler> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");

    // 1 to 8 nodes of 2 cores at 100%; 3 pods of a core need 2 nodes.
    let pool = unique_name("rolling");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 1))
        .await
        .unwrap();
    let mut scaler = fixtures::autoscaler(&unique_name("as"), &pool, 1, 8);
    scaler.spec.target_utilization = 100;
    scaler.spec.behavior.scale_up.max_step = Some(8);
    scaler.spec.behavior.scale_down = ScalingRules {
        max_step: Some(8),
        ..ScalingRules::window(3)
    };
    autoscalers
        .create(&PostParams::default(), &scaler)
        .await
        .unwrap();
    deployments
        .create(
            &PostParams::default(),
            &fixtures::deployment(&pool, &pool, 3, "1", "128Mi"),
        )
        .await
        .unwrap();
    eventually("2 nodes and 3 pods Running", CONVERGE, || async {
        let (l, _) = look(&client, &pool).await;
        let r = running_pods(&pods, &pool).await.len();
        (l.replicas == 2 && l.total == 2 && l.ready_schedulable == 2 && r == 3)
            .then_some(())
            .ok_or(format!("{l:?}, {r} running"))
    })
    .await;

    // Sample the pool from here on.
    let looks = Arc::new(Mutex::new(Vec::<Look>::new()));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (client, pool, looks, sampling) = (
            client.clone(),
            pool.clone(),
            looks.clone(),
            sampling.clone(),
        );
        async move {
            while sampling.load(std::sync::atomic::Ordering::SeqCst) {
                let (l, _) = look(&client, &pool).await;
                looks.lock().unwrap().push(l);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    // The template changes, and at once the demand grows to 5 cores: 3 nodes.
    let patch = json!({"spec": {"template": {"labels": {"rollout": "v2"}}}});
    let changed = pools
        .patch(&pool, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let hash = template_hash(&changed.spec.template);
    deployments
        .patch(
            &pool,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"replicas": 5}})),
        )
        .await
        .unwrap();
    eventually(
        "3 nodes on the new template and 5 pods Running",
        CONVERGE,
        || async {
            let (l, list) = look(&client, &pool).await;
            let updated = list
                .iter()
                .filter(|n| hash_of(n) == Some(hash.as_str()))
                .count();
            let r = running_pods(&pods, &pool).await.len();
            (l.replicas == 3 && l.total == 3 && updated == 3 && l.ready_schedulable == 3 && r == 5)
                .then_some(())
                .ok_or(format!("{l:?}, {updated} updated, {r} running"))
        },
    )
    .await;
    // A few seconds more: a late flap would show here.
    tokio::time::sleep(Duration::from_secs(5)).await;
    sampling.store(false, std::sync::atomic::Ordering::SeqCst);
    sampler.await.unwrap();

    let looks = looks.lock().unwrap().clone();
    let mut sizes: Vec<i32> = looks.iter().map(|l| l.replicas).collect();
    sizes.dedup();
    assert_eq!(
        sizes,
        [2, 3],
        "the autoscaler asked for exactly what the demand needs, once, and never less"
    );
    for l in &looks {
        // Never fewer Ready schedulable nodes than the pool had before it grew, never more
        // nodes than the size asked for plus the budget (10% of up to 10 nodes: 1) plus
        // one draining.
        assert!(l.ready_schedulable >= 2, "{l:?}");
        assert!(l.total <= l.replicas as usize + 2, "{l:?}");
    }
    let p = pools.get(&pool).await.unwrap();
    let s = p.status.unwrap_or_default();
    assert_eq!((s.replicas, s.updated_replicas), (3, 3));

    deployments
        .delete(&pool, &DeleteParams::background())
        .await
        .unwrap();
    eventually("the pool back at 1 node", CONVERGE, || async {
        let (l, _) = look(&client, &pool).await;
        (l.replicas == 1 && l.total == 1)
            .then_some(())
            .ok_or(format!("{l:?}"))
    })
    .await;
    autoscalers
        .delete(&scaler.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
}
