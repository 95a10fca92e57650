//! A provider quota stops growth with the AtQuota condition, an event, and a
//! NodePoolReady=False AtQuota on the pool's Autoscaler. Own binary: the quota is global.
mod support;

use std::time::Duration;

use e2e::{eventually, fixtures, shared, unique_name};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use shared_crd::condition::{ConditionStatus, find};
use shared_crd::{Autoscaler, NodePool};
use support::{config, nodes_of, operator};

#[tokio::test]
async fn quota_stops_growth_with_at_quota() {
    operator(config(Some(2)));
    let client = shared().client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client);
    let name = unique_name("quota");
    let scaler = unique_name("as");
    autoscalers
        .create(
            &PostParams::default(),
            &fixtures::autoscaler(&scaler, &name, 1, 5),
        )
        .await
        .unwrap();
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&name, 4))
        .await
        .unwrap();

    let scaling = eventually("AtQuota", Duration::from_secs(30), || async {
        let p = pools.get(&name).await.map_err(|e| e.to_string())?;
        let status = p.status.unwrap_or_default();
        match find(&status.conditions, "Scaling") {
            Some(c) if c.reason == "AtQuota" && status.replicas == 2 => Ok(c.clone()),
            other => Err(format!("{other:?}, replicas {}", status.replicas)),
        }
    })
    .await;
    assert_eq!(scaling.status, ConditionStatus::False);
    assert!(
        scaling.message.contains("quota of 2 nodes"),
        "{}",
        scaling.message
    );
    // It stays there: no third node appears.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(nodes_of(&nodes, &name).await.len(), 2);

    let ready = eventually("NodePoolReady AtQuota", Duration::from_secs(30), || async {
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
    eventually("NodePoolReady True", Duration::from_secs(30), || async {
        let a = autoscalers.get(&scaler).await.map_err(|e| e.to_string())?;
        let conditions = a.status.unwrap_or_default().conditions;
        find(&conditions, "NodePoolReady")
            .filter(|c| c.status == ConditionStatus::True)
            .map(|_| ())
            .ok_or(format!("{conditions:?}"))
    })
    .await;
    pools.delete(&name, &DeleteParams::default()).await.unwrap();
}
