//! Heartbeats as the kubelet does them: each virtual node's Lease is made with one
//! request and renewed while the Node itself is not written; and a condition another
//! manager owns on a NodePool is never taken over or removed. Own binary: Lease renewals
//! every second.
mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use shared_crd::NodePool;
use shared_crd::condition::find;
use support::{Running, converged_pools, fast_config, nodes_of, operator};
use test_support::requests::apiserver_requests_answered;
use test_support::{eventually, shared};

const CONVERGE: Duration = Duration::from_secs(60);

fn running() -> &'static Running {
    operator(fast_config())
}

async fn client() -> Client {
    shared().client().await.unwrap()
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
async fn a_new_nodes_lease_is_made_with_one_request_not_a_renewal_that_finds_none() {
    running();
    let client = client().await;
    let pools: Api<NodePool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let not_found = || async {
        let answered = apiserver_requests_answered(&client, 404).await.unwrap();
        answered
            .get(&("PATCH".to_owned(), "leases".to_owned()))
            .copied()
            .unwrap_or(0)
    };
    let before = not_found().await;
    let names = converged_pools(&pools, &nodes, "newlease", 2, 2).await;
    let mut pool_nodes = Vec::new();
    for name in &names {
        pool_nodes.extend(nodes_of(&nodes, name).await);
    }
    eventually("a Lease per new node", CONVERGE, || async {
        for node in &pool_nodes {
            let lease = leases.get_opt(&node.name_any()).await;
            if !matches!(lease, Ok(Some(_))) {
                return Err(format!("no Lease for {}", node.name_any()));
            }
        }
        Ok(())
    })
    .await;
    // Renewals (every second here) go on while this counts: each finds its Lease.
    assert_eq!(
        not_found().await - before,
        0,
        "renewals sent for Leases that did not exist yet"
    );
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
