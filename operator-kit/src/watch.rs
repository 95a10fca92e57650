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
use std::sync::{Arc, Mutex, RwLock};

use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::core::DeserializeGuard;
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

/// One watch, many consumers: every event of `source` (after it has updated the cache
/// `store`) goes to each subscriber, deletions included.
///
/// A consumer may subscribe at any time, also after the watch has run for a while (a
/// standby that becomes leader starts its controllers then): it first gets every object of
/// the cache as an `Apply`, then the live events. Nothing is buffered for consumers that
/// do not exist yet, so a standby holds its caches and nothing more.
pub struct Fanout<K: Resource<DynamicType = ()> + Clone + 'static> {
    source: BoxStream<'static, watcher::Result<watcher::Event<K>>>,
    subscriptions: Subscriptions<K>,
    what: &'static str,
}

/// Where consumers of a [`Fanout`] subscribe. Cheap to clone.
pub struct Subscriptions<K: Resource<DynamicType = ()> + Clone + 'static> {
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<watcher::Event<K>>>>>,
    store: Store<K>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for Subscriptions<K> {
    fn clone(&self) -> Self {
        Self {
            subscribers: self.subscribers.clone(),
            store: self.store.clone(),
        }
    }
}

impl<K> Subscriptions<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    /// A stream of the watch's events for one consumer: the cache's objects first, then
    /// every event. The replay and the registration happen under the lock the watch sends
    /// under, so no event falls between them (one may come twice: harmless to a predicate).
    pub fn subscribe(&self) -> BoxStream<'static, watcher::Result<watcher::Event<K>>> {
        let (tx, rx) = mpsc::unbounded();
        let mut subscribers = self.subscribers.lock().expect("not poisoned");
        for obj in self.store.state() {
            let _ = tx.unbounded_send(watcher::Event::Apply(K::clone(&obj)));
        }
        subscribers.push(tx);
        rx.map(Ok).boxed()
    }
}

impl<K> Fanout<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    /// `what` names the watch in logs (e.g. `NodePool`); `store` is the cache `source`
    /// feeds, replayed to late subscribers.
    pub fn new(
        what: &'static str,
        source: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
        store: Store<K>,
    ) -> Self {
        Self {
            source: source.boxed(),
            subscriptions: Subscriptions {
                subscribers: Arc::new(Mutex::new(Vec::new())),
                store,
            },
            what,
        }
    }

    /// Where to subscribe, now or later.
    pub fn subscriptions(&self) -> Subscriptions<K> {
        self.subscriptions.clone()
    }

    /// Drives the watch until it ends. Errors are logged here (the watcher retries with
    /// backoff); consumers see only events. A consumer that has gone is dropped.
    pub async fn run(self) {
        let Self {
            mut source,
            subscriptions,
            what,
        } = self;
        while let Some(event) = source.next().await {
            match event {
                Ok(event) => {
                    let mut subscribers = subscriptions.subscribers.lock().expect("not poisoned");
                    subscribers.retain(|tx| tx.unbounded_send(event.clone()).is_ok());
                }
                Err(e) => tracing::warn!(watch = what, error = %e, "watch failed; retrying"),
            }
        }
        // The watch is over: so are its consumers' streams.
        subscriptions
            .subscribers
            .lock()
            .expect("not poisoned")
            .clear();
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

/// A watch of `K` that one object the Rust type cannot read does not stop.
///
/// kube-runtime's watcher reads a LIST in one piece: a single object that does not
/// deserialise into `K` (stored under an older, looser schema; or written by a newer
/// version of the CRD) fails the whole LIST, and the watcher retries it for ever, so the
/// controller sees nothing at all. Here the watch reads [`DeserializeGuard<K>`] (as
/// Stackable's operators do): each unreadable object is reported (a Warning log line
/// and a `InvalidObject` Warning event on it, naming the error) and left out of the
/// stream, and every other object flows on.
///
/// An object left out is not in the cache: code that acts on an object's absence (the
/// deletion of an orphan) must confirm it with the API server first.
///
/// [`DeserializeGuard<K>`]: kube::core::DeserializeGuard
pub fn guarded<K>(
    api: kube::Api<DeserializeGuard<K>>,
    config: watcher::Config,
    recorder: crate::events::Recorder,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Resource<DynamicType = ()>
        + serde::de::DeserializeOwned
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
                let readable = |guard: DeserializeGuard<K>| match guard.0 {
                    Ok(object) => Ok(object),
                    Err(invalid) => Err(Box::new(DeserializeGuard::<K>(Err(invalid)))),
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

async fn report_unreadable<K>(recorder: &crate::events::Recorder, guard: &DeserializeGuard<K>)
where
    K: Resource<DynamicType = ()>,
{
    let Err(invalid) = &guard.0 else {
        return;
    };
    let kind = K::kind(&());
    let name = guard.meta().name.clone().unwrap_or_default();
    tracing::warn!(
        %kind, %name, error = %invalid.error,
        "left out of the cache: the object does not match this operator's type"
    );
    let note = format!(
        "{kind} {name} cannot be read by this operator ({}); it is left alone until it can",
        invalid.error
    );
    let event = crate::events::Event {
        type_: crate::events::EventType::Warning,
        reason: "InvalidObject".into(),
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
        let (store, writer) = kube::runtime::reflector::store();
        let fanout = Fanout::new(
            "ConfigMap",
            kube::runtime::WatchStreamExt::reflect(futures::stream::iter(events), writer),
            store,
        );
        let subscriptions = fanout.subscriptions();
        let (one, two) = (subscriptions.subscribe(), subscriptions.subscribe());
        fanout.run().await;
        for sub in [one, two] {
            let got: Vec<_> = sub.collect().await;
            assert_eq!(got.len(), 2);
            assert!(matches!(got[1], Ok(watcher::Event::Delete(_))));
        }
    }

    #[tokio::test]
    async fn a_late_subscriber_gets_the_cache_first_then_live_events() {
        let (tx, rx) = mpsc::unbounded();
        let (store, writer) = kube::runtime::reflector::store();
        let fanout = Fanout::new(
            "ConfigMap",
            kube::runtime::WatchStreamExt::reflect(rx, writer),
            store.clone(),
        );
        let subscriptions = fanout.subscriptions();
        let running = tokio::spawn(fanout.run());
        for name in ["a", "b"] {
            tx.unbounded_send(Ok(watcher::Event::Apply(cm(name, "p"))))
                .unwrap();
        }
        while store.state().len() < 2 {
            tokio::task::yield_now().await;
        }
        // Subscribed after both objects went by: it gets them from the cache.
        let late = subscriptions.subscribe();
        drop(subscriptions);
        tx.unbounded_send(Ok(watcher::Event::Delete(cm("a", "p"))))
            .unwrap();
        drop(tx);
        running.await.unwrap();
        let got: Vec<String> = late
            .map(|e| match e.unwrap() {
                watcher::Event::Apply(c) => format!("apply {}", c.name_any()),
                watcher::Event::Delete(c) => format!("delete {}", c.name_any()),
                _ => "other".to_owned(),
            })
            .collect()
            .await;
        let (mut replayed, live) = (got[..2].to_vec(), &got[2..]);
        replayed.sort();
        assert_eq!(replayed, ["apply a", "apply b"]);
        assert_eq!(live, ["delete a"]);
    }
}
