//! Failover of nodepool-operator on a real API server: two replicas with leader election
//! (client-go's timing: lease 15 s, renew deadline 10 s, retry 2 s). Both are Ready while
//! one leads. The leader is SIGKILLed mid-scale-up, then the new leader mid-scale-down
//! (nodes cordoned, not yet gone); each time the standby takes over and the pool ends
//! with exactly the nodes it asks for: none missing, none doubled, none left cordoned.
//!
//! The same for autoscaler-operator: its leader is killed right after it has grown a
//! pool (nodes not yet Ready), then the next one right after it has shrunk it (nodes
//! draining); the pool ends at exactly the size its demand asks for.
//!
//! The replicas run as the admin user: the chart grants Lease updates through a Role in
//! its release namespace, which this harness does not install.
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use shared_crd::condition::{ConditionStatus, find};
use shared_crd::{Autoscaler, NodePool, ScalingRules};
use test_support::process::OperatorProcess;
use test_support::{eventually, fixtures, shared, unique_name};

/// A nodepool-operator replica with leader election, as the chart runs it.
async fn replica(kubeconfig: &Path, logs: &Path, name: &str) -> OperatorProcess {
    let args = [
        "--leader-elect",
        "--provisioning-delay-ms",
        "1500",
        "--drain-timeout-seconds",
        "5",
    ];
    // Ready once its caches have synced, leader or not.
    OperatorProcess::start("nodepool-operator", name, kubeconfig, None, logs, &args)
        .await
        .unwrap()
}

async fn wait_leading(replica: &OperatorProcess) -> Instant {
    let what = format!("{} to lead", replica.name());
    eventually(&what, Duration::from_secs(40), || async {
        replica
            .leading()
            .then(Instant::now)
            .ok_or_else(|| "not leading".to_owned())
    })
    .await
}

/// The pool's nodes: (all, cordoned, terminating).
async fn nodes_of(nodes: &Api<Node>, pool: &str) -> (usize, usize, usize) {
    test_support::pool_node_counts(nodes, pool).await
}

async fn converged(pools: &Api<NodePool>, nodes: &Api<Node>, pool: &str, size: usize) {
    eventually(
        &format!("pool {pool} at {size} nodes"),
        Duration::from_secs(90),
        || async {
            let seen = nodes_of(nodes, pool).await;
            let status = pools.get(pool).await.unwrap().status.unwrap_or_default();
            let ready = (status.replicas, status.ready_replicas);
            if seen == (size, 0, 0) && ready == (size as i32, size as i32) {
                Ok(())
            } else {
                Err(format!(
                    "nodes (all, cordoned, terminating) {seen:?}, status {ready:?}"
                ))
            }
        },
    )
    .await;
}

async fn resize(pools: &Api<NodePool>, pool: &str, replicas: i32) {
    pools
        .patch(
            pool,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap();
}

/// The tests of this binary run one at a time: each runs its own operators, which must
/// not act on the other's pools.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn the_standby_takes_over_when_the_leader_is_killed_mid_scale() {
    let _serial = SERIAL.lock().await;
    let cp = shared();
    let client = cp.client().await.unwrap();
    let logs = std::env::temp_dir().join(unique_name("failover-logs"));
    std::fs::create_dir_all(&logs).unwrap();
    let pools: Api<NodePool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let pool = unique_name("failover");

    let a = replica(cp.kubeconfig(), &logs, "replica-a").await;
    wait_leading(&a).await;
    let b = replica(cp.kubeconfig(), &logs, "replica-b").await;
    assert!(!b.leading(), "two leaders");

    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 1))
        .await
        .unwrap();
    converged(&pools, &nodes, &pool, 1).await;

    // Mid scale-up: some nodes created, not all Ready; the leader dies without a word.
    resize(&pools, &pool, 12).await;
    eventually("the scale-up to start", Duration::from_secs(30), || async {
        let (all, ..) = nodes_of(&nodes, &pool).await;
        (all > 1)
            .then_some(())
            .ok_or_else(|| format!("{all} nodes"))
    })
    .await;
    let killed = Instant::now();
    a.kill().await;
    let took_over = wait_leading(&b).await;
    eprintln!("replica b led {:?} after the kill", took_over - killed);
    converged(&pools, &nodes, &pool, 12).await;

    // Mid scale-down: nodes cordoned and draining; the new leader dies too.
    let c = replica(cp.kubeconfig(), &logs, "replica-c").await;
    assert!(!c.leading(), "two leaders");
    resize(&pools, &pool, 3).await;
    eventually(
        "the scale-down to start",
        Duration::from_secs(30),
        || async {
            let (all, cordoned, terminating) = nodes_of(&nodes, &pool).await;
            (cordoned + terminating > 0 || all < 12)
                .then_some(())
                .ok_or_else(|| format!("{all} nodes, none leaving"))
        },
    )
    .await;
    let killed = Instant::now();
    b.kill().await;
    let took_over = wait_leading(&c).await;
    eprintln!("replica c led {:?} after the kill", took_over - killed);
    converged(&pools, &nodes, &pool, 3).await;

    pools.delete(&pool, &Default::default()).await.unwrap();
    c.kill().await;
    let _ = std::fs::remove_dir_all(&logs);
}

