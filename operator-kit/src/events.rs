//! Kubernetes Events: what an operator tells the people who `kubectl describe` its objects.
//!
//! [`Recorder`] publishes `events.k8s.io/v1` Events with client-go's series semantics: the
//! same event about the same object within six minutes patches the first one's `series`
//! (count, last observed time) instead of creating another object.
//!
//! kube-runtime's recorder does the same, but its series cache holds a whole Event and its
//! key per entry and scans the cache on every publish, which made it the autoscaler's
//! largest heap consumer at scale (docs/scale.md). This one keeps a 64-bit key and the
//! Event's name per entry, and expires entries at most once a minute.
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};

use crate::errors::NotFoundIsDone;

pub use kube::runtime::events::{Event, EventType, Reporter};

/// Reason of the Warning event about an object a watch cannot read (see [`crate::watch`]).
pub const INVALID_OBJECT: &str = "InvalidObject";

/// How long a published event can still gain a series entry (client-go's and kube's 6 min).
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// The most bytes an Event's note may hold: the API server refuses a longer one
/// (`can have at most 1024 characters`), and the event would be lost.
pub const NOTE_LIMIT: usize = 1024;

/// `note`, cut at a character boundary to end in `...` within [`NOTE_LIMIT`] bytes if
/// it is longer.
pub fn shortened(note: &str) -> std::borrow::Cow<'_, str> {
    if note.len() <= NOTE_LIMIT {
        return note.into();
    }
    let mut end = NOTE_LIMIT - 3;
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &note[..end]).into()
}

/// Expired series entries are dropped at most this often.
const GC_EVERY: Duration = Duration::from_secs(60);

/// Publishes Events for one reporting controller. Cheap to clone; clones share the series
/// cache.
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    reporter: Reporter,
    series: Arc<Mutex<SeriesCache>>,
}

/// Events published in the last [`SERIES_TTL`], by a hash of what makes two events the same.
#[derive(Debug)]
struct SeriesCache {
    entries: HashMap<u64, Published>,
    last_gc: Instant,
}

/// What a repeat of an event needs: where the first one is, and how often it happened.
#[derive(Debug)]
struct Published {
    namespace: Box<str>,
    name: Box<str>,
    count: i32,
    last: Instant,
}

impl SeriesCache {
    fn new(now: Instant) -> Self {
        Self {
            entries: HashMap::new(),
            last_gc: now,
        }
    }

    /// Drops entries older than the TTL, at most once per [`GC_EVERY`].
    fn expire(&mut self, now: Instant) {
        if now.duration_since(self.last_gc) < GC_EVERY {
            return;
        }
        self.last_gc = now;
        self.entries
            .retain(|_, p| now.duration_since(p.last) < SERIES_TTL);
        self.entries.shrink_to_fit();
    }

    /// The repeat of a live entry: its namespace, name and new count.
    fn repeat(&mut self, key: u64, now: Instant) -> Option<(Box<str>, Box<str>, i32)> {
        self.expire(now);
        let p = self.entries.get_mut(&key)?;
        if now.duration_since(p.last) >= SERIES_TTL {
            return None;
        }
        p.count += 1;
        p.last = now;
        Some((p.namespace.clone(), p.name.clone(), p.count))
    }

    fn insert(&mut self, key: u64, namespace: &str, name: &str, now: Instant) {
        self.entries.insert(
            key,
            Published {
                namespace: namespace.into(),
                name: name.into(),
                count: 1,
                last: now,
            },
        );
    }
}

/// The patch of a repeated event: its series only.
#[derive(Debug, serde::Serialize)]
struct SeriesPatch {
    series: EventSeries,
}

/// What makes two events the same (client-go's `getEventKey`): type, reason, action, note,
/// and the objects it is about. The reporter is the same for all of one recorder's events.
fn series_key(event: &Event, regarding: &ObjectReference) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (event.type_ == EventType::Warning).hash(&mut h);
    event.reason.hash(&mut h);
    event.action.hash(&mut h);
    event.note.hash(&mut h);
    for r in std::iter::once(regarding).chain(event.secondary.as_ref()) {
        r.api_version.hash(&mut h);
        r.kind.hash(&mut h);
        r.namespace.hash(&mut h);
        r.name.hash(&mut h);
        r.uid.hash(&mut h);
    }
    h.finish()
}

