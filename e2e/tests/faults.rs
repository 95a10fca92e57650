//! Faults on the real control plane, with the operators run as processes under their
//! own identities, as a Deployment runs them. Each test injects one fault and asserts
//! convergence with nothing lost or done twice: exact node counts, no node left cordoned
//! or terminating, the status saying so.
//!
//! They share this binary's control plane and one of them restarts it, so they run one
//! at a time (`SERIAL`).
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use shared_crd::{Autoscaler, NodePool, POOL_LABEL, ScalingRules};
use test_support::process::OperatorProcess;
use test_support::proxy::{Answer, ErrorProxy, upstream_of};
use test_support::{Component, eventually, fixtures, shared, unique_name};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const CONVERGE: Duration = Duration::from_secs(90);

fn logs(test: &str) -> PathBuf {
    std::env::temp_dir().join(unique_name(&format!("faults-{test}")))
}

async fn nodepool_operator(name: &str, kubeconfig: &Path, logs: &Path) -> OperatorProcess {
    OperatorProcess::start(
        "nodepool-operator",
        name,
        kubeconfig,
        Some("nodepool-operator"),
        logs,
        &[
            "--provisioning-delay-ms",
            "500",
            "--drain-timeout-seconds",
            "5",
        ],
    )
    .await
    .unwrap()
}

async fn autoscaler_operator(name: &str, kubeconfig: &Path, logs: &Path) -> OperatorProcess {
    OperatorProcess::start(
        "autoscaler-operator",
        name,
        kubeconfig,
        Some("autoscaler-operator"),
        logs,
        &[],
    )
    .await
    .unwrap()
}

/// The pool's nodes: (all, cordoned, terminating).
async fn nodes_of(nodes: &Api<Node>, pool: &str) -> (usize, usize, usize) {
    test_support::pool_node_counts(nodes, pool).await
}

/// Waits until the pool has exactly `size` nodes, none cordoned or terminating, all
/// Ready, and a status that says so for its latest generation.
async fn converged(client: &Client, pool: &str, size: usize) {
    let (pools, nodes): (Api<NodePool>, Api<Node>) =
        (Api::all(client.clone()), Api::all(client.clone()));
    eventually(
        &format!("pool {pool} at {size} nodes"),
        CONVERGE,
        || async {
            let seen = nodes_of(&nodes, pool).await;
            let p = pools.get(pool).await.map_err(|e| e.to_string())?;
            let status = p.status.clone().unwrap_or_default();
            let ok = seen == (size, 0, 0)
                && status.replicas == size as i32
                && status.ready_replicas == size as i32
                && status.observed_generation == p.metadata.generation;
            ok.then_some(()).ok_or(format!(
                "nodes (all, cordoned, terminating) {seen:?}, status {status:?}, generation {:?}",
                p.metadata.generation
            ))
        },
    )
    .await;
}

