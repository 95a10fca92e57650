//! Filters for watch streams: pass an object on only when a chosen part of it
//! changed, and always pass deletions (kube's `predicate_filter` drops a delete
//! whose last state hashes like the one before it).
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::watcher;

/// Hashes `value` for use in a predicate.
pub fn hash_of(value: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// Turns a reflected watch stream into a stream of objects that changed in the part
/// `key` looks at, or were deleted. `on_skip` is called for each event dropped.
pub fn changed_or_deleted<K, S>(
    events: S,
    key: fn(&K) -> u64,
    on_skip: impl Fn() + Send + 'static,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send
where
    K: Resource + Clone + Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    let mut seen: HashMap<String, u64> = HashMap::new();
    events.flat_map(move |event| {
        let out: Vec<Result<K, watcher::Error>> = match event {
            Err(e) => vec![Err(e)],
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => {
                let id = object_id(&obj);
                let hash = key(&obj);
                if seen.insert(id, hash) == Some(hash) {
                    on_skip();
                    vec![]
                } else {
                    vec![Ok(obj)]
                }
            }
            Ok(watcher::Event::Delete(obj)) => {
                seen.remove(&object_id(&obj));
                vec![Ok(obj)]
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => vec![],
        };
        futures::stream::iter(out)
    })
}

fn object_id<K: Resource>(obj: &K) -> String {
    let meta = obj.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// Publishes a Kubernetes Event about `obj`. Servers before 1.22 refuse an
/// events.k8s.io/v1 Event in `default` about a cluster-scoped object ("involvedObject.namespace
/// does not match event.namespace"); for those the reference names `default` too.
pub async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &kube::runtime::events::Recorder,
    obj: &K,
    event: kube::runtime::events::Event,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static DEFAULT_NAMESPACE_FOR_CLUSTER_SCOPED: AtomicBool = AtomicBool::new(false);
    let mut reference = obj.object_ref(&());
    if reference.namespace.is_none() && DEFAULT_NAMESPACE_FOR_CLUSTER_SCOPED.load(Ordering::Relaxed)
    {
        reference.namespace = Some("default".into());
    }
    match recorder.publish(&event, &reference).await {
        Ok(()) => {}
        Err(kube::Error::Api(s))
            if reference.namespace.is_none()
                && s.message.contains("does not match event.namespace") =>
        {
            DEFAULT_NAMESPACE_FOR_CLUSTER_SCOPED.store(true, Ordering::Relaxed);
            reference.namespace = Some("default".into());
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, reason = %event.reason, "publishing event failed");
            }
        }
        Err(e) => tracing::warn!(error = %e, reason = %event.reason, "publishing event failed"),
    }
}
