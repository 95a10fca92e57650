//! The three write strategies against a real API server. A second writer changes the
//! object between our read (the "cached" copy) and our write, as the other operator does.
use std::process::Command;
use std::sync::Arc;

use e2e::{fixtures, shared, unique_name};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use operator_kit::backoff::{Backoff, DEFAULT_BACKOFF};
use operator_kit::metrics::{WriteLabels, WriteMetrics};
use operator_kit::{Change, ConflictStrategy, Target, WriteOutcome, Writer};
use serde_json::json;
use shared_crd::{NodePool, field_manager};

/// The autoscaler's change: `spec.replicas = n` (and nothing else).
fn set_replicas(n: i32) -> impl Fn(&mut NodePool) -> bool + Send + Sync {
    move |pool: &mut NodePool| {
        if pool.spec.replicas == n {
            return false;
        }
        pool.spec.replicas = n;
        true
    }
}

fn replicas_change(
    n: i32,
    mutate: &(dyn Fn(&mut NodePool) -> bool + Send + Sync),
) -> Change<'_, NodePool> {
    Change {
        target: Target::Main,
        mutate,
        apply: json!({"spec": {"replicas": n}}),
    }
}

/// Creates a pool and returns it as a reader's cache would hold it, after which
/// another writer (the "other operator") labels the pool and writes its status.
async fn stale_copy(pools: &Api<NodePool>, name: &str) -> NodePool {
    pools
        .create(&PostParams::default(), &fixtures::nodepool(name, 1))
        .await
        .unwrap();
    let cached = pools.get(name).await.unwrap();
    other_writer_bumps(pools, name, "first").await;
    cached
}

