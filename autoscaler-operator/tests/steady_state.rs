//! Both operators converged, then forced to reconcile (resyncs every 2 s, unrelated edits
//! of every object): neither writes. Alone in its binary: it counts every write of both
//! operators, so no other test may write meanwhile.
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use shared_crd::condition::find;
use shared_crd::{Autoscaler, NodePool};
use support::{operators, pod, ready_nodes, written};
use test_support::{eventually, fixtures, shared, unique_name};

const CONVERGE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn after_convergence_both_operators_write_nothing_while_reconciling() {
    let running = operators();
    let client = shared().client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client, "default");
    const N: usize = 6;
    let mut cases = Vec::new();
    for _ in 0..N {
        let pool = unique_name("idle");
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
        // 3 pods of 1 core at 80% of 2 cores: 2 nodes.
        for i in 0..3 {
            pods.create(
                &PostParams::default(),
                &pod(&format!("{pool}-{i}"), &pool, "1"),
            )
            .await
            .unwrap();
        }
        cases.push((pool, scaler));
    }
    for (pool, scaler) in &cases {
        eventually(&format!("{pool} at 2 ready nodes"), CONVERGE, || async {
            let ready = ready_nodes(&nodes, pool).await;
            let a = autoscalers.get(scaler).await.map_err(|e| e.to_string())?;
            let s = a.status.unwrap_or_default();
            let np_ready = find(&s.conditions, "NodePoolReady").is_some();
            (ready == 2 && s.desired_replicas == Some(2) && np_ready)
                .then_some(())
                .ok_or(format!("{ready} ready, {s:?}"))
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = (
        written(&running.autoscaler_writes),
        written(&running.nodepool_writes),
    );
    let reconciles = running.autoscaler_reconciles.count("autoscaler", "ok");

    // Force reconciles: resyncs (every 2 s here) and unrelated edits of every object.
    for (pool, scaler) in &cases {
        let touch = json!({"metadata": {"annotations": {"touched-by": "test"}}});
        let params = PatchParams::default();
        autoscalers
            .patch(scaler, &params, &Patch::Merge(&touch))
            .await
            .unwrap();
        pools
            .patch(pool, &params, &Patch::Merge(&touch))
            .await
            .unwrap();
        for i in 0..3 {
            pods.patch(&format!("{pool}-{i}"), &params, &Patch::Merge(&touch))
                .await
                .unwrap();
        }
    }
    eventually("2 more reconciles per Autoscaler", CONVERGE, || async {
        let now = running.autoscaler_reconciles.count("autoscaler", "ok");
        (now >= reconciles + 2 * N as u64)
            .then_some(())
            .ok_or(format!("{} since", now - reconciles))
    })
    .await;
    assert_eq!(
        (
            written(&running.autoscaler_writes),
            written(&running.nodepool_writes)
        ),
        before,
        "(autoscaler, nodepool) writes while nothing changed"
    );
    for (pool, _) in &cases {
        for i in 0..3 {
            pods.delete(&format!("{pool}-{i}"), &DeleteParams::default())
                .await
                .unwrap();
        }
    }
}
