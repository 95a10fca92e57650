//! The one way an operator watches: [`Watches`] opens every watch of a process the same
//! way (guarded, trimmed, indexed, fanned out) and knows when all their caches are full.
use std::fmt::Debug;
use std::future::Future;

use futures::FutureExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::fanout::{Fanout, Subscriptions};
use super::guard::{Guarded, guarded};
use super::index::{Feed, Index, feed_indexes};
use crate::events::Recorder;
use crate::http::Readiness;
use crate::leader::Leadership;

/// What to watch of one kind: which objects, what of each to keep, how to index them.
pub struct Watch<K: Resource> {
    config: watcher::Config,
    trim: fn(&mut K),
    indexes: Vec<Feed<K>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Watch<K> {
    /// Every object of the kind, cluster-wide, trimmed by [`super::trim_metadata`].
    pub fn all() -> Self {
        Self {
            config: watcher::Config::default(),
            trim: super::trim_metadata,
            indexes: Vec::new(),
        }
    }

    /// Only the objects that match the label selector.
    pub fn labels(mut self, selector: &str) -> Self {
        self.config = self.config.labels(selector);
        self
    }

    /// Only the objects that match the field selector.
    pub fn fields(mut self, selector: &str) -> Self {
        self.config = self.config.fields(selector);
        self
    }

    /// Keeps of each object what `trim` leaves (it should call `trim_metadata` too).
    pub fn trim(mut self, trim: fn(&mut K)) -> Self {
        self.trim = trim;
        self
    }

    /// Keeps `index` up to date with the cache.
    pub fn index<Q>(mut self, index: &Index<K, Q>) -> Self
    where
        Q: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        self.indexes.push(index.feed());
        self
    }
}

/// One kind's cache: the store reconciles read, and where controllers subscribe to its
/// events. Cheap to clone.
pub struct Cache<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    subscriptions: Subscriptions<K>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            subscriptions: self.subscriptions.clone(),
        }
    }
}

/// A cache reads as its store (`get`, `state`, `wait_until_ready`).
impl<K: Resource<DynamicType = ()> + Clone + 'static> std::ops::Deref for Cache<K> {
    type Target = Store<K>;
    fn deref(&self) -> &Store<K> {
        &self.store
    }
}

impl<K> Cache<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    /// The reflector store.
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    /// The watch's events for one consumer: the cache's objects first, then every event.
    pub fn subscribe(&self) -> BoxStream<'static, watcher::Result<watcher::Event<K>>> {
        self.subscriptions.subscribe()
    }
}

/// Every watch of one process, and the recorder that reports the objects they cannot read.
pub struct Watches {
    client: Client,
    recorder: Recorder,
    runs: Vec<BoxFuture<'static, ()>>,
    synced: Vec<BoxFuture<'static, bool>>,
}

impl Watches {
    pub fn new(client: Client, recorder: Recorder) -> Self {
        Self {
            client,
            recorder,
            runs: Vec::new(),
            synced: Vec::new(),
        }
    }

    /// The process's event recorder.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Opens the watch `watch` describes: through [`guarded`], so an object the type
    /// cannot read is reported and left out; trimmed before it is cached; indexed; and
    /// fanned out to every controller that subscribes. Its cache counts for readiness.
    pub fn add<K>(&mut self, watch: Watch<K>) -> Cache<K>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug + Send + Sync + 'static,
    {
        let (store, writer) = reflector::store();
        let api: Api<Guarded<K>> = Api::all(self.client.clone());
        let events = guarded(api, watch.config, self.recorder.clone())
            .modify(watch.trim)
            .reflect(writer);
        let kind = super::kind_of::<K>();
        let fanout = Fanout::new(kind, feed_indexes(events, watch.indexes), store.clone());
        let cache = Cache {
            store: store.clone(),
            subscriptions: fanout.subscriptions(),
        };
        self.runs.push(fanout.run().boxed());
        self.synced
            .push(async move { store.wait_until_ready().await.is_ok() }.boxed());
        cache
    }

    /// Runs every watch until `leading` ends or a watch does. Every replica keeps its
    /// caches and turns Ready once they all hold their first full list; only the leader
    /// then calls `leading` to build the part that writes (its controllers subscribe
    /// then, not before: a standby holds its caches and buffers no event), which runs
    /// until SIGTERM or Ctrl-C.
    pub async fn serve<F, Fut>(self, readiness: &Readiness, leadership: &mut Leadership, leading: F)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = ()>,
    {
        let Watches { runs, synced, .. } = self;
        let all_synced = async move {
            for cache in synced {
                if !cache.await {
                    return false;
                }
            }
            true
        };
        let writers = async move {
            if crate::process::synced_then_leading(all_synced, readiness, leadership).await {
                leading().await;
            }
        };
        tokio::select! {
            () = writers => {}
            _ = futures::future::join_all(runs) => {}
        }
    }
}
