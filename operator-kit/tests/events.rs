//! Events on a real API server: a note longer than the API's limit (1024 bytes, e.g. a
//! scale-down listing a hundred node names) is shortened, not refused and lost.
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::Api;
use kube::api::{ListParams, PostParams};
use operator_kit::events::{Event, EventType, Recorder, Reporter};
use test_support::{eventually, shared, unique_name};

#[tokio::test]
async fn a_note_past_the_limit_is_shortened_and_published() {
    let client = shared().client().await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let name = unique_name("long-note");
    let map = maps
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let recorder = Recorder::new(client.clone(), Reporter::from("events-test"));
    let nodes: Vec<String> = (0..125).map(|i| format!("envelope-n{i:04}é")).collect();
    let note = format!("removed 125 nodes: {}", nodes.join(", "));
    assert!(note.len() > 1024);
    recorder
        .publish(
            &map,
            Event {
                type_: EventType::Normal,
                reason: "ScaledDown".into(),
                note: Some(note.clone()),
                action: "Scale".into(),
                secondary: None,
            },
        )
        .await;
    let events: Api<K8sEvent> = Api::namespaced(client, "default");
    let published = eventually(
        "the event about the ConfigMap",
        Duration::from_secs(10),
        || async {
            let list = events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            list.items
                .into_iter()
                .find(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(&name))
                .ok_or_else(|| "no event yet".to_owned())
        },
    )
    .await;
    let shown = published.note.unwrap_or_default();
    assert!(shown.len() <= 1024, "{} bytes", shown.len());
    assert!(
        shown.starts_with("removed 125 nodes: envelope-n0000é, "),
        "{shown}"
    );
    assert!(shown.ends_with("..."), "{shown}");
}
