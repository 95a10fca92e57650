//! Node lifecycle on a real control plane (kube-scheduler and kube-controller-manager
//! running): drift replaced node by node, replacement first, within the budgets and
//! around do-not-disrupt; expiry; repair of nodes whose heartbeats stopped (fault
//! injection), under the real node lifecycle controller, and its 20% stop. Every wait
//! samples the pool's nodes and checks the invariants a rollout promises at each sample.
mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use nodepool_core::nodes::is_ready;
use nodepool_core::template::{hash_of, template_hash};
use serde_json::json;
use shared_crd::condition::{ConditionStatus, find};
use shared_crd::{
    DO_NOT_DISRUPT_ANNOTATION, Disruption, DisruptionBudget, DisruptionReason, FAULT_ANNOTATION,
    NodePool,
};
use support::{config, nodes_of, operator};
use test_support::{Topology, eventually, fixtures, running_pods, shared, unique_name};

async fn setup() -> Option<(Client, Api<NodePool>, Api<Node>)> {
    if Topology::from_env() == Topology::Bare && !shared().is_external() {
        eprintln!("skipped: needs kube-scheduler and kube-controller-manager");
        return None;
    }
    operator(config(None));
    let client = shared().client().await.unwrap();
    Some((client.clone(), Api::all(client.clone()), Api::all(client)))
}

fn pool_with(name: &str, replicas: i32, disruption: Option<Disruption>) -> NodePool {
    let mut pool = fixtures::nodepool(name, replicas);
    pool.spec.disruption = disruption;
    pool
}

fn budget(nodes: &str, reasons: &[DisruptionReason]) -> Option<Disruption> {
    Some(Disruption {
        budgets: vec![DisruptionBudget {
            nodes: nodes.into(),
            reasons: reasons.to_vec(),
            ..Default::default()
        }],
        ..Default::default()
    })
}

/// Changes the pool's template (a label): every node it has is Drifted from then on.
/// Returns the new template's hash.
async fn change_template(pools: &Api<NodePool>, name: &str) -> String {
    let patch = json!({"spec": {"template": {"labels": {"rollout": unique_name("v")}}}});
    let pool = pools
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    template_hash(&pool.spec.template)
}

fn schedulable(node: &Node) -> bool {
    node.metadata.deletion_timestamp.is_none()
        && !node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
}

/// One look at a pool's nodes.
struct Sample {
    /// Every node, terminating ones too.
    total: usize,
    ready_schedulable: usize,
    /// Live nodes on the template `hash`.
    updated: usize,
    names: BTreeSet<String>,
    /// Node names come back (a slot freed by a node gone is reused): uids tell nodes apart.
    uids: BTreeSet<String>,
}

async fn sample(nodes: &Api<Node>, pool: &str, hash: &str) -> Sample {
    let list = nodes_of(nodes, pool).await;
    Sample {
        total: list.len(),
        ready_schedulable: list
            .iter()
            .filter(|n| is_ready(n) && schedulable(n))
            .count(),
        updated: list
            .iter()
            .filter(|n| n.metadata.deletion_timestamp.is_none() && hash_of(n) == Some(hash))
            .count(),
        names: list.iter().map(|n| n.name_any()).collect(),
        uids: list.iter().filter_map(|n| n.metadata.uid.clone()).collect(),
    }
}