async fn resize(pools: &Api<NodePool>, pool: &str, replicas: i32) {
    let patch = serde_json::json!({"spec": {"replicas": replicas}});
    pools
        .patch(pool, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_pool_converges_through_restarts_of_kube_apiserver_and_etcd() {
    let _serial = SERIAL.lock().await;
    let cp = shared();
    if cp.is_external() {
        eprintln!("skipped: the control plane is not started here");
        return;
    }
    let client = cp.client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let logs = logs("restarts");
    let mut operator = nodepool_operator("nodepool-operator", cp.kubeconfig(), &logs).await;
    let pool = unique_name("restarts");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 1))
        .await
        .unwrap();
    converged(&client, &pool, 1).await;

    // Mid scale-up (nodes created, not yet Ready), the API server goes away for 2 s.
    resize(&pools, &pool, 10).await;
    eventually("the scale-up to start", CONVERGE, || async {
        let (all, ..) = nodes_of(&nodes, &pool).await;
        (all > 1).then_some(()).ok_or(format!("{all} nodes"))
    })
    .await;
    let t = Instant::now();
    cp.restart(Component::KubeApiserver, Duration::from_secs(2))
        .await
        .unwrap();
    eprintln!("kube-apiserver back after {:?}", t.elapsed());
    converged(&client, &pool, 10).await;
    assert!(operator.running(), "see {}", operator.log().display());

    // Mid scale-down (nodes cordoned and draining), etcd goes away for 2 s, same data.
    resize(&pools, &pool, 2).await;
    eventually("the scale-down to start", CONVERGE, || async {
        let (all, cordoned, terminating) = nodes_of(&nodes, &pool).await;
        (cordoned + terminating > 0 || all < 10)
            .then_some(())
            .ok_or(format!("{all} nodes, none leaving"))
    })
    .await;
    let t = Instant::now();
    cp.restart(Component::Etcd, Duration::from_secs(2))
        .await
        .unwrap();
    eprintln!("etcd back (API server ready) after {:?}", t.elapsed());
    converged(&client, &pool, 2).await;
    assert!(operator.running(), "see {}", operator.log().display());

    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
    converged_gone(&client, &pool).await;
    operator.kill().await;
    let _ = std::fs::remove_dir_all(&logs);
}

/// Waits until the pool's nodes are gone.
async fn converged_gone(client: &Client, pool: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    eventually(&format!("pool {pool}'s nodes gone"), CONVERGE, || async {
        let (all, ..) = nodes_of(&nodes, pool).await;
        (all == 0).then_some(()).ok_or(format!("{all} left"))
    })
    .await;
}

#[tokio::test]
async fn two_hundred_spec_changes_in_a_burst_end_at_the_last_one() {
    let _serial = SERIAL.lock().await;
    let cp = shared();
    let client = cp.client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let logs = logs("burst");
    let nodepool = nodepool_operator("nodepool-operator", cp.kubeconfig(), &logs).await;
    let autoscaler = autoscaler_operator("autoscaler-operator", cp.kubeconfig(), &logs).await;

    // The autoscaler has work of its own meanwhile: a pool it keeps at its minimum.
    let (pool, scaled) = (unique_name("burst"), unique_name("scaled"));
    for name in [&pool, &scaled] {
        pools
            .create(&PostParams::default(), &fixtures::nodepool(name, 1))
            .await
            .unwrap();
    }
    let scaler = unique_name("as");
    autoscalers
        .create(
            &PostParams::default(),
            &fixtures::autoscaler(&scaler, &scaled, 2, 4),
        )
        .await
        .unwrap();
    converged(&client, &pool, 1).await;
    converged(&client, &scaled, 2).await;

    // 200 sizes between 0 and 12, as fast as the API server takes them; the last is 7.
    let mut size = 1u32;
    for i in 0..200 {
        size = if i == 199 { 7 } else { (size * 7 + 3 + i) % 13 };
        resize(&pools, &pool, size as i32).await;
    }
    converged(&client, &pool, 7).await;
    converged(&client, &scaled, 2).await;
    assert_eq!(pools.get(&scaled).await.unwrap().spec.replicas, 2);

    autoscalers
        .delete(&scaler, &DeleteParams::default())
        .await
        .unwrap();
    for name in [&pool, &scaled] {
        pools.delete(name, &DeleteParams::default()).await.unwrap();
        converged_gone(&client, name).await;
    }
    nodepool.kill().await;
    autoscaler.kill().await;
    let _ = std::fs::remove_dir_all(&logs);
}

/// Sizes a pool took, and when.
type Sizes = Arc<Mutex<Vec<(Instant, i32)>>>;

