//! Steady state is a feature: once the pools have converged, reconciles keep running
//! (resyncs every second here, unrelated edits, heartbeats) and nothing is written.
//! Alone in its binary: it counts every write of the operator, so no other test may
//! write meanwhile.
mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use shared_crd::NodePool;
use support::{Running, converged_pools, fast_config, nodes_of, operator, written};
use test_support::{eventually, shared};

const CONVERGE: Duration = Duration::from_secs(60);
const POOLS: usize = 20;

fn running() -> &'static Running {
    operator(fast_config())
}

async fn client() -> Client {
    shared().client().await.unwrap()
}

#[tokio::test]
async fn after_convergence_forced_reconciles_write_nothing() {
    let running = running();
    let client = client().await;
    let pools: Api<NodePool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client);
    let names = converged_pools(&pools, &nodes, "steady", POOLS, 2).await;
    let before: Vec<NodePool> = futures::future::join_all(names.iter().map(|n| pools.get(n)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    // Let the writes of convergence land, then count from here.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let writes_before = written(&running.writes);
    let reconciles_before = running.reconciles.count("nodepool", "ok");

    // Force reconciles three ways: resyncs (every second), an unrelated edit of each
    // pool, and a heartbeat written into each node's status by someone else.
    for name in &names {
        let annotate = json!({"metadata": {"annotations": {"touched-by": "test"}}});
        pools
            .patch(name, &PatchParams::default(), &Patch::Merge(&annotate))
            .await
            .unwrap();
        for node in nodes_of(&nodes, name).await {
            let mut ready = nodepool_core::nodes::ready_condition(&node)
                .unwrap()
                .clone();
            ready.last_heartbeat_time = Some(shared_crd::time::now());
            let beat = json!({"status": {"conditions": [ready]}});
            nodes
                .patch_status(
                    &node.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(&beat),
                )
                .await
                .unwrap();
        }
    }
    // Proof that the operator did reconcile: every pool at least 3 more times.
    eventually("3 more reconciles per pool", CONVERGE, || async {
        let now = running.reconciles.count("nodepool", "ok");
        (now >= reconciles_before + 3 * POOLS as u64)
            .then_some(())
            .ok_or(format!("{} reconciles since", now - reconciles_before))
    })
    .await;

    assert_eq!(
        written(&running.writes),
        writes_before,
        "reconciles with nothing to change wrote to the API server"
    );
    for old in &before {
        let now = pools.get(&old.name_any()).await.unwrap();
        assert_eq!(now.status, old.status, "the status changed without a cause");
    }
}