async fn other_writer_bumps(pools: &Api<NodePool>, name: &str, value: &str) {
    let label = json!({"metadata": {"labels": {"other-writer": value}}});
    pools
        .patch(name, &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();
    let status = json!({"status": {"replicas": 1, "readyReplicas": 1}});
    pools
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// Nothing the other writer wrote was lost.
fn assert_other_writer_kept(pool: &NodePool) {
    assert_eq!(
        pool.labels().get("other-writer").map(String::as_str),
        Some("first"),
        "{pool:?}"
    );
    let status = pool.status.as_ref().expect("status kept");
    assert_eq!((status.replicas, status.ready_replicas), (1, 1), "{pool:?}");
    assert_eq!(
        pool.spec.template,
        fixtures::nodepool("x", 0).spec.template,
        "template kept"
    );
}

fn writer(strategy: ConflictStrategy) -> (Writer, Arc<WriteMetrics>) {
    let metrics = Arc::new(WriteMetrics::default());
    let writer =
        Writer::new(strategy, field_manager::AUTOSCALER_OPERATOR).with_metrics(metrics.clone());
    (writer, metrics)
}

fn conflicts(metrics: &WriteMetrics, strategy: &'static str) -> u64 {
    metrics
        .conflicts
        .get_or_create(&WriteLabels {
            resource: "nodepools".into(),
            strategy,
        })
        .get()
}

async fn pools() -> Api<NodePool> {
    let client: Client = shared().client().await.unwrap();
    Api::all(client)
}

#[tokio::test]
async fn lazy_returns_the_409_and_writes_nothing() {
    let pools = pools().await;
    let name = unique_name("lazy");
    let cached = stale_copy(&pools, &name).await;
    let (writer, metrics) = writer(ConflictStrategy::Lazy);

    let mutate = set_replicas(4);
    let err = writer
        .write(&pools, &cached, &replicas_change(4, &mutate))
        .await
        .unwrap_err();

    assert!(err.is_conflict(), "{err}");
    assert_eq!(err.attempts, 1);
    let kube::Error::Api(status) = &err.source else {
        panic!("{err}")
    };
    assert_eq!(status.code, 409);
    assert!(
        status.message.contains("the object has been modified; please apply your changes to the latest version and try again"),
        "{}",
        status.message
    );
    assert_eq!(conflicts(&metrics, "lazy"), 1);
    let now = pools.get(&name).await.unwrap();
    assert_eq!(now.spec.replicas, 1, "the rejected write must not land");
    assert_other_writer_kept(&now);
}

#[tokio::test]
async fn retry_rereads_and_lands_on_the_second_attempt() {
    let pools = pools().await;
    let name = unique_name("retry");
    let cached = stale_copy(&pools, &name).await;
    let (writer, metrics) = writer(ConflictStrategy::Retry(DEFAULT_BACKOFF));

    let mutate = set_replicas(4);
    let outcome = writer
        .write(&pools, &cached, &replicas_change(4, &mutate))
        .await
        .unwrap();

    let WriteOutcome::Written { object, attempts } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(attempts, 2, "one conflict, then a write from a fresh read");
    assert_eq!(object.spec.replicas, 4);
    assert_other_writer_kept(&object);
    assert_eq!(conflicts(&metrics, "retry"), 1);
    assert_eq!(
        metrics
            .retries
            .get_or_create(&WriteLabels {
                resource: "nodepools".into(),
                strategy: "retry"
            })
            .get(),
        1
    );
    assert_other_writer_kept(&pools.get(&name).await.unwrap());
}

#[tokio::test]
async fn retry_gives_up_after_its_steps_with_the_last_conflict() {
    let pools = pools().await;
    let name = unique_name("retry-max");
    let cached = stale_copy(&pools, &name).await;
    let backoff = Backoff {
        steps: 3,
        ..DEFAULT_BACKOFF
    };
    let (writer, metrics) = writer(ConflictStrategy::Retry(backoff));

    // A relentless other writer: every time we re-read, it writes again before our PUT.
    let kubectl = e2e::control_plane::assets_dir().unwrap().join("kubectl");
    let kubeconfig = shared().kubeconfig().to_owned();
    let target = name.clone();
    let bumps = std::sync::atomic::AtomicU32::new(0);
    let mutate = move |pool: &mut NodePool| {
        let n = bumps.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let status = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args([
                "annotate",
                "nodepool",
                &target,
                &format!("bump={n}"),
                "--overwrite",
            ])
            .output()
            .expect("kubectl runs");
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        set_replicas(4)(pool)
    };
    let err = writer
        .write(&pools, &cached, &replicas_change(4, &mutate))
        .await
        .unwrap_err();

    assert!(err.is_conflict(), "{err}");
    assert_eq!(err.attempts, 3, "exactly `steps` attempts");
    assert_eq!(conflicts(&metrics, "retry"), 3);
    assert_eq!(pools.get(&name).await.unwrap().spec.replicas, 1);
}

#[tokio::test]
async fn retry_ends_cleanly_when_the_object_is_gone() {
    let pools = pools().await;
    let name = unique_name("retry-gone");
    let cached = stale_copy(&pools, &name).await;
    pools.delete(&name, &Default::default()).await.unwrap();
    let (writer, _) = writer(ConflictStrategy::Retry(DEFAULT_BACKOFF));

    let mutate = set_replicas(4);
    let outcome = writer
        .write(&pools, &cached, &replicas_change(4, &mutate))
        .await
        .unwrap();
    assert!(matches!(outcome, WriteOutcome::Gone), "{outcome:?}");
}

#[tokio::test]
async fn apply_needs_no_lock_and_owns_only_its_field() {
    let pools = pools().await;
    let name = unique_name("apply");
    let cached = stale_copy(&pools, &name).await;
    let (writer, metrics) = writer(ConflictStrategy::Apply);

    let mutate = set_replicas(4);
    let outcome = writer
        .write(&pools, &cached, &replicas_change(4, &mutate))
        .await
        .unwrap();

    let WriteOutcome::Written { object, attempts } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!((object.spec.replicas, attempts), (4, 1));
    assert_other_writer_kept(&object);
    assert_eq!(conflicts(&metrics, "apply"), 0);
    let owned: Vec<_> = object
        .managed_fields()
        .iter()
        .filter(|m| m.manager.as_deref() == Some(field_manager::AUTOSCALER_OPERATOR))
        .filter_map(|m| m.fields_v1.as_ref().map(|f| f.0.to_string()))
        .collect();
    assert_eq!(
        owned,
        [r#"{"f:spec":{".":{},"f:replicas":{}}}"#],
        "autoscaler owns exactly spec.replicas"
    );
}

#[tokio::test]
async fn no_write_is_sent_when_the_object_already_has_the_change() {
    let pools = pools().await;
    for strategy in [
        ConflictStrategy::Lazy,
        ConflictStrategy::Retry(DEFAULT_BACKOFF),
        ConflictStrategy::Apply,
    ] {
        let name = unique_name("noop");
        pools
            .create(&PostParams::default(), &fixtures::nodepool(&name, 3))
            .await
            .unwrap();
        let cached = pools.get(&name).await.unwrap();
        let (writer, metrics) = writer(strategy);

        let mutate = set_replicas(3);
        let outcome = writer
            .write(&pools, &cached, &replicas_change(3, &mutate))
            .await
            .unwrap();

        assert!(
            matches!(outcome, WriteOutcome::Unchanged),
            "{strategy:?}: {outcome:?}"
        );
        let skipped = metrics
            .skipped
            .get_or_create(&WriteLabels {
                resource: "nodepools".into(),
                strategy: strategy.name(),
            })
            .get();
        assert_eq!(skipped, 1);
        let after = pools.get(&name).await.unwrap();
        assert_eq!(
            after.resource_version(),
            cached.resource_version(),
            "{strategy:?} wrote anyway"
        );
    }
}

#[tokio::test]
async fn status_goes_through_the_status_subresource_in_every_strategy() {
    let pools = pools().await;
    for strategy in [
        ConflictStrategy::Lazy,
        ConflictStrategy::Retry(DEFAULT_BACKOFF),
        ConflictStrategy::Apply,
    ] {
        let name = unique_name("status");
        pools
            .create(&PostParams::default(), &fixtures::nodepool(&name, 2))
            .await
            .unwrap();
        let cached = pools.get(&name).await.unwrap();
        let writer = Writer::new(strategy, field_manager::NODEPOOL_OPERATOR);

        let mutate = |pool: &mut NodePool| {
            let status = pool.status.get_or_insert_with(Default::default);
            let changed = status.replicas != 2;
            status.replicas = 2;
            changed
        };
        let change = Change {
            target: Target::Status,
            mutate: &mutate,
            apply: json!({"status": {"replicas": 2, "readyReplicas": 0}}),
        };
        let outcome = writer.write(&pools, &cached, &change).await.unwrap();
        let WriteOutcome::Written { object, .. } = outcome else {
            panic!("{strategy:?}: {outcome:?}")
        };
        assert_eq!(object.status.unwrap().replicas, 2, "{strategy:?}");
        assert_eq!(
            object.metadata.generation,
            Some(1),
            "{strategy:?}: status write changed generation"
        );
    }
}
