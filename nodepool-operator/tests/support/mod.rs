//! One nodepool-operator per test binary, running in-process against the binary's
//! control plane, on a runtime of its own (tests each have theirs).
#![allow(dead_code)]
use operator_kit::leader::Leadership;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, PostParams};
use nodepool_core::nodes::is_ready;
use nodepool_operator::provider::VirtualSettings;
use nodepool_operator::{Config, Settings, run_operator};
use operator_kit::ConflictStrategy;
use operator_kit::http::Readiness;
use operator_kit::metrics::{ReconcileMetrics, WriteMetrics};
use operator_kit::process::Parts;
use shared_crd::condition::find;
use shared_crd::{NodePool, field_manager};
use test_support::{eventually, fixtures, shared, unique_name};

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

/// Starts an operator with fresh metrics and waits until its caches have synced. With
/// `RUST_LOG` set, its log goes to stderr (`cargo test -- --nocapture` shows it).
pub fn start(config: Config) -> Instance {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let cp = shared();
    let kubeconfig = cp.kubeconfig().to_owned();
    let metrics = operator_kit::metrics::operator_metrics("nodepool_operator");
    let (writes, reconciles, observe) = (metrics.writes, metrics.reconciles, metrics.observe);
    let readiness = Readiness::default();
    let ready = readiness.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (w, r) = (writes.clone(), reconciles.clone());
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async move {
            // The operator's own client, as its main builds it, as the chart's identity.
            let kube_config = test_support::ControlPlane::config_for_kubeconfig(
                &kubeconfig,
                test_support::Identity::NodepoolOperator,
            )
            .await
            .expect("kubeconfig");
            let client = operator_kit::client::build(kube_config, observe).expect("client");
            tokio::select! {
                () = run_operator(Parts {
                    name: field_manager::NODEPOOL_OPERATOR,
                    client,
                    writes: w,
                    reconciles: r,
                    readiness,
                    leadership: Leadership::always(),
                }, config) => {}
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

/// A config for the steady-state and heartbeat tests: resyncs and Lease renewals every second.
pub fn fast_config() -> Config {
    let mut config = config(None);
    config.settings.resync = Duration::from_secs(1);
    config.provider = VirtualSettings {
        provisioning_delay: Duration::from_millis(300),
        lease_renew_interval: Duration::from_secs(1),
        ..Default::default()
    };
    config
}

/// Creates `n` pools of `replicas` and waits until every one has converged.
pub async fn converged_pools(
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
        eventually(
            &format!("{name} converged"),
            Duration::from_secs(60),
            || async {
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
            },
        )
        .await;
    }
    names
}
