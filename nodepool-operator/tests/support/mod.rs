//! One nodepool-operator per test binary, running in-process against the binary's
//! control plane, on a runtime of its own (tests each have theirs).
#![allow(dead_code)]
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use e2e::shared;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};
use nodepool_operator::provider::VirtualSettings;
use nodepool_operator::{Config, Settings, run_operator};
use operator_kit::ConflictStrategy;
use operator_kit::http::Readiness;
use operator_kit::metrics::{ReconcileMetrics, WriteMetrics};

pub struct Running {
    pub writes: Arc<WriteMetrics>,
    pub reconciles: Arc<ReconcileMetrics>,
}

pub fn config(max_nodes: Option<u32>) -> Config {
    Config {
        settings: Settings {
            max_nodes,
            drain_timeout: Duration::from_secs(5),
            resync: Duration::from_secs(300),
            concurrency: 4,
        },
        provider: VirtualSettings {
            provisioning_delay: Duration::from_millis(300),
            taint_nodes: true,
            ..Default::default()
        },
        strategy: ConflictStrategy::Apply,
    }
}

/// Starts the operator with `config` the first time; later calls return the same one.
pub fn operator(config: Config) -> &'static Running {
    static RUNNING: OnceLock<Running> = OnceLock::new();
    RUNNING.get_or_init(|| {
        let instance = start(config);
        let running = Running {
            writes: instance.writes.clone(),
            reconciles: instance.reconciles.clone(),
        };
        // Runs for the life of the test binary.
        std::mem::forget(instance);
        running
    })
}

/// One operator process's worth of state, running in-process until stopped.
pub struct Instance {
    pub writes: Arc<WriteMetrics>,
    pub reconciles: Arc<ReconcileMetrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Instance {
    /// Stops it as a killed process stops: everything in memory is gone.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("operator thread");
        }
    }
}

/// Starts an operator with fresh metrics and waits until its caches have synced.
pub fn start(config: Config) -> Instance {
    let cp = shared();
    let kubeconfig = cp.kubeconfig().to_owned();
    let metrics = operator_kit::metrics::operator_metrics("nodepool_operator");
    let (writes, reconciles) = (metrics.writes, metrics.reconciles);
    let readiness = Readiness::default();
    let ready = readiness.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (w, r) = (writes.clone(), reconciles.clone());
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            let client = e2e::ControlPlane::client_for_kubeconfig(
                &kubeconfig,
                e2e::Identity::NodepoolOperator,
            )
            .await
            .expect("client");
            tokio::select! {
                () = run_operator(client, config, w, r, readiness) => {}
                _ = stopped => {}
            }
        });
        // Dropping the runtime cancels every task the operator spawned.
        rt.shutdown_timeout(Duration::from_secs(5));
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !ready.is_ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "operator not ready after 30s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Instance {
        writes,
        reconciles,
        stop: Some(stop),
        thread: Some(thread),
    }
}

/// Writes the operator sent so far (all resources and strategies but events).
pub fn written(writes: &WriteMetrics) -> u64 {
    ["nodepools/status", "autoscalers/status", "nodepools"]
        .iter()
        .flat_map(|r| ["lazy", "retry", "apply"].map(|s| writes.count(r, s, "written")))
        .sum()
}

/// The pool's nodes, from the API server.
pub async fn nodes_of(nodes: &Api<Node>, pool: &str) -> Vec<Node> {
    nodes
        .list(&ListParams::default().labels(&format!("nodepool.dev/pool={pool}")))
        .await
        .expect("list nodes")
        .items
}
