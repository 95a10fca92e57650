//! Secondary indexes of a cache, fed by the same watch events as the store.
use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::sync::{Arc, RwLock};

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;

/// A secondary index of one cache: object references by a key derived from each object
/// (nodes by pool, pods by where they are...), fed by the same watch events as the store,
/// with the same relist semantics (a relist builds a new index and swaps it in when
/// complete). It holds references, not objects: the store stays the one copy. The key is a
/// type of its own where it is more than a name (an enum of places, say), so that it is
/// built in one place only.
pub struct Index<K: Resource, Q = String> {
    inner: Arc<RwLock<IndexInner<K, Q>>>,
    key: fn(&K) -> Option<Q>,
}

impl<K: Resource, Q> Clone for Index<K, Q> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            key: self.key,
        }
    }
}

struct IndexInner<K: Resource, Q> {
    live: Keyed<K, Q>,
    relist: Option<Keyed<K, Q>>,
}

struct Keyed<K: Resource, Q> {
    by_key: HashMap<Q, HashSet<ObjectRef<K>>>,
    key_of: HashMap<ObjectRef<K>, Q>,
}

impl<K: Resource, Q> Default for Keyed<K, Q>
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

impl<K: Resource, Q: Hash + Eq + Clone> Keyed<K, Q>
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

    fn insert(&mut self, obj_ref: ObjectRef<K>, key: Option<Q>) {
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

impl<K, Q> Index<K, Q>
where
    K: Resource<DynamicType = ()> + Clone,
    Q: Hash + Eq + Clone,
{
    pub fn new(key: fn(&K) -> Option<Q>) -> Self {
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
    pub fn get<B>(&self, key: &B) -> Vec<ObjectRef<K>>
    where
        Q: Borrow<B>,
        B: Hash + Eq + ?Sized,
    {
        let inner = self.inner.read().expect("not poisoned");
        inner
            .live
            .by_key
            .get(key)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The objects under `key`, from `store`.
    pub fn objects<B>(&self, key: &B, store: &Store<K>) -> Vec<Arc<K>>
    where
        Q: Borrow<B>,
        B: Hash + Eq + ?Sized,
    {
        self.get(key).iter().filter_map(|r| store.get(r)).collect()
    }

    /// How many objects are under `key`.
    pub fn count<B>(&self, key: &B) -> usize
    where
        Q: Borrow<B>,
        B: Hash + Eq + ?Sized,
    {
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
    pub fn keys(&self) -> Vec<Q> {
        let inner = self.inner.read().expect("not poisoned");
        inner.live.by_key.keys().cloned().collect()
    }
}

/// What keeps an index up to date with one watch's events.
pub type Feed<K> = Box<dyn Fn(&watcher::Event<K>) + Send + Sync>;

impl<K, Q> Index<K, Q>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    Q: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// The feed of this index, for [`feed_indexes`].
    pub fn feed(&self) -> Feed<K> {
        let index = self.clone();
        Box::new(move |event| index.apply(event))
    }
}

/// Passes `events` through `feeds`, updating each index with every event.
pub fn feed_indexes<K, S>(
    events: S,
    feeds: Vec<Feed<K>>,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
    S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send,
{
    events.inspect(move |event| {
        if let Ok(event) = event {
            for feed in &feeds {
                feed(event);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::tests::cm;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::ResourceExt;

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
}
