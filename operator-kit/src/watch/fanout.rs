//! One watch, many consumers.
//!
//! Why a fan-out of our own: kube-runtime 5's shared streams (`reflect_shared`) hand
//! subscribers applied objects only, never deletions, and the NodePoolReady condition
//! and the cleanup of a deleted pool's nodes are driven by deletions.
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::tests::cm;
    use kube::ResourceExt;

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
