//! `make bench-envelope` small (200 pods), to prove the scenario works: on the full
//! control plane, 200 pods onto a pool at its final size, then onto a pool of 1 node
//! that the Autoscaler grows, then back to 0. Every pod ends Running, the pool at its
//! final size with exactly the nodes it needs, nothing is evicted on the way down, and
//! idle means no writes. Nothing about time is asserted: that is the benchmark's job.
use std::time::Duration;

use test_support::control_plane::ClientLimits;
use tools::envelope::{self, Kind, Options};

#[tokio::test]
async fn a_big_deployment_lands_on_an_autoscaled_pool_and_goes_away() {
    let logs = std::env::temp_dir().join(test_support::unique_name("envelope-logs"));
    let opts = Options {
        bin_dir: test_support::operator_bin_dir(),
        log_dir: logs.clone(),
        pods: 200,
        node_cpu: 8,
        limits: ClientLimits {
            qps: 200,
            burst: 400,
        },
        scale_down_window: Duration::from_secs(5),
        idle: Duration::from_secs(10),
        deadline: Duration::from_secs(240),
    };
    let nodes = opts.nodes();
    assert_eq!(nodes, 25);
    let limit = envelope::run(Kind::Limit, &opts).await.unwrap();
    let auto = envelope::run(Kind::Autoscaled, &opts).await.unwrap();
    println!("{}", envelope::table(&[limit.clone(), auto.clone()]));

    for run in [&limit, &auto] {
        let last = run.samples.last().expect("samples");
        assert_eq!(last.running, 200, "{:?}", run.kind);
        assert_eq!((last.desired, last.ready), (nodes, nodes), "{:?}", run.kind);
        assert_eq!(
            run.idle_total, 0,
            "{:?}: writes while idle: {:?}",
            run.kind, run.idle_requests
        );
    }
    // The limit run makes no node and needs no decision.
    assert_eq!(limit.node_creates, 0);
    assert_eq!(limit.replicas_writes, 0);
    assert_eq!(limit.pending_pods, 0);
    // The autoscaled run makes exactly the nodes it needs, and every pod that waited got
    // room (a latency each).
    assert_eq!(
        auto.node_creates,
        (nodes - 1) as u64,
        "{:?}",
        auto.converge_requests
    );
    assert!(auto.pending_pods > 0, "no pod was ever Unschedulable");
    assert!(auto.latency_p99_s.is_some());
    let scale_in = auto.scale_in.as_ref().expect("a scale-in");
    assert_eq!(scale_in.evictions, 0, "an empty node needs no eviction");
    assert_eq!(scale_in.node_deletes, (nodes - 1) as u64);
    let _ = std::fs::remove_dir_all(logs);
}
