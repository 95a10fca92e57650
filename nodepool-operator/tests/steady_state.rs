//! Steady state is a feature: once the pools have converged, reconciles keep running
//! (resyncs every second here, unrelated edits, heartbeats) and nothing is written; node
//! heartbeats go to Leases, not to Node status; a condition another manager owns on a
//! NodePool is never taken over or removed. Own binary: a resync of 1 s and Lease
//! renewals every second would disturb the reconcile counts of other tests.
mod support;

use std::time::Duration;

use e2e::{eventually, fixtures, shared, unique_name};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use nodepool_operator::decide::is_ready;
use nodepool_operator::provider::VirtualSettings;
use serde_json::json;
use shared_crd::NodePool;
use shared_crd::condition::find;
use support::{Running, config, nodes_of, operator, written};

const CONVERGE: Duration = Duration::from_secs(60);
const POOLS: usize = 20;

fn running() -> &'static Running {
    let mut config = config(None);
    config.settings.resync = Duration::from_secs(1);
    config.provider = VirtualSettings {
        provisioning_delay: Duration::from_millis(300),
        lease_renew_interval: Duration::from_secs(1),
        ..Default::default()
    };
    operator(config)
}

async fn client() -> Client {
    shared().client().await.unwrap()
}

/// Creates `n` pools of `replicas` and waits until every one has converged.
async fn converged_pools(
    pools: &Api<NodePool>,
    nodes: &Api<Node>,
    prefix: &str,
    n: usize,
    replicas: i32,
) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|_| unique_name(prefix)).collect();
    for name in &names {
        pools
            .create(&PostParams::default(), &fixtures::nodepool(name, replicas))
            .await
            .unwrap();
    }
    for name in &names {
        eventually(&format!("{name} converged"), CONVERGE, || async {
            let ready = nodes_of(nodes, name)
                .await
                .iter()
                .filter(|n| is_ready(n))
                .count();
            let p = pools.get(name).await.map_err(|e| e.to_string())?;
            let s = p.status.clone().unwrap_or_default();
            let ok = ready == replicas as usize
                && s.ready_replicas == replicas
                && s.observed_generation == p.metadata.generation
                && find(&s.conditions, "Ready").is_some_and(|c| c.reason == "NodesReady");
            ok.then_some(()).ok_or(format!("{ready} ready, {s:?}"))
        })
        .await;
    }
    names
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
            let mut ready = nodepool_operator::decide::ready_condition(&node)
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

#[tokio::test]
async fn node_leases_are_renewed_and_node_status_is_not_rewritten() {
    running();
    let client = client().await;
    let pools: Api<NodePool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
    let names = converged_pools(&pools, &nodes, "lease", 3, 2).await;
    let mut pool_nodes = Vec::new();
    for name in &names {
        pool_nodes.extend(nodes_of(&nodes, name).await);
    }
    // Every node has a Lease held by itself, owned by the Node.
    let first = eventually("a Lease per node", CONVERGE, || async {
        let mut found = Vec::new();
        for node in &pool_nodes {
            match leases
                .get_opt(&node.name_any())
                .await
                .map_err(|e| e.to_string())?
            {
                Some(l) => found.push(l),
                None => return Err(format!("no Lease for {}", node.name_any())),
            }
        }
        Ok(found)
    })
    .await;
    for (lease, node) in first.iter().zip(&pool_nodes) {
        let spec = lease.spec.as_ref().unwrap();
        assert_eq!(
            spec.holder_identity.as_deref(),
            Some(node.name_any().as_str())
        );
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert_eq!(lease.owner_references()[0].uid, node.uid().unwrap());
    }
    let node_versions: Vec<_> = futures::future::join_all(pool_nodes.iter().map(|n| {
        let name = n.name_any();
        let nodes = nodes.clone();
        async move { nodes.get(&name).await }
    }))
    .await
    .into_iter()
    .map(|n| n.unwrap().resource_version())
    .collect();

    // Renewed (every second here), while the Nodes themselves are not written.
    eventually("every Lease renewed", CONVERGE, || async {
        for lease in &first {
            let now = leases
                .get(&lease.name_any())
                .await
                .map_err(|e| e.to_string())?;
            let (was, is) = (
                lease.spec.as_ref().and_then(|s| s.renew_time.clone()),
                now.spec.as_ref().and_then(|s| s.renew_time.clone()),
            );
            if is <= was {
                return Err(format!("{} not renewed: {was:?}", lease.name_any()));
            }
        }
        Ok(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (node, version) in pool_nodes.iter().zip(node_versions) {
        assert_eq!(
            nodes
                .get(&node.name_any())
                .await
                .unwrap()
                .resource_version(),
            version,
            "node {} was written while nothing changed",
            node.name_any()
        );
    }
}

#[tokio::test]
async fn a_condition_another_manager_owns_on_a_nodepool_is_never_taken_or_removed() {
    running();
    let client = client().await;
    let pools: Api<NodePool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client);
    let name = converged_pools(&pools, &nodes, "theirs", 1, 1)
        .await
        .remove(0);
    let theirs = json!({"apiVersion": "nodepool.dev/v1alpha1", "kind": "NodePool", "metadata": {"name": name},
        "status": {"conditions": [{"type": "Audited", "status": "True", "reason": "Checked",
        "message": "someone else's", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    pools
        .patch_status(
            &name,
            &PatchParams::apply("auditor").force(),
            &Patch::Apply(&theirs),
        )
        .await
        .unwrap();

    // The pool scales (a status write of ours) and settles again.
    let patch = json!({"spec": {"replicas": 3}});
    pools
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let pool = eventually("3 ready", CONVERGE, || async {
        let p = pools.get(&name).await.map_err(|e| e.to_string())?;
        let s = p.status.clone().unwrap_or_default();
        (s.ready_replicas == 3 && s.observed_generation == p.metadata.generation)
            .then_some(p)
            .ok_or(format!("{s:?}"))
    })
    .await;
    let conditions = pool.status.clone().unwrap().conditions;
    let audited = find(&conditions, "Audited").expect("their condition was removed");
    assert_eq!(audited.message, "someone else's");
    assert!(find(&conditions, "Ready").is_some() && find(&conditions, "Scaling").is_some());
    // Still theirs: no manager of ours owns that entry.
    for entry in pool.managed_fields() {
        let fields = entry
            .fields_v1
            .as_ref()
            .map(|f| f.0.to_string())
            .unwrap_or_default();
        let owns_it = fields.contains(r#"k:{\"type\":\"Audited\"}"#);
        let ours = entry
            .manager
            .as_deref()
            .is_some_and(|m| m.starts_with("nodepool-operator"));
        assert!(
            !(owns_it && ours),
            "{:?} took over the condition",
            entry.manager
        );
    }
    assert!(
        pool.managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("auditor"))
    );
}
