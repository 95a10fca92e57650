//! A watch of `K` that one object the Rust type cannot read does not stop.
//!
//! kube-runtime's watcher reads a LIST in one piece: a single object that does not
//! deserialise into `K` (stored under an older, looser schema, or written by a newer
//! version of the CRD) fails the whole LIST, and the watcher retries it for ever, so the
//! controller sees nothing at all. Here the watch reads [`Guarded<K>`] (as Stackable's
//! operators read kube's `DeserializeGuard`): each unreadable object is reported (a
//! Warning log line and an `InvalidObject` Warning event on it, naming the error) and left
//! out of the stream, and every other object flows on.
//!
//! Why not kube's `DeserializeGuard`: it buffers each object into a `serde_value` tree and
//! clones that tree before it tries `K`, a cost paid for every pod of a cluster-wide pod
//! watch. [`Guarded`] keeps the object's JSON text (`serde_json::value::RawValue`, one
//! copy of the bytes) and parses `K` from it; only an object that fails is parsed a
//! second time, for its metadata. It relies on the client reading lists and watch events
//! with `serde_json`, which kube's does.
//!
//! An object left out is not in the cache: code that acts on an object's absence (the
//! deletion of an orphan) must confirm it with the API server first.
use std::borrow::Cow;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::watcher;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::events::{Event, EventType, Recorder};

/// `K`, or what is known of an object that does not read as `K`.
#[derive(Clone, Debug)]
pub struct Guarded<K>(pub Result<K, Unreadable>);

/// An object that did not deserialise into the Rust type.
#[derive(Clone, Debug)]
pub struct Unreadable {
    /// The deserialiser's message.
    pub error: String,
    pub metadata: ObjectMeta,
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Guarded<K> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Metadata {
            #[serde(default)]
            metadata: ObjectMeta,
        }
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        match serde_json::from_str::<K>(raw.get()) {
            Ok(object) => Ok(Guarded(Ok(object))),
            Err(error) => {
                let Metadata { metadata } =
                    serde_json::from_str(raw.get()).map_err(D::Error::custom)?;
                Ok(Guarded(Err(Unreadable {
                    error: error.to_string(),
                    metadata,
                })))
            }
        }
    }
}

impl<K: Resource> Resource for Guarded<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        self.0.as_ref().map_or_else(|u| &u.metadata, K::meta)
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.0
            .as_mut()
            .map_or_else(|u| &mut u.metadata, K::meta_mut)
    }
}

/// The events of a watch of `api` that read as `K`; each object that does not is
/// reported with `recorder` and left out.
pub fn guarded<K>(
    api: kube::Api<Guarded<K>>,
    config: watcher::Config,
    recorder: Recorder,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()>
        + DeserializeOwned
        + Clone
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    use kube::runtime::WatchStreamExt;
    watcher(api, config)
        .default_backoff()
        .filter_map(move |event| {
            let recorder = recorder.clone();
            async move {
                let event = match event {
                    Ok(event) => event,
                    Err(e) => return Some(Err(e)),
                };
                let passed = match event {
                    watcher::Event::Init => Ok(watcher::Event::Init),
                    watcher::Event::InitDone => Ok(watcher::Event::InitDone),
                    watcher::Event::Apply(g) => readable(g).map(watcher::Event::Apply),
                    watcher::Event::InitApply(g) => readable(g).map(watcher::Event::InitApply),
                    // Gone anyway; a relist drops it from the cache if it was there.
                    watcher::Event::Delete(g) => match readable(g) {
                        Ok(object) => Ok(watcher::Event::Delete(object)),
                        Err(_) => return None,
                    },
                };
                match passed {
                    Ok(event) => Some(Ok(event)),
                    Err(unreadable) => {
                        report_unreadable(&recorder, &unreadable).await;
                        None
                    }
                }
            }
        })
}

fn readable<K>(guard: Guarded<K>) -> Result<K, Box<Guarded<K>>> {
    match guard.0 {
        Ok(object) => Ok(object),
        Err(unreadable) => Err(Box::new(Guarded(Err(unreadable)))),
    }
}

async fn report_unreadable<K>(recorder: &Recorder, guard: &Guarded<K>)
where
    K: Resource<DynamicType = ()>,
{
    let Err(unreadable) = &guard.0 else {
        return;
    };
    let kind = K::kind(&());
    let name = guard.meta().name.clone().unwrap_or_default();
    tracing::warn!(
        %kind, %name, error = %unreadable.error,
        "left out of the cache: the object does not match this operator's type"
    );
    let note = format!(
        "{kind} {name} cannot be read by this operator ({}); it is left alone until it can",
        unreadable.error
    );
    let event = Event {
        type_: EventType::Warning,
        reason: crate::events::INVALID_OBJECT.into(),
        note: Some(note),
        action: "Watch".into(),
        secondary: None,
    };
    recorder.publish(guard, event).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::ResourceExt;
    use kube::core::{ObjectList, WatchEvent};

    const GOOD: &str = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"good","namespace":"ns"},"data":{"a":"1"}}"#;
    const BAD: &str = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"bad","namespace":"ns"},"data":{"a":2}}"#;

    #[test]
    fn a_list_with_an_unreadable_object_reads_the_others() {
        let list = format!(
            r#"{{"apiVersion":"v1","kind":"ConfigMapList","metadata":{{"resourceVersion":"7"}},"items":[{GOOD},{BAD}]}}"#
        );
        let list: ObjectList<Guarded<ConfigMap>> = serde_json::from_str(&list).unwrap();
        let [good, bad] = &list.items[..] else {
            panic!("{list:?}")
        };
        let good = good.0.as_ref().unwrap();
        assert_eq!(good.data.as_ref().unwrap()["a"], "1");
        let bad = bad.0.as_ref().unwrap_err();
        assert_eq!(bad.metadata.name.as_deref(), Some("bad"));
        assert!(bad.error.contains("expected a string"), "{}", bad.error);
    }

    #[test]
    fn watch_events_read_through_the_guard() {
        // As the API server writes them: the type before the object.
        let line = format!(r#"{{"type":"MODIFIED","object":{BAD}}}"#);
        let event: WatchEvent<Guarded<ConfigMap>> = serde_json::from_str(&line).unwrap();
        let WatchEvent::Modified(guard) = event else {
            panic!()
        };
        assert_eq!(guard.name_any(), "bad", "named from its metadata");
        assert!(guard.0.is_err());
        let line = format!(r#"{{"type":"ADDED","object":{GOOD}}}"#);
        let event: WatchEvent<Guarded<ConfigMap>> = serde_json::from_str(&line).unwrap();
        assert!(matches!(event, WatchEvent::Added(Guarded(Ok(_)))));
    }
}