impl Recorder {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self {
            client,
            reporter,
            series: Arc::new(Mutex::new(SeriesCache::new(Instant::now()))),
        }
    }

    /// Publishes `event` about `obj`; failures are logged, never returned: an Event is
    /// information, not a step of the reconcile. Servers before 1.22 refuse an
    /// events.k8s.io/v1 Event in `default` about a cluster-scoped object
    /// ("involvedObject.namespace does not match event.namespace"); for those the reference
    /// names `default` too.
    pub async fn publish<K: Resource<DynamicType = ()>>(&self, obj: &K, event: Event) {
        use std::sync::atomic::{AtomicBool, Ordering};
        static DEFAULT_NAMESPACE_FOR_CLUSTER_SCOPED: AtomicBool = AtomicBool::new(false);
        let mut reference = obj.object_ref(&());
        if reference.namespace.is_none()
            && DEFAULT_NAMESPACE_FOR_CLUSTER_SCOPED.load(Ordering::Relaxed)
        {
            reference.namespace = Some("default".into());
        }
        match self.send(&event, &reference).await {
            Ok(()) => {}
            Err(kube::Error::Api(s))
                if reference.namespace.is_none()
                    && s.message.contains("does not match event.namespace") =>
            {
                DEFAULT_NAMESPACE_FOR_CLUSTER_SCOPED.store(true, Ordering::Relaxed);
                reference.namespace = Some("default".into());
                if let Err(e) = self.send(&event, &reference).await {
                    tracing::warn!(error = %e, reason = %event.reason, "publishing event failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, reason = %event.reason, "publishing event failed"),
        }
    }

    /// Creates the event, or patches the series of the same event published within the TTL.
    async fn send(&self, event: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let key = series_key(event, regarding);
        let now = Instant::now();
        let repeat = self.series.lock().expect("poisoned").repeat(key, now);
        let time = MicroTime(k8s_openapi::jiff::Timestamp::now());
        if let Some((namespace, name, count)) = repeat {
            let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &namespace);
            let patch = SeriesPatch {
                series: EventSeries {
                    count,
                    last_observed_time: time.clone(),
                },
            };
            let patched = api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .ok_if_not_found()?;
            if patched.is_some() {
                return Ok(());
            }
            // The first one expired on the server (its TTL is an hour by default, but it
            // can be shorter): start a new series.
        }
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let name = format!(
            "{}.{:x}",
            regarding
                .name
                .as_deref()
                .unwrap_or(&self.reporter.controller),
            time.0.as_nanosecond()
        );
        let body = K8sEvent {
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            event_time: Some(time),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            note: event.note.as_deref().map(|n| shortened(n).into_owned()),
            metadata: ObjectMeta {
                namespace: Some(namespace.to_owned()),
                name: Some(name.clone()),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            ..Default::default()
        };
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        api.create(&PostParams::default(), &body).await?;
        self.series
            .lock()
            .expect("poisoned")
            .insert(key, namespace, &name, now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(reason: &str, note: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Scale".into(),
            secondary: None,
        }
    }

    fn reference(name: &str, uid: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("nodepool.dev/v1alpha1".into()),
            kind: Some("NodePool".into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_long_note_is_cut_at_a_character_boundary_within_the_limit() {
        assert_eq!(shortened("short"), "short");
        let exact = "a".repeat(NOTE_LIMIT);
        assert_eq!(shortened(&exact), exact.as_str());
        let long = "é".repeat(NOTE_LIMIT);
        let cut = shortened(&long);
        assert!(
            cut.len() <= NOTE_LIMIT && cut.ends_with("..."),
            "{}",
            cut.len()
        );
        assert!(cut.trim_end_matches("...").chars().all(|c| c == 'é'));
        assert_eq!(cut.len(), NOTE_LIMIT - 3 - 1 + 3, "1020 bytes hold 510 é");
    }

    #[test]
    fn the_key_tells_events_and_objects_apart() {
        let a = series_key(&event("ScaledUp", "1 -> 2"), &reference("a", "1"));
        assert_eq!(
            a,
            series_key(&event("ScaledUp", "1 -> 2"), &reference("a", "1"))
        );
        assert_ne!(
            a,
            series_key(&event("ScaledUp", "2 -> 3"), &reference("a", "1"))
        );
        assert_ne!(
            a,
            series_key(&event("ScaledDown", "1 -> 2"), &reference("a", "1"))
        );
        assert_ne!(
            a,
            series_key(&event("ScaledUp", "1 -> 2"), &reference("b", "2"))
        );
        // A new object of the same name is a new series.
        assert_ne!(
            a,
            series_key(&event("ScaledUp", "1 -> 2"), &reference("a", "3"))
        );
    }

    #[test]
    fn a_repeat_within_the_ttl_counts_and_an_old_one_starts_over() {
        let t0 = Instant::now();
        let mut cache = SeriesCache::new(t0);
        assert_eq!(cache.repeat(7, t0), None);
        cache.insert(7, "default", "a.1", t0);
        let (ns, name, count) = cache.repeat(7, t0 + Duration::from_secs(1)).unwrap();
        assert_eq!((&*ns, &*name, count), ("default", "a.1", 2));
        assert_eq!(cache.repeat(7, t0 + Duration::from_secs(2)).unwrap().2, 3);
        // Six minutes after the last repeat, it is a new event.
        let later = t0 + Duration::from_secs(2) + SERIES_TTL;
        assert_eq!(cache.repeat(7, later), None);
        // And the expired entry was collected.
        assert!(cache.entries.is_empty());
    }

    #[test]
    fn expired_entries_are_collected_at_most_once_a_minute() {
        let t0 = Instant::now();
        let mut cache = SeriesCache::new(t0);
        cache.insert(1, "default", "a.1", t0);
        cache.insert(2, "default", "b.1", t0 + SERIES_TTL);
        cache.expire(t0 + SERIES_TTL + Duration::from_secs(1));
        assert_eq!(cache.entries.len(), 1, "entry 1 expired, entry 2 lives");
        cache.insert(3, "default", "c.1", t0);
        cache.expire(t0 + SERIES_TTL + Duration::from_secs(2));
        assert_eq!(
            cache.entries.len(),
            2,
            "no collection within a minute of the last"
        );
    }
}
