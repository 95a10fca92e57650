//! The three write strategies against a real API server. A second writer changes the
//! object between our read (the "cached" copy) and our write, as the other operator does.
use std::process::Command;
use std::sync::Arc;

use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use operator_kit::backoff::{Backoff, DEFAULT_BACKOFF};
use operator_kit::metrics::{WriteLabels, WriteMetrics};
use operator_kit::{Change, ConflictStrategy, WriteOutcome, Writer};
use serde_json::json;
use shared_crd::{NodePool, field_manager};
use test_support::{fixtures, shared, unique_name};

/// The autoscaler's change: `spec.replicas = n` (and nothing else).
fn replicas_change(n: i32) -> Change {
    Change::main(&json!({"spec": {"replicas": n}}))
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

    let err = writer
        .write(&pools, &cached, &replicas_change(4))
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

    let outcome = writer
        .write(&pools, &cached, &replicas_change(4))
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
    let pools: Api<NodePool> = Api::all(client_that_bumps_after_each_get(&name).await);
    let err = writer
        .write(&pools, &cached, &replicas_change(4))
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

    let outcome = writer
        .write(&pools, &cached, &replicas_change(4))
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

    let outcome = writer
        .write(&pools, &cached, &replicas_change(4))
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
        .filter_map(|m| m.fields_v1.as_ref().map(|f| f.0.clone()))
        .collect();
    // Exactly spec.replicas. (Whether the server also records the `spec` map itself,
    // the "." entry, varies; it is no field of its own.)
    assert_eq!(owned.len(), 1, "{owned:?}");
    let fields = owned[0].as_object().unwrap();
    assert_eq!(fields.keys().collect::<Vec<_>>(), ["f:spec"], "{owned:?}");
    let mut spec: Vec<_> = fields["f:spec"].as_object().unwrap().keys().collect();
    spec.retain(|k| *k != ".");
    assert_eq!(
        spec,
        ["f:replicas"],
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

        let outcome = writer
            .write(&pools, &cached, &replicas_change(3))
            .await
            .unwrap();

        assert!(
            matches!(outcome, WriteOutcome::Unchanged),
            "{strategy:?}: {outcome:?}"
        );
        assert_eq!(metrics.count("nodepools", strategy.name(), "unchanged"), 1);
        assert_eq!(metrics.count("nodepools", strategy.name(), "written"), 0);
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

        let change = Change::status(&json!({"replicas": 2, "readyReplicas": 0}));
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

#[tokio::test]
async fn a_write_the_cache_has_not_shown_yet_is_not_sent_again() {
    let pools = pools().await;
    for strategy in [
        ConflictStrategy::Lazy,
        ConflictStrategy::Retry(DEFAULT_BACKOFF),
        ConflictStrategy::Apply,
    ] {
        let name = unique_name("expect");
        pools
            .create(&PostParams::default(), &fixtures::nodepool(&name, 1))
            .await
            .unwrap();
        let stale = pools.get(&name).await.unwrap();
        let (writer, metrics) = writer(strategy);
        let first = writer
            .write(&pools, &stale, &replicas_change(5))
            .await
            .unwrap();
        assert!(first.is_written(), "{strategy:?}: {first:?}");
        let written_rv = pools.get(&name).await.unwrap().resource_version();

        // The next reconcile still sees the stale copy and wants the same: nothing is sent.
        let again = writer
            .write(&pools, &stale, &replicas_change(5))
            .await
            .unwrap();
        assert!(matches!(again, WriteOutcome::Unchanged), "{strategy:?}");
        assert_eq!(metrics.count("nodepools", strategy.name(), "expected"), 1);
        assert_eq!(
            pools.get(&name).await.unwrap().resource_version(),
            written_rv,
            "{strategy:?} wrote the same change twice"
        );

        // A different change from the same stale copy is news, and is written (the
        // optimistic strategies meet the 409 their stale copy earns them).
        let other = writer.write(&pools, &stale, &replicas_change(6)).await;
        match strategy {
            ConflictStrategy::Lazy => assert!(other.unwrap_err().is_conflict()),
            _ => assert!(other.unwrap().is_written(), "{strategy:?}"),
        }
    }
}

#[tokio::test]
async fn a_field_kept_by_a_second_manager_survives_the_main_managers_applies() {
    let pools = pools().await;
    let name = unique_name("second-manager");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&name, 1))
        .await
        .unwrap();
    let writer = Writer::new(ConflictStrategy::Apply, field_manager::NODEPOOL_OPERATOR);
    // The reconcile that scaled: its status with the scale time, under the second manager.
    let scaled = Change::status(&json!({"replicas": 1, "lastScaleTime": "2026-01-01T00:00:00Z"}))
        .with_field_manager(field_manager::NODEPOOL_OPERATOR_SCALING);
    let cached = pools.get(&name).await.unwrap();
    assert!(
        writer
            .write(&pools, &cached, &scaled)
            .await
            .unwrap()
            .is_written()
    );
    // A later reconcile applies the main manager's fields only, with a new value.
    let cached = pools.get(&name).await.unwrap();
    let later = Change::status(&json!({"replicas": 2}));
    assert!(
        writer
            .write(&pools, &cached, &later)
            .await
            .unwrap()
            .is_written()
    );
    let status = pools.get(&name).await.unwrap().status.unwrap();
    assert_eq!(status.replicas, 2);
    assert_eq!(
        status.last_scale_time.map(|t| t.0.as_second()),
        Some(1_767_225_600),
        "the main manager's apply removed the scale time"
    );
}

