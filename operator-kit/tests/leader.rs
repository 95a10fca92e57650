//! Leader election on a real API server: of two replicas, one runs; the other starts
//! only after the first lets the lease go.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use e2e::{eventually, shared, unique_name};
use operator_kit::leader::{Lease, run_as_leader};

fn lease(name: &str, identity: &str) -> Lease {
    Lease {
        namespace: "default".into(),
        name: name.into(),
        identity: identity.into(),
        duration: Duration::from_secs(3),
        grace: Duration::from_secs(1),
    }
}

#[tokio::test]
async fn only_one_replica_runs_until_it_lets_go() {
    let name = unique_name("lease");
    let (a_running, b_running) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let (stop_a, a_stopped) = tokio::sync::oneshot::channel::<()>();

    let client = shared().client().await.unwrap();
    let a = {
        let (client, lease, running) =
            (client.clone(), lease(&name, "replica-a"), a_running.clone());
        tokio::spawn(async move {
            run_as_leader(client, &lease, async move {
                running.store(true, Ordering::SeqCst);
                let _ = a_stopped.await;
                running.store(false, Ordering::SeqCst);
            })
            .await
        })
    };
    eventually("replica a to lead", Duration::from_secs(20), || async {
        a_running
            .load(Ordering::SeqCst)
            .then_some(())
            .ok_or("not yet".to_owned())
    })
    .await;

    let b = {
        let (client, lease, running) =
            (client.clone(), lease(&name, "replica-b"), b_running.clone());
        tokio::spawn(async move {
            run_as_leader(client, &lease, async move {
                running.store(true, Ordering::SeqCst);
                std::future::pending::<()>().await;
            })
            .await
        })
    };
    // Longer than the lease: a renews it, b waits.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(a_running.load(Ordering::SeqCst));
    assert!(
        !b_running.load(Ordering::SeqCst),
        "two replicas ran at once"
    );

    stop_a.send(()).unwrap();
    a.await.unwrap().unwrap();
    eventually(
        "replica b to take over",
        Duration::from_secs(20),
        || async {
            b_running
                .load(Ordering::SeqCst)
                .then_some(())
                .ok_or("not yet".to_owned())
        },
    )
    .await;
    b.abort();
}