/// Every `spec.replicas` the pool takes from now on, and when, until the task is aborted.
fn record_sizes(pools: &Api<NodePool>, pool: &str) -> (Sizes, tokio::task::JoinHandle<()>) {
    let sizes = Arc::new(Mutex::new(Vec::<(Instant, i32)>::new()));
    let stream = watcher(
        pools.clone(),
        watcher::Config::default().fields(&format!("metadata.name={pool}")),
    );
    let recorder = tokio::spawn({
        let sizes = sizes.clone();
        async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(event)) = stream.next().await {
                if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = event {
                    let mut sizes = sizes.lock().unwrap();
                    if sizes.last().map(|s| s.1) != Some(p.spec.replicas) {
                        sizes.push((Instant::now(), p.spec.replicas));
                    }
                }
            }
        }
    });
    (sizes, recorder)
}

#[tokio::test]
async fn an_autoscaler_restarted_inside_its_scale_down_window_waits_it_out() {
    const WINDOW: Duration = Duration::from_secs(20);
    let _serial = SERIAL.lock().await;
    let cp = shared();
    let client = cp.client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let logs = logs("window");
    let nodepool = nodepool_operator("nodepool-operator", cp.kubeconfig(), &logs).await;
    let autoscaler = autoscaler_operator("autoscaler-a", cp.kubeconfig(), &logs).await;

    let pool = unique_name("window");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 1))
        .await
        .unwrap();
    let mut scaler = fixtures::autoscaler(&unique_name("as"), &pool, 1, 6);
    scaler.spec.behavior.scale_down = ScalingRules {
        max_step: Some(10),
        ..ScalingRules::window(WINDOW.as_secs() as i32)
    };
    autoscalers
        .create(&PostParams::default(), &scaler)
        .await
        .unwrap();
    // 4 pods of 1 core: 4 cores / (2 x 80%) = 3 nodes (they would pack on 2).
    let demand: Vec<String> = (0..4).map(|i| format!("{pool}-pod-{i}")).collect();
    for name in &demand {
        pods.create(
            &PostParams::default(),
            &fixtures::pod_wanting(name, &pool, "1", "1Gi"),
        )
        .await
        .unwrap();
    }
    converged(&client, &pool, 3).await;

    let (sizes, recorder) = record_sizes(&pools, &pool);

    // The demand goes; half-way through the window the autoscaler restarts.
    for name in &demand {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    let dropped = Instant::now();
    tokio::time::sleep(WINDOW / 2).await;
    autoscaler.kill().await;
    let restarted = Instant::now();
    let autoscaler = autoscaler_operator("autoscaler-b", cp.kubeconfig(), &logs).await;
    converged(&client, &pool, 1).await;
    recorder.abort();

    let sizes = sizes.lock().unwrap().clone();
    let shrunk = sizes
        .iter()
        .find(|(_, replicas)| *replicas < 3)
        .map(|(at, _)| *at)
        .expect("the pool shrank");
    eprintln!(
        "demand dropped; restarted after {:?}; shrank {:?} after the drop",
        restarted - dropped,
        shrunk - dropped
    );
    assert!(
        shrunk >= dropped + WINDOW,
        "shrank {:?} after the demand dropped, inside the {WINDOW:?} window",
        shrunk - dropped
    );
    // The new process counts its window from its own start (seeded with the size then),
    // to the second.
    assert!(
        shrunk + Duration::from_secs(1) >= restarted + WINDOW,
        "shrank {:?} after the restart",
        shrunk - restarted
    );

    autoscalers
        .delete(&scaler.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
    converged_gone(&client, &pool).await;
    nodepool.kill().await;
    autoscaler.kill().await;
    let _ = std::fs::remove_dir_all(&logs);
}

/// `[{type: Nodes, value: 1, periodSeconds: 15}]` takes 4 nodes to 1 one node per period;
/// an autoscaler restarted just after the first step reads that step back from the
/// Autoscaler's status and takes no extra one.
#[tokio::test]
async fn a_policy_removes_one_node_per_period_and_a_restart_takes_no_extra_step() {
    const PERIOD: Duration = Duration::from_secs(15);
    let _serial = SERIAL.lock().await;
    let cp = shared();
    let client = cp.client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let logs = logs("policy");
    let nodepool = nodepool_operator("nodepool-operator", cp.kubeconfig(), &logs).await;
    let autoscaler = autoscaler_operator("autoscaler-a", cp.kubeconfig(), &logs).await;

    let pool = unique_name("policy");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 1))
        .await
        .unwrap();
    let mut scaler = fixtures::autoscaler(&unique_name("as"), &pool, 1, 6);
    scaler.spec.behavior.scale_down = ScalingRules::window(0).with_policy(
        shared_crd::PolicyType::Nodes,
        1,
        PERIOD.as_secs() as i32,
    );
    autoscalers
        .create(&PostParams::default(), &scaler)
        .await
        .unwrap();
    // 5 pods of 1 core: 5 cores / (2 x 80%) = 4 nodes.
    let demand: Vec<String> = (0..5).map(|i| format!("{pool}-pod-{i}")).collect();
    for name in &demand {
        pods.create(
            &PostParams::default(),
            &fixtures::pod_wanting(name, &pool, "1", "1Gi"),
        )
        .await
        .unwrap();
    }
    converged(&client, &pool, 4).await;
    // The scale-up is a change of the period too: a period counts from the size at its
    // start, so within 15 s of growing from 1 to 4 the pool could go back to 1 at once
    // (as the HPA does). Let it leave the period first.
    tokio::time::sleep(PERIOD + Duration::from_secs(1)).await;

    let (sizes, recorder) = record_sizes(&pools, &pool);
    for name in &demand {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    // The first step, then a new process at once.
    eventually("the first step", Duration::from_secs(30), || async {
        let last = sizes.lock().unwrap().last().map(|s| s.1);
        (last == Some(3)).then_some(()).ok_or(format!("{last:?}"))
    })
    .await;
    autoscaler.kill().await;
    let autoscaler = autoscaler_operator("autoscaler-b", cp.kubeconfig(), &logs).await;
    converged(&client, &pool, 1).await;
    recorder.abort();

    let sizes = sizes.lock().unwrap().clone();
    let steps: Vec<i32> = sizes.iter().map(|s| s.1).collect();
    assert_eq!(steps, [4, 3, 2, 1], "one node per step");
    for pair in sizes.windows(2).skip(1) {
        let gap = pair[1].0 - pair[0].0;
        // Recorded to the second: a period may look up to a second short.
        assert!(
            gap + Duration::from_secs(1) >= PERIOD,
            "{} -> {} came {gap:?} after the step before",
            pair[0].1,
            pair[1].1
        );
    }
    let a = autoscalers.get(&scaler.name_any()).await.unwrap();
    let events = a.status.unwrap_or_default().scale_events;
    assert!(
        events.iter().any(|e| (e.from, e.to) == (2, 1)),
        "the status records the changes: {events:?}"
    );

    autoscalers
        .delete(&scaler.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
    converged_gone(&client, &pool).await;
    nodepool.kill().await;
    autoscaler.kill().await;
    let _ = std::fs::remove_dir_all(&logs);
}

/// A kubeconfig like `kubeconfig` whose server is `url`.
fn kubeconfig_via(kubeconfig: &Path, url: &str, dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    let rewritten: String = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("server: ") {
            Some(_) => format!("    server: {url}"),
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = dir.join("kubeconfig-via-proxy");
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&path, rewritten).unwrap();
    path
}

#[tokio::test]
async fn errors_from_the_api_server_are_backed_off_and_nothing_is_done_twice() {
    let _serial = SERIAL.lock().await;
    let cp = shared();
    if cp.is_external() {
        eprintln!("skipped: the control plane is not started here");
        return;
    }
    let client = cp.client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client.clone());
    let logs = logs("errors");
    let certs = cp.kubeconfig().parent().unwrap().join("certs");
    let upstream =
        upstream_of(&cp.config_as(test_support::Identity::Admin).await.unwrap()).unwrap();
    let proxy = ErrorProxy::start(
        upstream,
        &certs.join("apiserver.crt"),
        &certs.join("apiserver.key"),
    )
    .await
    .unwrap();
    let kubeconfig = kubeconfig_via(cp.kubeconfig(), &proxy.url(), &logs);
    let mut operator = nodepool_operator("nodepool-operator", &kubeconfig, &logs).await;
    let pool = unique_name("errors");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 2))
        .await
        .unwrap();
    converged(&client, &pool, 2).await;

    let requeues = |op: &OperatorProcess| {
        op.metric(
            "reconcile_triggers_total",
            &["kind=\"NodePool\"", "trigger=\"error_requeue\""],
        )
    };
    let requests = |op: &OperatorProcess, verb: &str, code: &str| {
        op.metric(
            "api_requests_total",
            &[
                &format!("verb=\"{verb}\""),
                "resource=\"nodes\"",
                &format!("code=\"{code}\""),
            ],
        )
    };

    // 500s for 8 s while the pool grows by 4: every create fails, and the pool's
    // reconciles back off (5 ms doubling: about 11 tries in 8 s, not thousands).
    let (requeued, created) = (requeues(&operator), requests(&operator, "create", "201"));
    proxy.answer(Answer::InternalError);
    resize(&pools, &pool, 6).await;
    eventually("a create to fail", CONVERGE, || async {
        let failed = requests(&operator, "create", "500");
        (failed > 0.0).then_some(()).ok_or("none yet".to_owned())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let tries = requeues(&operator) - requeued;
    proxy.answer(Answer::Pass);
    converged(&client, &pool, 6).await;
    eprintln!("error requeues of the pool in 8 s of 500s: {tries}");
    assert!(
        (1.0..=16.0).contains(&tries),
        "{tries} error requeues in 8 s: the per-object backoff does not hold"
    );
    assert_eq!(
        requests(&operator, "create", "201") - created,
        4.0,
        "each node created once"
    );

    // 429 with Retry-After: 1 for 3 s while it shrinks by 3: the client waits as asked
    // and sends again (each try counted), and each node is deleted once.
    let deleted = requests(&operator, "delete", "200");
    proxy.answer(Answer::TooManyRequests { retry_after: 1 });
    resize(&pools, &pool, 3).await;
    eventually("a 429", CONVERGE, || async {
        let refused = requests(&operator, "delete", "429");
        (refused > 0.0).then_some(()).ok_or("none yet".to_owned())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    proxy.answer(Answer::Pass);
    converged(&client, &pool, 3).await;
    assert_eq!(
        requests(&operator, "delete", "200") - deleted,
        3.0,
        "each node deleted once"
    );
    assert!(operator.running(), "see {}", operator.log().display());

    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
    converged_gone(&client, &pool).await;
    operator.kill().await;
    let _ = std::fs::remove_dir_all(&logs);
}

/// Replaces the schema of the property at `property` (a path under `spec`, such as
/// `template/properties/capacity`) in the CRD `crd` with the looser `schema`, and returns
/// the CRD as it was (to put back with [`put_back_crd`]).
async fn loosen_schema(
    client: &Client,
    crd: &str,
    property: &str,
    schema: serde_json::Value,
) -> CustomResourceDefinition {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let original = crds.get(crd).await.unwrap();
    let patch = serde_json::json!([{
        "op": "replace",
        "path": format!("/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/{property}"),
        "value": schema,
    }]);
    crds.patch(
        crd,
        &PatchParams::default(),
        &Patch::Json::<()>(serde_json::from_value(patch).unwrap()),
    )
    .await
    .unwrap();
    original
}

async fn put_back_crd(client: &Client, original: CustomResourceDefinition) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = original.name_any();
    let mut restored = original;
    restored.metadata.resource_version = crds.get(&name).await.unwrap().metadata.resource_version;
    crds.replace(&name, &PostParams::default(), &restored)
        .await
        .unwrap();
}

/// Sets the pool's `capacity.cpu` (to a value of any JSON type, under a loose schema). A
/// CRD update reaches the API server's handler for its kind a moment later: until then the
/// old schema refuses the value (422), so the patch is tried again.
async fn set_cpu(raw: &Api<kube::api::DynamicObject>, pool: &str, cpu: serde_json::Value) {
    let patch = serde_json::json!({"spec": {"template": {"capacity": {"cpu": cpu}}}});
    eventually("the patch accepted", Duration::from_secs(30), || async {
        raw.patch(pool, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
}

#[tokio::test]
async fn an_object_the_operator_cannot_read_is_reported_and_stops_nothing() {
    let _serial = SERIAL.lock().await;
    let cp = shared();
    let client = cp.client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let logs = logs("unreadable");
    let operator = nodepool_operator("nodepool-operator", cp.kubeconfig(), &logs).await;
    let (held, bad) = (unique_name("held"), unique_name("bad"));
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&held, 2))
        .await
        .unwrap();
    converged(&client, &held, 2).await;

    // Under a looser schema (an older CRD, say), one pool turns unreadable and another
    // is made unreadable; then the CRD is tightened again, as an upgrade would.
    let original = loosen_schema(
        &client,
        "nodepools.nodepool.dev",
        "template/properties/capacity",
        serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    )
    .await;
    // Read and written untyped: this test's own NodePool type cannot read them either.
    let raw: Api<kube::api::DynamicObject> = Api::all_with(
        client.clone(),
        &kube::api::ApiResource::erase::<NodePool>(&()),
    );
    // An object where a quantity belongs: no Rust `Quantity` reads it (a number would do).
    let unreadable_cpu = serde_json::json!({"cores": 2});
    set_cpu(&raw, &held, unreadable_cpu.clone()).await;
    let mut unreadable = serde_json::to_value(fixtures::nodepool(&bad, 1)).unwrap();
    unreadable["spec"]["template"]["capacity"]["cpu"] = unreadable_cpu;
    raw.create(
        &PostParams::default(),
        &serde_json::from_value(unreadable).unwrap(),
    )
    .await
    .unwrap();
    put_back_crd(&client, original).await;

    for name in [&held, &bad] {
        let event =
            test_support::wait_for_event(client.clone(), "InvalidObject", name, CONVERGE).await;
        let note = event.note.unwrap_or_default();
        assert!(note.to_lowercase().contains("expected quantity"), "{note}");
    }
    // The others are still served.
    let fresh = unique_name("fresh");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&fresh, 1))
        .await
        .unwrap();
    converged(&client, &fresh, 1).await;

    // A restart LISTs the unreadable pools with the rest: it gets Ready all the same, and
    // the nodes of the pool it cannot read are not taken for orphans (it checks the pool
    // on the API server before it would delete one).
    operator.kill().await;
    let operator = nodepool_operator("nodepool-operator-2", cp.kubeconfig(), &logs).await;
    let pool_reads = |op: &OperatorProcess| {
        op.metric(
            "api_requests_total",
            &["verb=\"get\"", "resource=\"nodepools\""],
        )
    };
    eventually("the held pool's nodes checked", CONVERGE, || async {
        let reads = pool_reads(&operator);
        (reads >= 2.0).then_some(()).ok_or(format!("{reads} reads"))
    })
    .await;
    assert_eq!(nodes_of(&nodes, &held).await, (2, 0, 0), "nodes kept");
    assert_eq!(nodes_of(&nodes, &bad).await, (0, 0, 0), "nothing made");
    let another = unique_name("another");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&another, 1))
        .await
        .unwrap();
    converged(&client, &another, 1).await;

    // Readable again: reconciled again, with the same nodes.
    set_cpu(&raw, &held, serde_json::json!("2")).await;
    converged(&client, &held, 2).await;

    for name in [&held, &fresh, &another, &bad] {
        raw.delete(name, &DeleteParams::default()).await.unwrap();
        converged_gone(&client, name).await;
    }
    operator.kill().await;
    let _ = std::fs::remove_dir_all(&logs);
}