/// A client whose every GET of NodePool `name` is followed, before the response is
/// handed back, by a write of another client: each re-read is stale by the time it is used.
async fn client_that_bumps_after_each_get(name: &str) -> Client {
    let kubectl = test_support::control_plane::assets_dir()
        .unwrap()
        .join("kubectl");
    let kubeconfig = shared().kubeconfig().to_owned();
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let pool = name.to_owned();
    let bump = BumpAfterGet {
        suffix: format!("/nodepools/{name}"),
        run: Arc::new(move |n: u32| {
            let out = Command::new(&kubectl)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args([
                    "annotate",
                    "nodepool",
                    &pool,
                    &format!("bump={n}"),
                    "--overwrite",
                ])
                .output()
                .expect("kubectl runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }),
    };
    kube::client::ClientBuilder::try_from(config)
        .unwrap()
        .with_layer(&bump)
        .build()
}

#[derive(Clone)]
struct BumpAfterGet {
    suffix: String,
    run: Arc<dyn Fn(u32) + Send + Sync>,
}

impl<S> tower::Layer<S> for BumpAfterGet {
    type Service = BumpService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BumpService {
            inner,
            bump: self.clone(),
            count: Arc::default(),
        }
    }
}

#[derive(Clone)]
struct BumpService<S> {
    inner: S,
    bump: BumpAfterGet,
    count: Arc<std::sync::atomic::AtomicU32>,
}

impl<S, B> tower::Service<http::Request<B>> for BumpService<S>
where
    S: tower::Service<http::Request<B>>,
    S::Future: Send + 'static,
    S::Response: Send,
    S::Error: Send,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let is_get =
            req.method() == http::Method::GET && req.uri().path().ends_with(&self.bump.suffix);
        let (run, count) = (self.bump.run.clone(), self.count.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            if is_get {
                let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::task::spawn_blocking(move || run(n))
                    .await
                    .expect("bump ran");
            }
            res
        })
    }
}

