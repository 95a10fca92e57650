//! Failover of nodepool-operator on a real API server: two replicas with leader election
//! (client-go's timing: lease 15 s, renew deadline 10 s, retry 2 s). Both are Ready while
//! one leads. The leader is SIGKILLed mid-scale-up, then the new leader mid-scale-down
//! (nodes cordoned, not yet gone); each time the standby takes over and the pool ends
//! with exactly the nodes it asks for: none missing, none doubled, none left cordoned.
//!
//! The replicas run as the admin user: the chart grants Lease updates through a Role in
//! its release namespace, which this harness does not install.
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use e2e::timeline::http_get;
use e2e::{eventually, fixtures, shared, unique_name};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use shared_crd::{NodePool, POOL_LABEL};

struct Replica {
    child: tokio::process::Child,
    addr: String,
}

impl Replica {
    async fn start(kubeconfig: &Path, logs: &Path, identity: &str) -> Self {
        let addr = format!("127.0.0.1:{}", e2e::control_plane::free_port().unwrap());
        let log_path = logs.join(format!("{identity}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child =
            tokio::process::Command::new(e2e::operator_bin_dir().join("nodepool-operator"))
                .args([
                    "--leader-elect",
                    "--metrics-addr",
                    &addr,
                    "--log-format",
                    "json",
                ])
                .args([
                    "--provisioning-delay-ms",
                    "1500",
                    "--drain-timeout-seconds",
                    "5",
                ])
                .env("KUBECONFIG", kubeconfig)
                .env("POD_NAME", identity)
                .env("RUST_LOG", "info,kube=warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .kill_on_drop(true)
                .spawn()
                .unwrap();
        // Ready once its caches have synced, leader or not.
        e2e::wait_until_ready(
            identity,
            &mut child,
            &addr,
            &log_path,
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        Self { child, addr }
    }

    fn leading(&self) -> bool {
        http_get(&self.addr, "/metrics").is_ok_and(|m| {
            m.lines()
                .any(|l| l.starts_with("nodepool_operator_leader ") && l.ends_with(" 1"))
        })
    }

    async fn wait_leading(&self, what: &str) -> Instant {
        eventually(what, Duration::from_secs(40), || async {
            self.leading()
                .then(Instant::now)
                .ok_or_else(|| "not leading".to_owned())
        })
        .await
    }

    async fn kill(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

/// The pool's nodes: (all, cordoned, terminating).
async fn nodes_of(nodes: &Api<Node>, pool: &str) -> (usize, usize, usize) {
    let list = nodes
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={pool}")))
        .await
        .unwrap();
    let cordoned = list
        .items
        .iter()
        .filter(|n| n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true))
        .count();
    let terminating = list
        .items
        .iter()
        .filter(|n| n.metadata.deletion_timestamp.is_some())
        .count();
    (list.items.len(), cordoned, terminating)
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

#[tokio::test]
async fn the_standby_takes_over_when_the_leader_is_killed_mid_scale() {
    let cp = shared();
    let client = cp.client().await.unwrap();
    let logs = std::env::temp_dir().join(unique_name("failover-logs"));
    std::fs::create_dir_all(&logs).unwrap();
    let pools: Api<NodePool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let pool = unique_name("failover");

    let a = Replica::start(cp.kubeconfig(), &logs, "replica-a").await;
    a.wait_leading("replica a to lead").await;
    let b = Replica::start(cp.kubeconfig(), &logs, "replica-b").await;
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
    let took_over = b.wait_leading("replica b to take over").await;
    eprintln!("replica b led {:?} after the kill", took_over - killed);
    converged(&pools, &nodes, &pool, 12).await;

    // Mid scale-down: nodes cordoned and draining; the new leader dies too.
    let c = Replica::start(cp.kubeconfig(), &logs, "replica-c").await;
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
    let took_over = c.wait_leading("replica c to take over").await;
    eprintln!("replica c led {:?} after the kill", took_over - killed);
    converged(&pools, &nodes, &pool, 3).await;

    pools.delete(&pool, &Default::default()).await.unwrap();
    c.kill().await;
    let _ = std::fs::remove_dir_all(&logs);
}
