//! What the tests of every crate stand on: a real Kubernetes control plane (etcd and
//! kube-apiserver, as envtest runs them, with kube-scheduler and kube-controller-manager
//! by default) shared by one test binary, or an existing cluster named by
//! `E2E_KUBECONFIG` (e.g. kind); fixtures; operators run as processes; proxies that
//! inject faults; a Docker engine for the image tests; and the waits they all use.
#![forbid(unsafe_code)]

pub mod control_plane;

pub use control_plane::{Component, ControlPlane, Identity, Topology, shared, unique_name};
pub mod docker;
pub mod fixtures;
pub mod process;
pub mod proxy;
pub mod requests;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what` and the
/// last value seen by `describe`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits for an events.k8s.io Event with `reason` about the object named `regarding`,
/// and returns it.
pub async fn wait_for_event(
    client: kube::Client,
    reason: &str,
    regarding: &str,
    timeout: Duration,
) -> k8s_openapi::api::events::v1::Event {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = kube::Api::all(client);
    eventually(
        &format!("a {reason} event about {regarding}"),
        timeout,
        || async {
            let list = events
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
                })
                .cloned()
                .ok_or_else(|| "none yet".to_owned())
        },
    )
    .await
}

/// The path of one of the repository's Helm charts.
pub fn chart(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts")
        .join(name)
}

/// Runs the cached helm against the cluster of `kubeconfig`; panics with its output if it
/// fails.
pub fn helm(kubeconfig: &std::path::Path, args: &[&str]) -> String {
    let assets = control_plane::assets_dir().expect("control-plane assets");
    let out = std::process::Command::new(assets.join("helm"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("helm runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm {args:?}: {text}");
    text
}

/// The debug builds of both operators, built first if this test runs on its own (`cargo
/// test` builds them for their own packages' tests).
pub fn operator_bin_dir() -> std::path::PathBuf {
    use std::path::PathBuf;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("debug");
    if !dir.join("nodepool-operator").exists() || !dir.join("autoscaler-operator").exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "nodepool-operator",
                "-p",
                "autoscaler-operator",
                "--bins",
            ])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the operators failed");
    }
    dir
}

/// Waits until an operator process started by a test answers `ok` on `/readyz` at
/// `addr`; fails at once if it exits, or after `timeout`, naming its log.
pub async fn wait_until_ready(
    name: &str,
    child: &mut tokio::process::Child,
    addr: &str,
    log: &std::path::Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !http_get(addr, "/readyz").is_ok_and(|b| b.trim() == "ok") {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{name} exited at start ({status}); see {}", log.display());
        }
        if Instant::now() > deadline {
            anyhow::bail!("{name} not ready after {timeout:?}; see {}", log.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// The status of a node's Ready condition (`True`, `False`, `Unknown`), if it has one.
pub fn ready_status(node: &k8s_openapi::api::core::v1::Node) -> Option<&str> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

/// How many of a pool's nodes are Ready, as the API server has them.
pub async fn ready_nodes(nodes: &kube::Api<k8s_openapi::api::core::v1::Node>, pool: &str) -> usize {
    nodes
        .list(&kube::api::ListParams::default().labels(&shared_crd::NodePool::node_selector(pool)))
        .await
        .expect("listing nodes")
        .items
        .iter()
        .filter(|n| ready_status(n) == Some("True"))
        .count()
}

/// A pool's nodes as the API server has them: (all, cordoned, terminating).
pub async fn pool_node_counts(
    nodes: &kube::Api<k8s_openapi::api::core::v1::Node>,
    pool: &str,
) -> (usize, usize, usize) {
    let list = nodes
        .list(
            &kube::api::ListParams::default().labels(&format!("{}={pool}", shared_crd::POOL_LABEL)),
        )
        .await
        .expect("listing nodes");
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

/// `GET path` from the HTTP server at `addr` (an operator's `/metrics` or `/readyz`); the
/// body of a 200, else the status line as the error.
pub fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_owned())
}

/// The pods labelled `app=<app>` that are Running and not being deleted, as (pod, node).
pub async fn running_pods(
    pods: &kube::Api<k8s_openapi::api::core::v1::Pod>,
    app: &str,
) -> Vec<(String, String)> {
    use kube::ResourceExt;
    pods.list(&kube::api::ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .map(|p| {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            (p.name_any(), node.unwrap_or_default())
        })
        .collect()
}