/// Samples the pool until `done`, asserting `invariant` at every sample; panics after
/// `timeout`. Returns the last sample.
async fn watch_rollout(
    nodes: &Api<Node>,
    pool: &str,
    hash: &str,
    timeout: Duration,
    mut invariant: impl FnMut(&Sample),
    done: impl Fn(&Sample) -> bool,
) -> Sample {
    let deadline = Instant::now() + timeout;
    loop {
        let s = sample(nodes, pool, hash).await;
        invariant(&s);
        if done(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "{pool}: not done after {timeout:?}: {} nodes, {} ready and schedulable, {} updated",
            s.total,
            s.ready_schedulable,
            s.updated
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn status_of(pools: &Api<NodePool>, name: &str) -> shared_crd::NodePoolStatus {
    pools.get(name).await.unwrap().status.unwrap_or_default()
}

/// Waits until the pool's `Disrupting` condition has `reason`; returns its message.
async fn disrupting(pools: &Api<NodePool>, name: &str, reason: &str, timeout: Duration) -> String {
    eventually(&format!("{name} Disrupting {reason}"), timeout, || async {
        let s = status_of(pools, name).await;
        match find(&s.conditions, "Disrupting") {
            Some(c) if c.reason == reason => Ok(c.message.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

async fn ready_pool(pools: &Api<NodePool>, nodes: &Api<Node>, pool: NodePool) -> String {
    let name = pool.name_any();
    let replicas = pool.spec.replicas as usize;
    pools.create(&PostParams::default(), &pool).await.unwrap();
    eventually(
        &format!("{name} at {replicas} Ready nodes"),
        Duration::from_secs(60),
        || async {
            let ready = test_support::ready_nodes(nodes, &name).await;
            let s = status_of(pools, &name).await;
            (ready == replicas && s.ready_replicas == replicas as i32)
                .then_some(())
                .ok_or(format!("{ready} ready"))
        },
    )
    .await;
    name
}

/// A PodDisruptionBudget over `app` that lets one pod go at a time, kept by the real
/// disruption controller (policy/v1beta1 on 1.20).
async fn pdb_max_unavailable_1(client: &Client, name: &str, app: &str) {
    use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
    for version in ["v1", "v1beta1"] {
        let gvk = GroupVersionKind::gvk("policy", version, "PodDisruptionBudget");
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), "default", &ApiResource::from_gvk(&gvk));
        let pdb: DynamicObject = serde_json::from_value(json!({
            "apiVersion": format!("policy/{version}"), "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": app}}}
        }))
        .unwrap();
        match api.create(&PostParams::default(), &pdb).await {
            Ok(_) => return,
            Err(kube::Error::Api(s)) if s.is_not_found() => continue,
            Err(e) => panic!("creating PodDisruptionBudget {name}: {e}"),
        }
    }
    panic!("no PodDisruptionBudget API");
}

#[tokio::test]
async fn a_template_change_replaces_every_node_replacement_first_and_pods_move_within_their_budget()
{
    let Some((client, pools, nodes)) = setup().await else {
        return;
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let name = ready_pool(&pools, &nodes, pool_with(&unique_name("drift"), 3, None)).await;
    // Three pods of a core on 2-core nodes: one per node, as the scheduler spreads them.
    deployments
        .create(
            &PostParams::default(),
            &fixtures::deployment(&name, &name, 3, "1", "256Mi"),
        )
        .await
        .unwrap();
    pdb_max_unavailable_1(&client, &name, &name).await;
    eventually("3 pods Running", Duration::from_secs(60), || async {
        let n = running_pods(&pods, &name).await.len();
        (n == 3).then_some(()).ok_or(format!("{n} running"))
    })
    .await;
    let old: BTreeSet<String> = sample(&nodes, &name, "").await.uids;

    // The pods are sampled beside the nodes: the budget lets one of three go at a time.
    let fewest_running = Arc::new(AtomicUsize::new(3));
    let rolling = Arc::new(AtomicBool::new(true));
    let watcher = tokio::spawn({
        let (pods, app) = (pods.clone(), name.clone());
        let (fewest, rolling) = (fewest_running.clone(), rolling.clone());
        async move {
            while rolling.load(Ordering::SeqCst) {
                let n = running_pods(&pods, &app).await.len();
                fewest.fetch_min(n, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    let hash = change_template(&pools, &name).await;
    let started = Instant::now();
    let last = watch_rollout(
        &nodes,
        &name,
        &hash,
        Duration::from_secs(150),
        |s| {
            assert!(
                s.ready_schedulable >= 3,
                "fewer than 3 Ready schedulable nodes: {}",
                s.ready_schedulable
            );
            assert!(
                s.total <= 4,
                "more than replicas + budget: {} nodes",
                s.total
            );
        },
        |s| s.updated == 3 && s.total == 3,
    )
    .await;
    eprintln!("drift of 3 nodes replaced in {:?}", started.elapsed());
    assert!(last.uids.is_disjoint(&old), "every node replaced");

    // The pods end Running on the new nodes.
    eventually(
        "the pods Running on the new nodes",
        Duration::from_secs(60),
        || async {
            let running = running_pods(&pods, &name).await;
            let on_new = running
                .iter()
                .filter(|(_, n)| last.names.contains(n))
                .count();
            (on_new == 3).then_some(()).ok_or(format!("{running:?}"))
        },
    )
    .await;
    rolling.store(false, Ordering::SeqCst);
    watcher.await.unwrap();
    let fewest = fewest_running.load(Ordering::SeqCst);
    assert!(
        fewest >= 2,
        "the budget allows one pod down; {fewest} were Running"
    );
    let s = status_of(&pools, &name).await;
    assert_eq!((s.replicas, s.updated_replicas), (3, 3));
    let c = find(&s.conditions, "Disrupting").unwrap();
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::False, "UpToDate")
    );
    test_support::wait_for_event(client.clone(), "Disrupting", &name, Duration::from_secs(10))
        .await;

    deployments
        .delete(&name, &DeleteParams::background())
        .await
        .unwrap();
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_budget_of_zero_holds_a_drift_and_two_lets_two_go_at_once() {
    let Some((_client, pools, nodes)) = setup().await else {
        return;
    };
    let held = ready_pool(
        &pools,
        &nodes,
        pool_with(
            &unique_name("held"),
            3,
            budget("0", &[DisruptionReason::Drifted]),
        ),
    )
    .await;
    let paced = ready_pool(
        &pools,
        &nodes,
        pool_with(&unique_name("paced"), 4, budget("2", &[])),
    )
    .await;
    let held_nodes = sample(&nodes, &held, "").await.names;
    change_template(&pools, &held).await;
    let hash = change_template(&pools, &paced).await;

    // Two at once: never more than replicas + 2 nodes, never fewer than 4 Ready.
    let mut most = 0;
    watch_rollout(
        &nodes,
        &paced,
        &hash,
        Duration::from_secs(150),
        |s| {
            most = most.max(s.total);
            assert!(s.total <= 6, "{} nodes", s.total);
            assert!(s.ready_schedulable >= 4, "{}", s.ready_schedulable);
        },
        |s| s.updated == 4 && s.total == 4,
    )
    .await;
    assert_eq!(most, 6, "the budget of 2 was used");

    // Meanwhile the budget of 0 held the other pool's drift, and says so.
    let message = disrupting(&pools, &held, "BudgetExhausted", Duration::from_secs(10)).await;
    assert!(
        message.contains("3 Drifted wait for the budget (0 node(s) at once)"),
        "{message}"
    );
    let s = status_of(&pools, &held).await;
    assert_eq!((s.replicas, s.updated_replicas), (3, 0));
    assert_eq!(sample(&nodes, &held, "").await.names, held_nodes);
    for name in [held, paced] {
        pools.delete(&name, &DeleteParams::default()).await.unwrap();
    }
}

#[tokio::test]
async fn a_node_past_expire_after_is_replaced() {
    let Some((client, pools, nodes)) = setup().await else {
        return;
    };
    let mut pool = pool_with(&unique_name("expiry"), 2, None);
    pool.spec.template.expire_after = Some("40s".into());
    let name = ready_pool(&pools, &nodes, pool).await;
    let first = sample(&nodes, &name, "").await.uids;
    let hash = template_hash(&pools.get(&name).await.unwrap().spec.template);
    let started = Instant::now();
    watch_rollout(
        &nodes,
        &name,
        &hash,
        Duration::from_secs(90),
        |s| {
            assert!(s.ready_schedulable >= 2, "{}", s.ready_schedulable);
            assert!(s.total <= 3, "{}", s.total);
        },
        |s| s.uids.is_disjoint(&first) && s.total == 2,
    )
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "not before they expire: {:?}",
        started.elapsed()
    );
    let event =
        test_support::wait_for_event(client, "Disrupting", &name, Duration::from_secs(10)).await;
    assert!(
        event
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("(Expired)"),
        "{event:?}"
    );
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
}

async fn fault(nodes: &Api<Node>, node: &str, on: bool) {
    let value = if on { json!("NotReady") } else { json!(null) };
    let patch = json!({"metadata": {"annotations": {FAULT_ANNOTATION: value}}});
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// The node's Ready status as the API server has it.
async fn ready_status(nodes: &Api<Node>, node: &str) -> Option<String> {
    let node = nodes.get_opt(node).await.unwrap()?;
    test_support::ready_status(&node).map(str::to_owned)
}

#[tokio::test]
async fn a_node_whose_heartbeats_stop_is_repaired_unless_too_many_are_sick() {
    let Some((client, pools, nodes)) = setup().await else {
        return;
    };
    let disruption = Some(Disruption {
        repair_after: Some("30s".into()),
        ..Default::default()
    });
    let name = ready_pool(
        &pools,
        &nodes,
        pool_with(&unique_name("repair"), 3, disruption),
    )
    .await;
    let hash = template_hash(&pools.get(&name).await.unwrap().spec.template);
    let names: Vec<String> = sample(&nodes, &name, &hash)
        .await
        .names
        .into_iter()
        .collect();

    // One node's kubelet "dies": the node lifecycle controller (40 s grace) marks it
    // Unknown; 30 s later it is replaced, its replacement Ready first.
    fault(&nodes, &names[0], true).await;
    let sick = eventually(
        "the node lifecycle controller to mark it",
        Duration::from_secs(90),
        || async {
            match ready_status(&nodes, &names[0]).await.as_deref() {
                Some("Unknown" | "False") => Ok(Instant::now()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let gone = watch_rollout(
        &nodes,
        &name,
        &hash,
        Duration::from_secs(90),
        |s| assert!(s.ready_schedulable >= 2, "{}", s.ready_schedulable),
        |s| !s.names.contains(&names[0]) && s.ready_schedulable == 3 && s.total == 3,
    )
    .await;
    assert!(
        sick.elapsed() >= Duration::from_secs(25),
        "repaired {:?} after it went NotReady",
        sick.elapsed()
    );
    let event =
        test_support::wait_for_event(client.clone(), "Disrupting", &name, Duration::from_secs(10))
            .await;
    assert!(
        event
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("(Unhealthy)"),
        "{event:?}"
    );

    // Two of three sick: more than 20% (1 node, rounded up). Repair stops and says so.
    let now: Vec<String> = gone.names.into_iter().collect();
    for node in &now[..2] {
        fault(&nodes, node, true).await;
    }
    let message = disrupting(&pools, &name, "RepairBlocked", Duration::from_secs(150)).await;
    assert!(message.contains("2 nodes unhealthy"), "{message}");
    test_support::wait_for_event(client, "DisruptionBlocked", &name, Duration::from_secs(10)).await;
    assert_eq!(
        sample(&nodes, &name, &hash).await.total,
        3,
        "nothing replaced"
    );

    // One comes back: the other is repaired.
    fault(&nodes, &now[0], false).await;
    watch_rollout(
        &nodes,
        &name,
        &hash,
        Duration::from_secs(90),
        |_| {},
        |s| !s.names.contains(&now[1]) && s.ready_schedulable == 3 && s.total == 3,
    )
    .await;
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_do_not_disrupt_pod_keeps_its_node_through_a_drift() {
    let Some((client, pools, nodes)) = setup().await else {
        return;
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let name = ready_pool(&pools, &nodes, pool_with(&unique_name("dnd"), 3, None)).await;
    let names: Vec<String> = sample(&nodes, &name, "").await.names.into_iter().collect();
    let keeper = unique_name("keeper");
    let mut pod = fixtures::pod_on(&names[0], &keeper, &keeper);
    pod.metadata.annotations =
        Some([(DO_NOT_DISRUPT_ANNOTATION.to_owned(), "true".to_owned())].into());
    pods.create(&PostParams::default(), &pod).await.unwrap();
    eventually("the keeper Running", Duration::from_secs(30), || async {
        let n = running_pods(&pods, &keeper).await.len();
        (n == 1).then_some(()).ok_or(format!("{n}"))
    })
    .await;

    let kept_uid = nodes.get(&names[0]).await.unwrap().metadata.uid.unwrap();
    let hash = change_template(&pools, &name).await;
    watch_rollout(
        &nodes,
        &name,
        &hash,
        Duration::from_secs(120),
        |s| {
            assert!(s.uids.contains(&kept_uid), "the kept node went");
            assert!(s.ready_schedulable >= 3 && s.total <= 4);
        },
        |s| s.updated == 2 && s.total == 3,
    )
    .await;
    let message = disrupting(&pools, &name, "DoNotDisrupt", Duration::from_secs(10)).await;
    assert!(message.contains(&names[0]), "{message}");
    assert_eq!(status_of(&pools, &name).await.updated_replicas, 2);

    // The pod gone, the node is replaced too.
    pods.delete(&keeper, &DeleteParams::default())
        .await
        .unwrap();
    watch_rollout(
        &nodes,
        &name,
        &hash,
        Duration::from_secs(60),
        |_| {},
        |s| s.updated == 3 && s.total == 3,
    )
    .await;
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
}

/// Tried as a user would: specs that no Node can carry, or settings that cannot be read,
/// are `InvalidSpec` with a Warning event naming the field, and nothing is created.
#[tokio::test]
async fn specs_no_node_can_carry_are_invalid_spec_up_front() {
    let Some((client, pools, nodes)) = setup().await else {
        return;
    };
    let mut cases: Vec<(NodePool, &str)> = Vec::new();
    let mut p = pool_with(&unique_name("badkey"), 1, None);
    p.spec
        .template
        .labels
        .insert("team name".into(), "x".into());
    cases.push((p, "spec.template.labels: key \"team name\""));
    let mut p = pool_with(&unique_name("badtaint"), 1, None);
    p.spec
        .template
        .taints
        .push(k8s_openapi::api::core::v1::Taint {
            key: "dedicated".into(),
            effect: "NoWay".into(),
            ..Default::default()
        });
    cases.push((p, "spec.template.taints[0].effect"));
    let mut p = pool_with(&unique_name("badpods"), 1, None);
    p.spec.template.capacity.pods =
        k8s_openapi::apimachinery::pkg::api::resource::Quantity("1.5".into());
    cases.push((p, "spec.template.capacity.pods"));
    let long = format!("{}-{}", unique_name("long"), "x".repeat(60));
    cases.push((pool_with(&long, 1, None), "metadata.name"));
    let mut cron = budget("1", &[]).unwrap();
    cron.budgets[0].schedule = Some("0 25 * * *".into());
    cron.budgets[0].duration = Some("1h".into());
    cases.push((
        pool_with(&unique_name("badcron"), 1, Some(cron)),
        "spec.disruption.budgets[0].schedule",
    ));
    let mut zone = budget("1", &[]).unwrap();
    zone.budgets[0].schedule = Some("@daily".into());
    zone.budgets[0].duration = Some("1h".into());
    zone.budgets[0].time_zone = Some("Moon/Base".into());
    cases.push((
        pool_with(&unique_name("badzone"), 1, Some(zone)),
        "spec.disruption.budgets[0].timeZone",
    ));
    for (pool, _) in &cases {
        pools.create(&PostParams::default(), pool).await.unwrap();
    }
    for (pool, field) in &cases {
        let name = pool.name_any();
        let c = eventually(
            &format!("{name} InvalidSpec"),
            Duration::from_secs(30),
            || async {
                let s = status_of(&pools, &name).await;
                match find(&s.conditions, "Ready") {
                    Some(c) if c.reason == "InvalidSpec" => Ok(c.clone()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
        assert!(c.message.starts_with(field), "{name}: {}", c.message);
        let event = test_support::wait_for_event(
            client.clone(),
            "InvalidSpec",
            &name,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert!(event.note.as_deref().unwrap_or_default().contains(field));
        let made = nodes.list(&ListParams::default()).await.unwrap().items;
        assert!(
            !made
                .iter()
                .any(|n| n.owner_references().iter().any(|o| o.name == name)),
            "{name}: a node was made"
        );
    }
    // The schema catches what it can: a malformed duration never reaches the operator.
    let mut bad = pool_with(&unique_name("badduration"), 1, None);
    bad.spec.template.expire_after = Some("soon".into());
    let refused = pools
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("expireAfter"), "{refused}");
    for (pool, _) in &cases {
        pools
            .delete(&pool.name_any(), &DeleteParams::default())
            .await
            .unwrap();
    }
}
