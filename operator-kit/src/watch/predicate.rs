//! Predicates: a watch event passes on to a controller only when the part of the object
//! its reconcile reads changed, or the object went.
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::watcher;

/// Hashes `value` for use in a predicate (within one process only).
pub fn hash_of(value: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// Turns a watch event stream into a stream of objects that changed in the part `key`
/// looks at, or were deleted. `on_skip` is called for each event dropped. (kube's
/// `predicate_filter` drops a deletion whose last state hashes like the one before.)
pub fn changed_or_deleted<K, S>(
    events: S,
    key: impl Fn(&K) -> u64 + Send + 'static,
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