/// Waits for the `InvalidObject` event `reporter` published about `regarding`.
async fn invalid_object_event(client: &Client, reporter: &str, regarding: &str) -> String {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::all(client.clone());
    eventually(
        &format!("{reporter}'s InvalidObject event about {regarding}"),
        CONVERGE,
        || async {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some("InvalidObject")
                        && e.reporting_controller.as_deref() == Some(reporter)
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
                })
                .map(|e| e.note.unwrap_or_default())
                .ok_or_else(|| "none yet".to_owned())
        },
    )
    .await
}

/// Waits until nodepool-operator has told Autoscaler `name` that its pool can get nodes.
async fn nodepool_ready(autoscalers: &Api<Autoscaler>, name: &str) {
    eventually(&format!("NodePoolReady on {name}"), CONVERGE, || async {
        let a = autoscalers.get(name).await.map_err(|e| e.to_string())?;
        let conditions = a.status.map(|s| s.conditions).unwrap_or_default();
        shared_crd::condition::find(&conditions, shared_crd::condition_type::NODEPOOL_READY)
            .filter(|c| c.status == shared_crd::ConditionStatus::True)
            .map(|_| ())
            .ok_or(format!("{conditions:?}"))
    })
    .await;
}

#[tokio::test]
async fn an_autoscaler_the_operators_cannot_read_blinds_neither_of_them() {
    let _serial = SERIAL.lock().await;
    let cp = shared();
    let client = cp.client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let logs = logs("unreadable-autoscaler");
    let nodepool = nodepool_operator("nodepool-operator", cp.kubeconfig(), &logs).await;
    let autoscaler = autoscaler_operator("autoscaler-operator", cp.kubeconfig(), &logs).await;

    // Stored under a looser schema, then the CRD is tightened again: an Autoscaler whose
    // minReplicas no i32 reads.
    let original = loosen_schema(
        &client,
        "autoscalers.nodepool.dev",
        "minReplicas",
        serde_json::json!({"x-kubernetes-int-or-string": true}),
    )
    .await;
    let raw: Api<kube::api::DynamicObject> = Api::all_with(
        client.clone(),
        &kube::api::ApiResource::erase::<Autoscaler>(&()),
    );
    let bad = unique_name("bad");
    let mut unreadable = serde_json::to_value(fixtures::autoscaler(&bad, "nowhere", 1, 3)).unwrap();
    unreadable["spec"]["minReplicas"] = serde_json::json!("two");
    eventually("the unreadable Autoscaler stored", CONVERGE, || async {
        raw.create(
            &PostParams::default(),
            &serde_json::from_value(unreadable.clone()).unwrap(),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    })
    .await;
    put_back_crd(&client, original).await;

    for reporter in ["nodepool-operator", "autoscaler-operator"] {
        let note = invalid_object_event(&client, reporter, &bad).await;
        assert!(
            note.to_lowercase().contains("expected i32"),
            "{reporter}: {note}"
        );
    }
    // A valid pool and Autoscaler beside it are served by both operators.
    let (pool, scaler) = (unique_name("served"), unique_name("served"));
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 1))
        .await
        .unwrap();
    autoscalers
        .create(
            &PostParams::default(),
            &fixtures::autoscaler(&scaler, &pool, 2, 3),
        )
        .await
        .unwrap();
    nodepool_ready(&autoscalers, &scaler).await;
    converged(&client, &pool, 2).await;

    // A restart LISTs the unreadable Autoscaler with the rest: nodepool-operator gets
    // Ready all the same (every cache it waits for is guarded) and serves a new one.
    nodepool.kill().await;
    let nodepool = nodepool_operator("nodepool-operator-2", cp.kubeconfig(), &logs).await;
    let (pool2, scaler2) = (unique_name("after"), unique_name("after"));
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool2, 1))
        .await
        .unwrap();
    autoscalers
        .create(
            &PostParams::default(),
            &fixtures::autoscaler(&scaler2, &pool2, 1, 3),
        )
        .await
        .unwrap();
    nodepool_ready(&autoscalers, &scaler2).await;

    raw.delete(&bad, &DeleteParams::default()).await.unwrap();
    for name in [&scaler, &scaler2] {
        autoscalers
            .delete(name, &DeleteParams::default())
            .await
            .unwrap();
    }
    for name in [&pool, &pool2] {
        pools.delete(name, &DeleteParams::default()).await.unwrap();
        converged_gone(&client, name).await;
    }
    nodepool.kill().await;
    autoscaler.kill().await;
    let _ = std::fs::remove_dir_all(&logs);
}

