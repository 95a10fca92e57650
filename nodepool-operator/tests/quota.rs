//! A provider quota: pools that want more than it allows, all at once, never get past it
//! (the quota is reserved atomically across concurrent reconciles), and a pool held back
//! shows AtQuota as a condition, an event, and NodePoolReady=False AtQuota on its
//! Autoscaler. Own binary: the quota is global, so its tests run one after the other.
mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use shared_crd::condition::{ConditionStatus, find};
use shared_crd::{Autoscaler, NodePool};
use support::{config, nodes_of, operator};
use test_support::{eventually, fixtures, shared, unique_name};

const QUOTA: usize = 6;
const CONVERGE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn quota() {
    operator(config(Some(QUOTA as u32)));
    let client = shared().client().await.unwrap();
    pools_that_want_more_at_once_never_pass_the_quota(&client).await;
    a_pool_at_quota_says_so_and_clears_within_it(&client).await;
}

async fn pools_that_want_more_at_once_never_pass_the_quota(client: &kube::Client) {
    let pools: Api<NodePool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    // Every Node of these pools that ever existed at once, from a watch.
    let prefix = unique_name("burst");
    let live = Arc::new(Mutex::new(HashSet::<String>::new()));
    let most = Arc::new(Mutex::new(0usize));
    let watch = {
        let (live, most, prefix) = (live.clone(), most.clone(), prefix.clone());
        let stream = watcher(
            nodes.clone(),
            watcher::Config::default().labels("tier=test"),
        );
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(Ok(event)) = stream.next().await {
                let mut live = live.lock().unwrap();
                match event {
                    watcher::Event::Apply(n) | watcher::Event::InitApply(n)
                        if n.name_any().starts_with(&prefix) =>
                    {
                        live.insert(n.name_any());
                    }
                    watcher::Event::Delete(n) => {
                        live.remove(&n.name_any());
                    }
                    _ => {}
                }
                let mut most = most.lock().unwrap();
                *most = (*most).max(live.len());
            }
        })
    };
    // Four pools of 3 at once: 12 wanted, 6 allowed.
    let names: Vec<String> = (0..4).map(|i| format!("{prefix}-{i}")).collect();
    futures::future::join_all(names.iter().map(|name| {
        let pools = pools.clone();
        async move {
            pools
                .create(&PostParams::default(), &fixtures::nodepool(name, 3))
                .await
                .unwrap()
        }
    }))
    .await;
    let total = eventually("the quota filled", CONVERGE, || async {
        let mut total = 0;
        let mut held_back = 0;
        for name in &names {
            let p = pools.get(name).await.map_err(|e| e.to_string())?;
            let s = p.status.unwrap_or_default();
            total += s.replicas as usize;
            held_back +=
                usize::from(find(&s.conditions, "Scaling").is_some_and(|c| c.reason == "AtQuota"));
        }
        (total == QUOTA && held_back > 0)
            .then_some(total)
            .ok_or(format!("{total} nodes, {held_back} pools at quota"))
    })
    .await;
    assert_eq!(total, QUOTA);
    // The operator has said AtQuota: it has seen every pool and held them back.
    for name in &names {
        let p = pools.get(name).await.unwrap();
        let s = p.status.unwrap_or_default();
        if s.replicas < 3 {
            test_support::wait_for_event(client.clone(), "AtQuota", name, CONVERGE).await;
        }
    }
    let mut listed = 0;
    for name in &names {
        listed += nodes_of(&nodes, name).await.len();
    }
    assert_eq!(listed, QUOTA, "nodes that exist");
    assert_eq!(
        *most.lock().unwrap(),
        QUOTA,
        "most nodes of these pools that existed at once"
    );

    for name in &names {
        pools.delete(name, &DeleteParams::default()).await.unwrap();
    }
    eventually("the pools' nodes gone", CONVERGE, || async {
        let left = live.lock().unwrap().len();
        (left == 0).then_some(()).ok_or(format!("{left} left"))
    })
    .await;
    watch.abort();
}

async fn a_pool_at_quota_says_so_and_clears_within_it(client: &kube::Client) {
    let pools: Api<NodePool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let name = unique_name("quota");
    let scaler = unique_name("as");
    // The most the schema allows: the quota, not the request, bounds what is made.
    let want = shared_crd::MAX_REPLICAS;
    autoscalers
        .create(
            &PostParams::default(),
            &fixtures::autoscaler(&scaler, &name, 1, want),
        )
        .await
        .unwrap();
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&name, want))
        .await
        .unwrap();

    let scaling = eventually("AtQuota", CONVERGE, || async {
        let p = pools.get(&name).await.map_err(|e| e.to_string())?;
        let status = p.status.unwrap_or_default();
        match find(&status.conditions, "Scaling") {
            Some(c) if c.reason == "AtQuota" && status.replicas == QUOTA as i32 => Ok(c.clone()),
            other => Err(format!("{other:?}, replicas {}", status.replicas)),
        }
    })
    .await;
    assert_eq!(scaling.status, ConditionStatus::False);
    assert!(
        scaling.message.contains(&format!("quota of {QUOTA} nodes")),
        "{}",
        scaling.message
    );
    // The event comes after the decision: no node past the quota was created before it.
    test_support::wait_for_event(client.clone(), "AtQuota", &name, CONVERGE).await;
    assert_eq!(nodes_of(&nodes, &name).await.len(), QUOTA);

    let ready = eventually("NodePoolReady AtQuota", CONVERGE, || async {
        let a = autoscalers.get(&scaler).await.map_err(|e| e.to_string())?;
        let conditions = a.status.unwrap_or_default().conditions;
        find(&conditions, "NodePoolReady")
            .filter(|c| c.reason == "AtQuota")
            .cloned()
            .ok_or(format!("{conditions:?}"))
    })
    .await;
    assert_eq!(ready.status, ConditionStatus::False);

    // Within the quota again: the condition clears.
    let patch = json!({"spec": {"replicas": 2}});
    pools
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("NodePoolReady True", CONVERGE, || async {
        let a = autoscalers.get(&scaler).await.map_err(|e| e.to_string())?;
        let conditions = a.status.unwrap_or_default().conditions;
        find(&conditions, "NodePoolReady")
            .filter(|c| c.status == ConditionStatus::True)
            .map(|_| ())
            .ok_or(format!("{conditions:?}"))
    })
    .await;
    autoscalers
        .delete(&scaler, &DeleteParams::default())
        .await
        .unwrap();
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
}
