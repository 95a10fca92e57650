//! Writes lose nothing: with both operators as processes, in each conflict strategy, a pool
//! that a user `kubectl apply`-ed keeps every label and annotation through the operators'
//! writes, kubectl's three-way base (`last-applied-configuration`) among them, so the
//! user's next `kubectl apply` still prunes what they removed from the manifest.
//!
//! The operators' caches are trimmed (no `managedFields`, no last-applied annotation, and
//! no pool conditions in the autoscaler's), so this is what a PUT built from a cached copy
//! used to lose.
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use shared_crd::{Autoscaler, NodePool};
use test_support::process::OperatorProcess;
use test_support::{eventually, shared, unique_name};

const CONVERGE: Duration = Duration::from_secs(90);
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

fn kubectl_apply(kubeconfig: &Path, manifest: &str) {
    let kubectl = test_support::control_plane::assets_dir()
        .unwrap()
        .join("kubectl");
    let mut child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["apply", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(manifest.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The user's manifest: a pool of `replicas` with the label `team` when `labelled`, and
/// the annotation `owner`; and its Autoscaler (3 to 5 nodes).
fn manifest(pool: &str, replicas: i32, labelled: bool) -> String {
    let labels = if labelled {
        "\n  labels:\n    team: web"
    } else {
        ""
    };
    format!(
        "apiVersion: nodepool.dev/v1alpha1
kind: NodePool
metadata:
  name: {pool}{labels}
  annotations:
    owner: someone
spec:
  replicas: {replicas}
  template:
    capacity: {{cpu: \"2\", memory: 8Gi, pods: \"110\"}}
---
apiVersion: nodepool.dev/v1alpha1
kind: Autoscaler
metadata:
  name: {pool}
spec:
  nodePoolRef: {{name: {pool}}}
  minReplicas: 3
  maxReplicas: 5
"
    )
}

async fn operators(strategy: &str, logs: &Path) -> (OperatorProcess, OperatorProcess) {
    let kubeconfig = shared().kubeconfig();
    let args = ["--conflict-strategy", strategy];
    let np_args = [&args[..], &["--provisioning-delay-ms", "300"]].concat();
    let np = OperatorProcess::start(
        "nodepool-operator",
        &format!("nodepool-operator-{strategy}"),
        kubeconfig,
        Some("nodepool-operator"),
        logs,
        &np_args,
    )
    .await
    .unwrap();
    let auto = OperatorProcess::start(
        "autoscaler-operator",
        &format!("autoscaler-operator-{strategy}"),
        kubeconfig,
        Some("autoscaler-operator"),
        logs,
        &args,
    )
    .await
    .unwrap();
    (np, auto)
}

#[tokio::test]
async fn every_strategy_keeps_what_kubectl_apply_and_the_user_put_on_a_pool() {
    let cp = shared();
    let client = cp.client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let logs = std::env::temp_dir().join(unique_name("lose-nothing"));
    // One pair of operators at a time: each reconciles every pool of the cluster.
    for strategy in ["lazy", "retry", "apply"] {
        let (np, auto) = operators(strategy, &logs).await;
        let pool = unique_name(&format!("applied-{strategy}"));
        kubectl_apply(cp.kubeconfig(), &manifest(&pool, 1, true));

        // The autoscaler writes spec.replicas 3; nodepool-operator makes the nodes and
        // writes the status.
        eventually(&format!("{strategy}: {pool} at 3"), CONVERGE, || async {
            let p = pools.get(&pool).await.map_err(|e| e.to_string())?;
            let s = p.status.clone().unwrap_or_default();
            (p.spec.replicas == 3 && s.ready_replicas == 3 && s.replicas == 3)
                .then_some(())
                .ok_or(format!("spec {}, status {s:?}", p.spec.replicas))
        })
        .await;
        let p = pools.get(&pool).await.unwrap();
        let last_applied = p.annotations().get(LAST_APPLIED);
        assert!(
            last_applied.is_some_and(|a| a.contains("\"team\":\"web\"")),
            "{strategy}: kubectl's three-way base lost: {:?}",
            p.annotations()
        );
        assert_eq!(
            p.annotations().get("owner").map(String::as_str),
            Some("someone"),
            "{strategy}"
        );
        assert_eq!(
            p.labels().get("team").map(String::as_str),
            Some("web"),
            "{strategy}"
        );
        // What the PUT strategies pay for building each PUT from the live object: a read.
        let reads = auto.metric(
            "api_requests_total",
            &["verb=\"get\"", "resource=\"nodepools\""],
        );
        if strategy == "apply" {
            assert_eq!(reads, 0.0, "apply reads nothing before it writes");
        } else {
            assert!(reads >= 1.0, "{strategy}: {reads} reads");
        }

        // The user drops the label from the manifest (and sets the size the pool has):
        // the next apply prunes it, which only the three-way base can tell it to do.
        kubectl_apply(cp.kubeconfig(), &manifest(&pool, 3, false));
        let p = pools.get(&pool).await.unwrap();
        assert_eq!(
            p.labels().get("team"),
            None,
            "{strategy}: the removed label was not pruned"
        );
        assert_eq!(p.spec.replicas, 3);

        autoscalers
            .delete(&pool, &DeleteParams::default())
            .await
            .unwrap();
        pools.delete(&pool, &DeleteParams::default()).await.unwrap();
        eventually(&format!("{strategy}: {pool} gone"), CONVERGE, || async {
            let left = test_support::pool_node_counts(&nodes, &pool).await.0;
            let gone = pools.get_opt(&pool).await.map_err(|e| e.to_string())?;
            (left == 0 && gone.is_none())
                .then_some(())
                .ok_or(format!("{left} nodes left"))
        })
        .await;
        np.kill().await;
        auto.kill().await;
    }
    let _ = std::fs::remove_dir_all(&logs);
}