#[tokio::test]
async fn a_nodepool_operator_restarted_mid_drain_finishes_it() {
    let _serial = SERIAL.lock().await;
    let cp = shared();
    let client = cp.client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let logs = logs("mid-drain");
    let operator = nodepool_operator("nodepool-operator", cp.kubeconfig(), &logs).await;
    let pool = unique_name("mid-drain");
    // Every surplus node at once (the default budget, 10%, would take them one by one).
    let mut spec = fixtures::nodepool(&pool, 6);
    spec.spec.disruption = Some(shared_crd::Disruption {
        budgets: vec![shared_crd::DisruptionBudget {
            nodes: "100%".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    pools.create(&PostParams::default(), &spec).await.unwrap();
    converged(&client, &pool, 6).await;

    // One running pod on each node, all under one budget that allows no disruption.
    let group = unique_name("group");
    let list = nodes
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={pool}")))
        .await
        .unwrap();
    let mut placed = Vec::new();
    for node in &list.items {
        let name = format!("{}-app", node.name_any());
        let pod = fixtures::pod_on(&node.name_any(), &name, &group);
        pods.create(&PostParams::default(), &pod).await.unwrap();
        // Running, as a kubelet would report it: the Eviction API ignores budgets for
        // Pending pods.
        let running = serde_json::json!({"status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True"}]}});
        pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&running))
            .await
            .unwrap();
        placed.push(name);
    }
    let budget = unique_name("budget");
    let budgets = fixtures::blocking_pdb(&client, &budget, &group).await;

    // Down to 2: four nodes cordoned and held by their finalizers, drains blocked.
    resize(&pools, &pool, 2).await;
    eventually("four drains blocked", CONVERGE, || async {
        let seen = nodes_of(&nodes, &pool).await;
        (seen == (6, 4, 4)).then_some(()).ok_or(format!("{seen:?}"))
    })
    .await;
    operator.kill().await;

    // A new process carries on: the budget still holds the drains...
    let operator = nodepool_operator("nodepool-operator-2", cp.kubeconfig(), &logs).await;
    let draining = nodes
        .list(&ListParams::default().labels(&format!("{POOL_LABEL}={pool}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|n| n.metadata.deletion_timestamp.is_some())
        .unwrap();
    test_support::wait_for_event(
        client.clone(),
        "DrainBlocked",
        &draining.name_any(),
        CONVERGE,
    )
    .await;
    let blocked_after_restart = nodes_of(&nodes, &pool).await;
    // ...(at least one node shows it; all four are still there, still cordoned)...
    assert_eq!(blocked_after_restart, (6, 4, 4));
    // ...and once the budget goes, they finish: exactly 2 nodes, 4 pods evicted.
    budgets
        .delete(&budget, &DeleteParams::default())
        .await
        .unwrap();
    converged(&client, &pool, 2).await;
    let mut left = 0;
    for name in &placed {
        left += usize::from(pods.get_opt(name).await.unwrap().is_some());
    }
    assert_eq!(left, 2, "the pods of the two nodes that stay");

    for name in &placed {
        let _ = pods.delete(name, &DeleteParams::default()).await;
    }
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
    converged_gone(&client, &pool).await;
    operator.kill().await;
    let _ = std::fs::remove_dir_all(&logs);
}