#[tokio::test]
async fn a_cache_that_lags_the_writers_own_last_write_cannot_say_unchanged() {
    let pools = pools().await;
    for strategy in [
        ConflictStrategy::Lazy,
        ConflictStrategy::Retry(DEFAULT_BACKOFF),
        ConflictStrategy::Apply,
    ] {
        let name = unique_name("lagging");
        pools
            .create(&PostParams::default(), &fixtures::nodepool(&name, 1))
            .await
            .unwrap();
        let stale = pools.get(&name).await.unwrap();
        let (writer, _) = writer(strategy);
        // This writer sets 5; its cache still shows 1 when it next wants 1 again.
        assert!(
            writer
                .write(&pools, &stale, &replicas_change(5))
                .await
                .unwrap()
                .is_written()
        );
        let back = writer.write(&pools, &stale, &replicas_change(1)).await;
        match strategy {
            // The stale copy earns the lazy PUT its 409 (and the requeue that follows).
            ConflictStrategy::Lazy => assert!(back.unwrap_err().is_conflict()),
            _ => assert!(back.unwrap().is_written(), "{strategy:?}"),
        }
        if strategy != ConflictStrategy::Lazy {
            assert_eq!(
                pools.get(&name).await.unwrap().spec.replicas,
                1,
                "{strategy:?} left the server at its own earlier write"
            );
        }
    }
}

/// A pool as `kubectl apply` leaves it (its three-way base in an annotation), with a
/// label and an annotation of a user's and a condition of each of two managers in status.
async fn applied_pool(pools: &Api<NodePool>, name: &str) {
    let mut pool = fixtures::nodepool(name, 1);
    pool.metadata.labels = Some([("team".to_owned(), "web".to_owned())].into());
    pool.metadata.annotations = Some(
        [
            (LAST_APPLIED.to_owned(), r#"{"kind":"NodePool"}"#.to_owned()),
            ("owner".to_owned(), "someone".to_owned()),
        ]
        .into(),
    );
    pools.create(&PostParams::default(), &pool).await.unwrap();
    let status = json!({"status": {"replicas": 1, "conditions": [
        {"type": "Ready", "status": "True", "reason": "NodesReady",
         "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "Theirs", "status": "True", "reason": "Other",
         "lastTransitionTime": "2026-01-01T00:00:00Z"},
    ]}});
    pools
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The pool as the operators' reflectors cache it: no managedFields and no last-applied
/// annotation (every cache), no conditions (the autoscaler's pool cache).
async fn trimmed_copy(pools: &Api<NodePool>, name: &str) -> NodePool {
    let mut cached = pools.get(name).await.unwrap();
    operator_kit::watch::trim_metadata(&mut cached);
    if let Some(status) = cached.status.as_mut() {
        status.conditions.clear();
    }
    cached
}

#[tokio::test]
async fn a_write_from_a_trimmed_cache_keeps_what_the_cache_left_out() {
    let pools = pools().await;
    for strategy in [
        ConflictStrategy::Lazy,
        ConflictStrategy::Retry(DEFAULT_BACKOFF),
        ConflictStrategy::Apply,
    ] {
        let name = unique_name("trimmed");
        applied_pool(&pools, &name).await;
        let (writer, _) = writer(strategy);

        let cached = trimmed_copy(&pools, &name).await;
        let spec = writer.write(&pools, &cached, &replicas_change(3)).await;
        assert!(spec.unwrap().is_written(), "{strategy:?}");
        let cached = trimmed_copy(&pools, &name).await;
        let status = Change::status(&json!({"replicas": 3}));
        let status = writer.write(&pools, &cached, &status).await;
        assert!(status.unwrap().is_written(), "{strategy:?}");

        let live = pools.get(&name).await.unwrap();
        assert_eq!(live.spec.replicas, 3, "{strategy:?}");
        let annotations = live.annotations();
        assert_eq!(
            annotations.get(LAST_APPLIED).map(String::as_str),
            Some(r#"{"kind":"NodePool"}"#),
            "{strategy:?} dropped kubectl's three-way base: {annotations:?}"
        );
        assert_eq!(
            annotations.get("owner").map(String::as_str),
            Some("someone")
        );
        assert_eq!(
            live.labels().get("team").map(String::as_str),
            Some("web"),
            "{strategy:?}"
        );
        let status = live.status.unwrap();
        assert_eq!(status.replicas, 3, "{strategy:?}");
        let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(
            types,
            ["Ready", "Theirs"],
            "{strategy:?} dropped conditions the cache did not hold"
        );
    }
}
