//! Virtual nodes under the real node lifecycle controller (kube-controller-manager), with
//! the kubelet's default timing (Lease renewed every 10 s for 40 s, node status every
//! 5 minutes): for 2 minutes a pool's node stays Ready, untainted, and unwritten, its
//! Lease carrying the heartbeat alone. Beside it a Node nobody heartbeats turns NotReady,
//! which shows the controller is watching.
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use shared_crd::{NodePool, POOL_LABEL};
use test_support::process::OperatorProcess;
use test_support::{Topology, eventually, fixtures, shared, unique_name};

#[tokio::test]
async fn a_virtual_nodes_lease_keeps_it_ready_without_a_status_write() {
    let cp = shared();
    if Topology::from_env() == Topology::Bare && !cp.is_external() {
        eprintln!("skipped: no node lifecycle controller in a bare control plane");
        return;
    }
    let client = cp.client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let logs = std::env::temp_dir().join(unique_name("node-health"));
    // The kubelet's timing: the defaults.
    let operator = OperatorProcess::start(
        "nodepool-operator",
        "nodepool-operator",
        cp.kubeconfig(),
        Some("nodepool-operator"),
        &logs,
        &["--provisioning-delay-ms", "0"],
    )
    .await
    .unwrap();

    let pool = unique_name("health");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 1))
        .await
        .unwrap();
    let node = eventually("the pool's node Ready", Duration::from_secs(60), || async {
        let list = nodes
            .list(&ListParams::default().labels(&format!("{POOL_LABEL}={pool}")))
            .await
            .map_err(|e| e.to_string())?;
        list.items
            .into_iter()
            .find(|n| test_support::ready_status(n) == Some("True"))
            .ok_or("not yet".to_owned())
    })
    .await;
    let name = node.name_any();

    // A Node that nobody heartbeats, Ready when made.
    let silent = unique_name("silent");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let orphan: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": silent},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": now, "lastTransitionTime": now}]}
    }))
    .unwrap();
    nodes.create(&PostParams::default(), &orphan).await.unwrap();

    // Settle: the node's first status and the lifecycle controller's first look.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let watched_from = std::time::Instant::now();
    let version = nodes.get(&name).await.unwrap().resource_version();
    let renewed = eventually("the node's Lease", Duration::from_secs(30), || async {
        leases
            .get_opt(&name)
            .await
            .map_err(|e| e.to_string())?
            .map(|l| l.resource_version())
            .ok_or("none yet".to_owned())
    })
    .await;

    // Two minutes, three lease durations.
    let silent_down = eventually(
        "the silent node to be marked not Ready",
        Duration::from_secs(120),
        || async {
            let n = nodes.get(&silent).await.map_err(|e| e.to_string())?;
            match test_support::ready_status(&n) {
                Some("True") => Err("still Ready".to_owned()),
                other => Ok(other.map(str::to_owned)),
            }
        },
    )
    .await;
    eprintln!("the silent node went {silent_down:?}");
    tokio::time::sleep(Duration::from_secs(120).saturating_sub(watched_from.elapsed())).await;

    let after = nodes.get(&name).await.unwrap();
    assert_eq!(
        test_support::ready_status(&after),
        Some("True"),
        "{:?}",
        after.status
    );
    let taints: Vec<String> = after
        .spec
        .clone()
        .and_then(|s| s.taints)
        .unwrap_or_default()
        .into_iter()
        .map(|t| t.key)
        .collect();
    assert!(
        !taints.iter().any(|k| k.starts_with("node.kubernetes.io/")),
        "{taints:?}"
    );
    assert_eq!(
        after.resource_version(),
        version,
        "the Node was written while its Lease carried the heartbeat"
    );
    assert_ne!(
        leases.get(&name).await.unwrap().resource_version(),
        renewed,
        "the Lease was not renewed"
    );

    nodes
        .delete(&silent, &DeleteParams::default())
        .await
        .unwrap();
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
    operator.kill().await;
    let _ = std::fs::remove_dir_all(&logs);
}
