//! generation vs resourceVersion in practice: a status-only change of a NodePool (which
//! bumps resourceVersion, not generation) triggers no reconcile; a spec change does.
//! Own binary, so that no other test's pools add reconciles to the count.
mod support;

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use shared_crd::NodePool;
use support::{config, operator};
use test_support::{eventually, fixtures, shared, unique_name};

#[tokio::test]
async fn a_status_only_change_triggers_no_reconcile() {
    let running = operator(config(None));
    let client = shared().client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client);
    let name = unique_name("pred");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&name, 1))
        .await
        .unwrap();
    eventually("the pool to settle", Duration::from_secs(30), || async {
        let p = pools.get(&name).await.map_err(|e| e.to_string())?;
        let s = p.status.unwrap_or_default();
        (s.ready_replicas == 1)
            .then_some(())
            .ok_or(format!("{s:?}"))
    })
    .await;
    // Let the last node events and the short requeues pass.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = running.reconciles.count("nodepool", "ok");
    let skipped_before = running.reconciles.skipped("nodepool", "NodePool");

    // Someone else writes the status (resourceVersion changes, generation does not).
    let bump = json!({"metadata": {"annotations": {"seen-by": "test"}}, "status": {"lastScaleTime": "2026-01-01T00:00:00Z"}});
    let after_status = pools
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&bump))
        .await
        .unwrap();
    assert_eq!(after_status.metadata.generation, Some(1));
    // The predicate has seen it (and dropped it): only then does "no reconcile" mean anything.
    eventually(
        "the status change to reach the predicate",
        Duration::from_secs(30),
        || async {
            let skipped = running.reconciles.skipped("nodepool", "NodePool");
            (skipped > skipped_before)
                .then_some(())
                .ok_or(format!("{skipped} skipped"))
        },
    )
    .await;
    assert_eq!(
        running.reconciles.count("nodepool", "ok"),
        before,
        "a status-only change caused a reconcile"
    );

    // A spec change (new generation) does reconcile, and observedGeneration follows.
    let spec = json!({"spec": {"replicas": 2}});
    pools
        .patch(&name, &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap();
    eventually("observedGeneration 2", Duration::from_secs(30), || async {
        let p = pools.get(&name).await.map_err(|e| e.to_string())?;
        let s = p.status.clone().unwrap_or_default();
        (s.observed_generation == Some(2) && s.ready_replicas == 2)
            .then_some(())
            .ok_or(format!(
                "{s:?} rv {}",
                p.resource_version().unwrap_or_default()
            ))
    })
    .await;
    assert!(running.reconciles.count("nodepool", "ok") > before);
}