/// An autoscaler-operator replica with leader election, as the chart runs it.
async fn autoscaler_replica(kubeconfig: &Path, logs: &Path, name: &str) -> OperatorProcess {
    OperatorProcess::start(
        "autoscaler-operator",
        name,
        kubeconfig,
        None,
        logs,
        &["--leader-elect"],
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn the_autoscaler_standby_takes_over_mid_scale_up_and_mid_scale_down() {
    let _serial = SERIAL.lock().await;
    let cp = shared();
    let client = cp.client().await.unwrap();
    let logs = std::env::temp_dir().join(unique_name("failover-as-logs"));
    let pools: Api<NodePool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // One nodepool-operator (its failover is the test above).
    let nodepool = OperatorProcess::start(
        "nodepool-operator",
        "nodepool-operator",
        cp.kubeconfig(),
        None,
        &logs,
        &[
            "--provisioning-delay-ms",
            "1500",
            "--drain-timeout-seconds",
            "5",
        ],
    )
    .await
    .unwrap();
    let x = autoscaler_replica(cp.kubeconfig(), &logs, "autoscaler-x").await;
    wait_leading(&x).await;
    let y = autoscaler_replica(cp.kubeconfig(), &logs, "autoscaler-y").await;
    assert!(!y.leading(), "two leaders");

    let pool = unique_name("as-failover");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 1))
        .await
        .unwrap();
    let mut scaler = fixtures::autoscaler(&unique_name("as"), &pool, 1, 6);
    scaler.spec.behavior.scale_down = ScalingRules {
        max_step: Some(10),
        ..ScalingRules::window(5)
    };
    let scaler_name = scaler.name_any();
    autoscalers
        .create(&PostParams::default(), &scaler)
        .await
        .unwrap();
    converged(&pools, &nodes, &pool, 1).await;

    // 4 pods of 1 core: 4 cores / (2 x 80%) = 3 nodes (they would pack on 2). The leader
    // dies right after it has grown the pool.
    let demand: Vec<String> = (0..4).map(|i| format!("{pool}-pod-{i}")).collect();
    for name in &demand {
        pods.create(
            &PostParams::default(),
            &fixtures::pod_wanting(name, &pool, "1", "1Gi"),
        )
        .await
        .unwrap();
    }
    eventually(
        "the autoscaler to grow the pool",
        Duration::from_secs(30),
        || async {
            let replicas = pools
                .get(&pool)
                .await
                .map_err(|e| e.to_string())?
                .spec
                .replicas;
            (replicas > 1)
                .then_some(())
                .ok_or(format!("spec.replicas {replicas}"))
        },
    )
    .await;
    let killed = Instant::now();
    x.kill().await;
    let took_over = wait_leading(&y).await;
    eprintln!("autoscaler y led {:?} after the kill", took_over - killed);
    converged(&pools, &nodes, &pool, 3).await;
    scaled_to(&autoscalers, &scaler_name, 3).await;

    // The demand goes; the new leader dies right after it has shrunk the pool.
    let z = autoscaler_replica(cp.kubeconfig(), &logs, "autoscaler-z").await;
    assert!(!z.leading(), "two leaders");
    for name in &demand {
        pods.delete(name, &Default::default()).await.unwrap();
    }
    eventually(
        "the autoscaler to shrink the pool",
        Duration::from_secs(60),
        || async {
            let replicas = pools
                .get(&pool)
                .await
                .map_err(|e| e.to_string())?
                .spec
                .replicas;
            (replicas < 3)
                .then_some(())
                .ok_or(format!("spec.replicas {replicas}"))
        },
    )
    .await;
    let killed = Instant::now();
    y.kill().await;
    let took_over = wait_leading(&z).await;
    eprintln!("autoscaler z led {:?} after the kill", took_over - killed);
    converged(&pools, &nodes, &pool, 1).await;
    scaled_to(&autoscalers, &scaler_name, 1).await;

    autoscalers
        .delete(&scaler_name, &Default::default())
        .await
        .unwrap();
    pools.delete(&pool, &Default::default()).await.unwrap();
    eventually("the pool's nodes gone", Duration::from_secs(60), || async {
        let (all, ..) = nodes_of(&nodes, &pool).await;
        (all == 0).then_some(()).ok_or(format!("{all} left"))
    })
    .await;
    z.kill().await;
    nodepool.kill().await;
    let _ = std::fs::remove_dir_all(&logs);
}

/// Waits until the Autoscaler reports `replicas` as its decision, with the conditions
/// of both operators present and true.
async fn scaled_to(autoscalers: &Api<Autoscaler>, name: &str, replicas: i32) {
    eventually(
        &format!("{name} at {replicas}"),
        Duration::from_secs(60),
        || async {
            let a = autoscalers.get(name).await.map_err(|e| e.to_string())?;
            let s = a.status.unwrap_or_default();
            let conditions_true = ["Active", "AbleToScale", "NodePoolReady"]
                .iter()
                .all(|t| find(&s.conditions, t).is_some_and(|c| c.status == ConditionStatus::True));
            (s.desired_replicas == Some(replicas) && conditions_true)
                .then_some(())
                .ok_or(format!("{s:?}"))
        },
    )
    .await;
}
