//! Nothing a restart loses changes what the operator writes: after a restart the pools'
//! status is exactly what it was (lastScaleTime and transition times included) and the
//! new process writes nothing. Own binary: it stops and starts the operator.
mod support;

use std::time::Duration;

use kube::ResourceExt;
use kube::api::{Api, PostParams};
use shared_crd::NodePool;
use support::{config, start, written};
use test_support::{eventually, fixtures, shared, unique_name};

const POOLS: usize = 5;

#[tokio::test]
async fn status_survives_a_restart_and_the_new_process_writes_nothing() {
    let first = start(config(None));
    let pools: Api<NodePool> = Api::all(shared().client().await.unwrap());
    let names: Vec<String> = (0..POOLS).map(|_| unique_name("restart")).collect();
    for name in &names {
        pools
            .create(&PostParams::default(), &fixtures::nodepool(name, 2))
            .await
            .unwrap();
    }
    let mut before = Vec::new();
    for name in &names {
        before.push(
            eventually(
                &format!("{name} converged"),
                Duration::from_secs(60),
                || async {
                    let p = pools.get(name).await.map_err(|e| e.to_string())?;
                    let s = p.status.clone().unwrap_or_default();
                    (s.ready_replicas == 2 && s.last_scale_time.is_some())
                        .then_some(p)
                        .ok_or(format!("{s:?}"))
                },
            )
            .await,
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<NodePool> = futures::future::join_all(names.iter().map(|n| pools.get(n)))
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    first.stop();

    let second = start(config(None));
    // The new process reconciles every pool once from its fresh caches...
    eventually(
        "a reconcile of each pool",
        Duration::from_secs(30),
        || async {
            let n = second.reconciles.count("nodepool", "ok");
            (n >= POOLS as u64)
                .then_some(())
                .ok_or(format!("{n} reconciles"))
        },
    )
    .await;
    // ...each of which has reached its write and found it unchanged...
    eventually(
        "each pool's status found unchanged",
        Duration::from_secs(30),
        || async {
            let n = second
                .writes
                .count("nodepools/status", "apply", "unchanged");
            (n >= POOLS as u64)
                .then_some(())
                .ok_or(format!("{n} unchanged"))
        },
    )
    .await;
    // ...and writes nothing.
    assert_eq!(
        written(&second.writes),
        0,
        "the restarted operator rewrote status"
    );
    for old in &before {
        let now = pools.get(&old.name_any()).await.unwrap();
        assert_eq!(
            now.status,
            old.status,
            "{}: status changed over a restart",
            old.name_any()
        );
        assert_eq!(now.resource_version(), old.resource_version());
    }
    second.stop();
}
