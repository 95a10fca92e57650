//! Watches as the operators use them: one watch per kind, fanned out to every consumer
//! with deletions included; indexes fed by the same events; predicates that pass an
//! object on only when the part a reconcile reads changed; and the trimming of cached
//! objects to what is read.
//!
//! Why a fan-out of our own: kube-runtime 5's shared streams (`reflect_shared`) hand
//! subscribers applied objects only, never deletions, and the NodePoolReady condition
//! and the cleanup of a deleted pool's nodes are driven by deletions.
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, RwLock};

use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
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

/// Drops what no reconcile reads from a cached object: `managedFields` and kubectl's
/// last-applied annotation are most of an object's size.
pub fn trim_metadata<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// One watch, many consumers: every event of `source` (after it has updated the caches)
/// goes to each subscriber, deletions included. Subscribe first, then drive [`Fanout::run`].
pub struct Fanout<K> {
    source: BoxStream<'static, watcher::Result<watcher::Event<K>>>,
    subscribers: Vec<mpsc::UnboundedSender<watcher::Event<K>>>,
    what: &'static str,
}

impl<K: Clone + Send + 'static> Fanout<K> {
    /// `what` names the watch in logs (e.g. `NodePool`).
    pub fn new(
        what: &'static str,
        source: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    ) -> Self {
        Self {
            source: source.boxed(),
            subscribers: Vec::new(),
            what,
        }
    }

    /// A stream of the watch's events for one consumer.
    pub fn subscribe(&mut self) -> BoxStream<'static, watcher::Result<watcher::Event<K>>> {
        let (tx, rx) = mpsc::unbounded();
        self.subscribers.push(tx);
        rx.map(Ok).boxed()
    }

    /// Drives the watch until it ends. Errors are logged here (the watcher retries with
    /// backoff); consumers see only events.
    pub async fn run(self) {
        let Self {
            mut source,
            subscribers,
            what,
        } = self;
        while let Some(event) = source.next().await {
            match event {
                Ok(event) => {
                    for tx in &subscribers {
                        let _ = tx.unbounded_send(event.clone());
                    }
                }
                Err(e) => tracing::warn!(watch = what, error = %e, "watch failed; retrying"),
            }
        }
    }
}

/// A secondary index of one cache: object references by a key derived from each object
/// (nodes by pool, pods by node...), fed by the same watch events as the store, with the
/// same relist semantics (a relist builds a new index and swaps it in when complete). It
/// holds references, not objects: the store stays the one copy.
pub struct Index<K: Resource> {
    inner: Arc<RwLock<IndexInner<K>>>,
    key: fn(&K) -> Option<String>,
}

impl<K: Resource> Clone for Index<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            key: self.key,
        }
    }
}

struct IndexInner<K: Resource> {
    live: Keyed<K>,
    relist: Option<Keyed<K>>,
}

struct Keyed<K: Resource> {
    by_key: HashMap<String, HashSet<ObjectRef<K>>>,
    key_of: HashMap<ObjectRef<K>, String>,
}

impl<K: Resource> Default for Keyed<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn default() -> Self {
        Self {
            by_key: HashMap::new(),
            key_of: HashMap::new(),
        }
    }
}

impl<K: Resource> Keyed<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn remove(&mut self, obj_ref: &ObjectRef<K>) {
        if let Some(old) = self.key_of.remove(obj_ref)
            && let Some(set) = self.by_key.get_mut(&old)
        {
            set.remove(obj_ref);
            if set.is_empty() {
                self.by_key.remove(&old);
            }
        }
    }

    fn insert(&mut self, obj_ref: ObjectRef<K>, key: Option<String>) {
        self.remove(&obj_ref);
        if let Some(key) = key {
            self.by_key
                .entry(key.clone())
                .or_default()
                .insert(obj_ref.clone());
            self.key_of.insert(obj_ref, key);
        }
    }
}

