//! Leader election on a real API server, with client-go's timing (lease 15 s, renew
//! deadline 10 s, retry 2 s): of two replicas one leads; a released lease passes at once;
//! a leader cut off from the API server stops before the standby takes over.
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease as LeaseObject;
use kube::Api;
use operator_kit::leader::{LeaderError, Lease, Timing};
use prometheus_client::metrics::gauge::Gauge;
use test_support::proxy::{FaultProxy, upstream_of};
use test_support::{Identity, eventually, shared, unique_name};

fn lease(name: &str, identity: &str) -> Lease {
    Lease {
        namespace: "default".into(),
        name: name.into(),
        identity: identity.into(),
        timing: Timing::default(),
    }
}

/// One replica: while it leads, its "controller" counts a write every 100 ms.
struct Replica {
    writes: Arc<AtomicU64>,
    gauge: Gauge,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<(Result<(), LeaderError>, Instant)>,
}

impl Replica {
    fn start(client: kube::Client, lease: Lease) -> Self {
        let writes = Arc::new(AtomicU64::new(0));
        let gauge = Gauge::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = {
            let (writes, gauge) = (writes.clone(), gauge.clone());
            tokio::spawn(async move {
                let result = operator_kit::process::with_leader_election(
                    client,
                    Some(lease),
                    gauge,
                    move |mut leadership| async move {
                        let work = async {
                            leadership.acquired().await;
                            loop {
                                writes.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                        };
                        tokio::select! {
                            () = work => {}
                            _ = stopped => {}
                        }
                    },
                )
                .await;
                (result, Instant::now())
            })
        };
        Self {
            writes,
            gauge,
            stop: Some(stop),
            done,
        }
    }

    fn leading(&self) -> bool {
        self.gauge.get() == 1
    }

    async fn wait_leading(&self, what: &str) -> Instant {
        eventually(what, Duration::from_secs(40), || async {
            self.leading()
                .then(Instant::now)
                .ok_or_else(|| "not yet".to_owned())
        })
        .await
    }
}

async fn holder(client: &kube::Client, name: &str) -> (Option<String>, Option<i32>) {
    let lease = Api::<LeaseObject>::namespaced(client.clone(), "default")
        .get(name)
        .await
        .unwrap();
    let spec = lease.spec.unwrap_or_default();
    (spec.holder_identity, spec.lease_transitions)
}

#[tokio::test]
async fn one_replica_leads_and_a_released_lease_passes_at_once() {
    let name = unique_name("lease");
    let client = shared().client().await.unwrap();
    let mut a = Replica::start(client.clone(), lease(&name, "replica-a"));
    a.wait_leading("replica a to lead").await;
    let b = Replica::start(client.clone(), lease(&name, "replica-b"));
    // Several retry periods: a renews, b only tries.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(a.leading() && !b.leading(), "exactly one replica leads");
    assert_eq!(b.writes.load(Ordering::SeqCst), 0, "the standby wrote");
    assert_eq!(
        holder(&client, &name).await,
        (Some("replica-a".into()), Some(0))
    );

    // SIGTERM: the operator stops, then releases the lease.
    let released = Instant::now();
    a.stop.take().unwrap().send(()).unwrap();
    let (result, _) = (&mut a.done).await.unwrap();
    result.unwrap();
    assert!(!a.leading());
    let took_over = b.wait_leading("replica b to take over").await;
    // Without the release, b would wait the lease duration after the last renewal it saw.
    assert!(
        took_over - released < Timing::default().lease_duration,
        "b took over {:?} after the release: the lease ran out rather than being released",
        took_over - released
    );
    assert_eq!(
        holder(&client, &name).await,
        (Some("replica-b".into()), Some(1))
    );
    b.done.abort();
}

#[tokio::test]
async fn a_leader_cut_off_from_the_api_server_stops_before_the_standby_takes_over() {
    let name = unique_name("lease");
    let cp = shared();
    let direct = cp.client().await.unwrap();
    let mut config = cp.config_as(Identity::Admin).await.unwrap();
    let proxy = FaultProxy::start(upstream_of(&config).unwrap())
        .await
        .unwrap();
    config.cluster_url = proxy.url().parse().unwrap();
    let through_proxy = kube::Client::try_from(config).unwrap();

    let a = Replica::start(through_proxy, lease(&name, "replica-a"));
    a.wait_leading("replica a to lead").await;
    let b = Replica::start(direct.clone(), lease(&name, "replica-b"));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(!b.leading());

    // Renewals now hang: no error ever comes back to replica a.
    let cut = Instant::now();
    proxy.cut();
    let (result, stopped) = a.done.await.unwrap();
    assert!(
        matches!(result, Err(LeaderError::LeadershipLost { .. })),
        "{result:?}"
    );
    let writes_when_stopped = a.writes.load(Ordering::SeqCst);
    let took_over = b.wait_leading("replica b to take over").await;
    assert!(stopped < took_over, "replica a still led when b took over");
    // The last renewal was at most one retry period before the cut.
    let timing = Timing::default();
    assert!(
        stopped - cut <= timing.renew_deadline + Duration::from_secs(1),
        "replica a stopped {:?} after the cut",
        stopped - cut
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        a.writes.load(Ordering::SeqCst),
        writes_when_stopped,
        "replica a kept writing after it lost the lease"
    );
    assert_eq!(holder(&direct, &name).await.0.as_deref(), Some("replica-b"));
    proxy.restore();
    b.done.abort();
}
