//! Both operators, in-process, against this test binary's control plane, on a runtime
//! of their own: nodepool-operator (fast provisioning) and autoscaler-operator.
#![allow(dead_code)]
use operator_kit::leader::Leadership;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use operator_kit::ConflictStrategy;
use operator_kit::http::Readiness;
use operator_kit::metrics::{ReconcileMetrics, WriteMetrics};
use operator_kit::process::Parts;
use shared_crd::field_manager;
use test_support::{ControlPlane, Identity, shared};

pub struct Running {
    pub autoscaler_writes: Arc<WriteMetrics>,
    pub autoscaler_reconciles: Arc<ReconcileMetrics>,
    pub nodepool_writes: Arc<WriteMetrics>,
}

pub fn operators() -> &'static Running {
    static RUNNING: OnceLock<Running> = OnceLock::new();
    RUNNING.get_or_init(|| {
        let kubeconfig = shared().kubeconfig().to_owned();
        let np = operator_kit::metrics::operator_metrics("nodepool_operator");
        let (np_writes, np_reconciles) = (np.writes, np.reconciles);
        let auto = operator_kit::metrics::operator_metrics("autoscaler_operator");
        let (as_writes, as_reconciles) = (auto.writes, auto.reconciles);
        let running = Running {
            autoscaler_writes: as_writes.clone(),
            autoscaler_reconciles: as_reconciles.clone(),
            nodepool_writes: np_writes.clone(),
        };
        let (np_ready, as_ready) = (Readiness::default(), Readiness::default());
        let (np_flag, as_flag) = (np_ready.clone(), as_ready.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                // Each operator as its own user, with only the ClusterRole its chart grants,
                // and its own client, as its main builds it.
                let kubeconfig = &kubeconfig;
                let client_as = |identity| async move {
                    let config = ControlPlane::config_for_kubeconfig(kubeconfig, identity)
                        .await
                        .expect("kubeconfig");
                    operator_kit::client::build(config, Default::default()).expect("client")
                };
                let np_client = client_as(Identity::NodepoolOperator).await;
                let as_client = client_as(Identity::AutoscalerOperator).await;
                let np = nodepool_operator::Config {
                    settings: nodepool_operator::Settings {
                        max_nodes: None,
                        drain_timeout: Duration::from_secs(5),
                        resync: Duration::from_secs(300),
                        concurrency: 4,
                    },
                    provider: nodepool_operator::provider::VirtualSettings {
                        provisioning_delay: Duration::from_millis(300),
                        taint_nodes: true,
                        ..Default::default()
                    },
                    strategy: ConflictStrategy::Apply,
                };
                let auto = autoscaler_operator::Config {
                    settings: autoscaler_operator::Settings {
                        // Often, so that the steady-state test sees many resyncs.
                        resync: Duration::from_secs(2),
                        concurrency: 4,
                    },
                    strategy: ConflictStrategy::Apply,
                };
                tokio::join!(
                    nodepool_operator::run_operator(
                        Parts {
                            name: field_manager::NODEPOOL_OPERATOR,
                            client: np_client,
                            writes: np_writes,
                            reconciles: np_reconciles,
                            readiness: np_ready,
                            leadership: Leadership::always(),
                        },
                        np,
                    ),
                    autoscaler_operator::run_operator(
                        Parts {
                            name: field_manager::AUTOSCALER_OPERATOR,
                            client: as_client,
                            writes: as_writes,
                            reconciles: as_reconciles,
                            readiness: as_ready,
                            leadership: Leadership::always(),
                        },
                        auto,
                    ),
                );
            });
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !(np_flag.is_ready() && as_flag.is_ready()) {
            assert!(
                std::time::Instant::now() < deadline,
                "operators not ready after 30s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        running
    })
}

/// Writes an operator sent so far (all resources and strategies; events not counted).
pub fn written(writes: &WriteMetrics) -> u64 {
    ["nodepools/status", "autoscalers/status", "nodepools"]
        .iter()
        .flat_map(|r| ["lazy", "retry", "apply"].map(|s| writes.count(r, s, "written")))
        .sum()
}

/// A pending pod of `cpu` cores that wants `pool`.
pub fn pod(name: &str, pool: &str, cpu: &str) -> k8s_openapi::api::core::v1::Pod {
    test_support::fixtures::pod_wanting(name, pool, cpu, "256Mi")
}

/// Ready nodes of `pool`, from the API server.
#[allow(unused_imports)]
pub use test_support::ready_nodes;
