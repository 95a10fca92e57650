//! Steady state is a feature: once the pools have converged, and again once a rollout
//! has replaced every node, reconciles keep running (resyncs every second here,
//! unrelated edits, heartbeats) and nothing is written.
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

/// Waits until every pool has been reconciled at least 3 more times since `before`: the
/// proof that the operator did reconcile while nothing was written.
async fn reconciled_three_times(running: &Running, before: u64) {
    eventually("3 more reconciles per pool", CONVERGE, || async {
        let now = running.reconciles.count("nodepool", "ok");
        (now >= before + 3 * POOLS as u64)
            .then_some(())
            .ok_or(format!("{} reconciles since", now - before))
    })
    .await;
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
    touch(&pools, &names, "test").await;
    for name in &names {
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
    reconciled_three_times(running, reconciles_before).await;

    assert_eq!(
        written(&running.writes),
        writes_before,
        "reconciles with nothing to change wrote to the API server"
    );
    for old in &before {
        let now = pools.get(&old.name_any()).await.unwrap();
        assert_eq!(now.status, old.status, "the status changed without a cause");
    }

    // Then a rollout: every pool's template changes, every node is replaced; once the
    // pools are up to date again, the same forced reconciles write nothing either.
    let mut hashes = Vec::new();
    for name in &names {
        let patch = json!({"spec": {"template": {"labels": {"rollout": "2"}}}});
        let p = pools
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        hashes.push(nodepool_core::template::template_hash(&p.spec.template));
    }
    for (name, hash) in names.iter().zip(&hashes) {
        eventually(&format!("{name} rolled out"), CONVERGE, || async {
            let list = nodes_of(&nodes, name).await;
            let updated = list
                .iter()
                .filter(|n| nodepool_core::template::hash_of(n) == Some(hash.as_str()))
                .filter(|n| nodepool_core::nodes::is_ready(n))
                .count();
            let p = pools.get(name).await.map_err(|e| e.to_string())?;
            let s = p.status.unwrap_or_default();
            let up_to_date = shared_crd::condition::find(&s.conditions, "Disrupting")
                .is_some_and(|c| c.reason == "UpToDate");
            (list.len() == 2 && updated == 2 && s.updated_replicas == 2 && up_to_date)
                .then_some(())
                .ok_or(format!("{} nodes, {updated} updated, {s:?}", list.len()))
        })
        .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_rollout: Vec<NodePool> =
        futures::future::join_all(names.iter().map(|n| pools.get(n)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let node_versions = |list: Vec<Node>| -> Vec<(String, Option<String>)> {
        list.into_iter()
            .map(|n| (n.name_any(), n.metadata.resource_version))
            .collect()
    };
    // Settled first: the control plane's own writes to new nodes (the node lifecycle
    // controller, the first heartbeat status) can land seconds after the rollout. Two
    // looks 2 s apart that agree, then the forced reconciles must change nothing.
    let mut nodes_before = Vec::new();
    for _ in 0..10 {
        let mut first = Vec::new();
        for name in &names {
            first.push(node_versions(nodes_of(&nodes, name).await));
        }
        let settled = first == nodes_before;
        nodes_before = first;
        if settled {
            break;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let writes_before = written(&running.writes);
    let reconciles_before = running.reconciles.count("nodepool", "ok");
    touch(&pools, &names, "test-again").await;
    reconciled_three_times(running, reconciles_before).await;
    assert_eq!(
        written(&running.writes),
        writes_before,
        "reconciles after a rollout wrote to the API server"
    );
    for (old, name) in after_rollout.iter().zip(&names) {
        let now = pools.get(name).await.unwrap();
        assert_eq!(now.status, old.status, "the status changed without a cause");
    }
    for (before, name) in nodes_before.into_iter().zip(&names) {
        assert_eq!(
            node_versions(nodes_of(&nodes, name).await),
            before,
            "a node was created, deleted or written after the rollout"
        );
    }
}

/// An edit of each pool that changes nothing it acts on (an annotation set to `value`).
async fn touch(pools: &Api<NodePool>, names: &[String], value: &str) {
    let annotate = json!({"metadata": {"annotations": {"touched-by": value}}});
    for name in names {
        pools
            .patch(name, &PatchParams::default(), &Patch::Merge(&annotate))
            .await
            .unwrap();
    }
}