impl<K> Index<K>
where
    K: Resource<DynamicType = ()> + Clone,
{
    pub fn new(key: fn(&K) -> Option<String>) -> Self {
        Self {
            inner: Arc::new(RwLock::new(IndexInner {
                live: Keyed::default(),
                relist: None,
            })),
            key,
        }
    }

    /// Applies one watch event.
    pub fn apply(&self, event: &watcher::Event<K>) {
        let mut inner = self.inner.write().expect("not poisoned");
        match event {
            watcher::Event::Apply(obj) => {
                inner.live.insert(ObjectRef::from_obj(obj), (self.key)(obj));
            }
            watcher::Event::Delete(obj) => inner.live.remove(&ObjectRef::from_obj(obj)),
            watcher::Event::Init => inner.relist = Some(Keyed::default()),
            watcher::Event::InitApply(obj) => {
                let key = (self.key)(obj);
                inner
                    .relist
                    .get_or_insert_with(Keyed::default)
                    .insert(ObjectRef::from_obj(obj), key);
            }
            watcher::Event::InitDone => {
                if let Some(fresh) = inner.relist.take() {
                    inner.live = fresh;
                }
            }
        }
    }

    /// The references under `key`.
    pub fn get(&self, key: &str) -> Vec<ObjectRef<K>> {
        let inner = self.inner.read().expect("not poisoned");
        inner
            .live
            .by_key
            .get(key)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The objects under `key`, from `store`.
    pub fn objects(&self, key: &str, store: &Store<K>) -> Vec<Arc<K>> {
        self.get(key).iter().filter_map(|r| store.get(r)).collect()
    }

    /// How many objects are under `key`.
    pub fn count(&self, key: &str) -> usize {
        let inner = self.inner.read().expect("not poisoned");
        inner.live.by_key.get(key).map_or(0, HashSet::len)
    }

    /// How many objects have a key, over all keys.
    pub fn len(&self) -> usize {
        self.inner.read().expect("not poisoned").live.key_of.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key.
    pub fn keys(&self) -> Vec<String> {
        let inner = self.inner.read().expect("not poisoned");
        inner.live.by_key.keys().cloned().collect()
    }
}

/// Passes `events` through `indexes`, updating each with every event.
pub fn feed_indexes<K, S>(
    events: S,
    indexes: Vec<Index<K>>,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send,
{
    events.inspect(move |event| {
        if let Ok(event) = event {
            for index in &indexes {
                index.apply(event);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::ResourceExt;

    fn cm(name: &str, key: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c.metadata.namespace = Some("ns".into());
        c.metadata.labels = Some([("pool".to_owned(), key.to_owned())].into());
        c
    }

    fn by_pool(c: &ConfigMap) -> Option<String> {
        c.labels().get("pool").cloned()
    }

    fn names(index: &Index<ConfigMap>, key: &str) -> Vec<String> {
        let mut v: Vec<_> = index.get(key).into_iter().map(|r| r.name).collect();
        v.sort();
        v
    }

    #[test]
    fn index_follows_applies_key_changes_and_deletes() {
        let index = Index::new(by_pool);
        index.apply(&watcher::Event::Apply(cm("a", "p1")));
        index.apply(&watcher::Event::Apply(cm("b", "p1")));
        index.apply(&watcher::Event::Apply(cm("c", "p2")));
        assert_eq!(names(&index, "p1"), ["a", "b"]);
        // a moves to p2
        index.apply(&watcher::Event::Apply(cm("a", "p2")));
        assert_eq!(names(&index, "p1"), ["b"]);
        assert_eq!(names(&index, "p2"), ["a", "c"]);
        index.apply(&watcher::Event::Delete(cm("b", "p1")));
        assert!(index.get("p1").is_empty());
        assert_eq!(index.count("p2"), 2);
        let mut keys = index.keys();
        keys.sort();
        assert_eq!(keys, ["p2"], "empty keys are dropped");
    }

    #[test]
    fn a_relist_swaps_in_a_fresh_index_when_complete() {
        let index = Index::new(by_pool);
        index.apply(&watcher::Event::Apply(cm("gone", "p1")));
        index.apply(&watcher::Event::Init);
        index.apply(&watcher::Event::InitApply(cm("new", "p1")));
        // Until the relist is complete the old view is served.
        assert_eq!(names(&index, "p1"), ["gone"]);
        index.apply(&watcher::Event::InitDone);
        assert_eq!(names(&index, "p1"), ["new"]);
    }

    #[test]
    fn trimming_drops_managed_fields_and_last_applied() {
        let mut c = cm("a", "p");
        c.metadata.managed_fields = Some(vec![Default::default()]);
        c.metadata.annotations = Some(
            [(
                "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                "{}".to_owned(),
            )]
            .into(),
        );
        trim_metadata(&mut c);
        assert!(c.metadata.managed_fields.is_none());
        assert!(c.metadata.annotations.is_none());
    }

    #[tokio::test]
    async fn fanout_sends_every_event_to_every_subscriber() {
        let events = vec![
            Ok(watcher::Event::Apply(cm("a", "p"))),
            Ok(watcher::Event::Delete(cm("a", "p"))),
        ];
        let mut fanout = Fanout::new("ConfigMap", futures::stream::iter(events));
        let (one, two) = (fanout.subscribe(), fanout.subscribe());
        fanout.run().await;
        for sub in [one, two] {
            let got: Vec<_> = sub.collect().await;
            assert_eq!(got.len(), 2);
            assert!(matches!(got[1], Ok(watcher::Event::Delete(_))));
        }
    }
}
