//! How an operator writes to an object that another operator writes too.
//!
//! Three strategies, chosen by `--conflict-strategy`:
//! - [`ConflictStrategy::Lazy`]: PUT the change under the cached copy's `resourceVersion`;
//!   a 409 goes back to the controller, which requeues and runs the whole reconcile again.
//! - [`ConflictStrategy::Retry`]: client-go's `retry.RetryOnConflict`: on 409 re-read the
//!   object from the API server, re-apply the same change, PUT again, with backoff.
//! - [`ConflictStrategy::Apply`]: server-side apply with the operator's field manager,
//!   sending only the fields it owns: no `resourceVersion`, so no optimistic-lock conflict.
//!
//! **A PUT is built from the object as the server holds it, never from the cache.** A PUT
//! replaces the whole object, and a reflector cache may be trimmed to what reconciles
//! read (no `managedFields`, no `kubectl.kubernetes.io/last-applied-configuration`, no
//! conditions of another operator's): a PUT of the cached copy would delete all of that.
//! So every PUT first GETs the object, makes the change on that copy, and sends it under
//! the `resourceVersion` the decision was made from: the cached copy's on the first
//! attempt (a stale cache still meets the 409 it deserves; that is the lesson of `lazy`),
//! the fresh read's on a retry. The GET is what the PUT strategies cost beyond apply:
//! one read per attempt, counted in the request metrics (`verb="get"`).
//!
//! Every strategy compares before writing: a change the object already has sends nothing.
//! A change is one body, the fields the operator owns; the PUT strategies and the
//! comparison derive their edit from that body ([`crate::merge`]), so they cannot drift
//! from what apply sends. And a writer remembers what it wrote for a few seconds, so a
//! reconcile that runs before the cache shows that write does not send it again (the
//! "expectations" of controller-runtime's ReplicaSet controller): memory that only saves
//! requests; a restart that loses it costs at most one repeated write.
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::backoff::Backoff;
use crate::errors::{ErrorClass, classify};
use crate::metrics::{WriteLabels, WriteMetrics, WriteResultLabels};

/// How conflicting writes are handled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ConflictStrategy {
    /// Return the 409 to the controller (it requeues).
    Lazy,
    /// Re-read, re-apply and retry with this backoff.
    Retry(Backoff),
    /// Server-side apply with one field manager per operator.
    Apply,
}

impl ConflictStrategy {
    /// `lazy`, `retry` or `apply`.
    pub fn name(&self) -> &'static str {
        match self {
            ConflictStrategy::Lazy => "lazy",
            ConflictStrategy::Retry(_) => "retry",
            ConflictStrategy::Apply => "apply",
        }
    }
}

/// Which part of the object a change goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The object itself (`spec`, `metadata`).
    Main,
    /// The `status` subresource.
    Status,
}

/// A change one operator wants on one object: the fields it owns, with their values.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub target: Target,
    /// A partial object without `apiVersion`, `kind` and `metadata.name` (added for
    /// apply), e.g. `{"status": {...}}`. Leave out what the operator does not own.
    pub body: Value,
    /// The field manager, when not the writer's own (a record kept by a second manager).
    pub field_manager: Option<&'static str>,
}

impl Change {
    /// A change of the status subresource to `status` (serialised; `None` fields left out).
    pub fn status(status: &impl Serialize) -> Self {
        Self {
            target: Target::Status,
            body: serde_json::json!({ "status": status }),
            field_manager: None,
        }
    }

    /// A change of the object itself to `body`, a partial object such as
    /// `{"spec": {"replicas": 3}}` (serialised; `None` fields left out).
    pub fn main(body: &impl Serialize) -> Self {
        Self {
            target: Target::Main,
            body: serde_json::to_value(body).expect("a change is JSON"),
            field_manager: None,
        }
    }

    /// The same change under another field manager.
    pub fn with_field_manager(mut self, field_manager: &'static str) -> Self {
        self.field_manager = Some(field_manager);
        self
    }

    /// `object` with this change made, or `None` when it already has it.
    pub fn merged_into<K: Serialize + DeserializeOwned>(
        &self,
        object: &K,
    ) -> Result<Option<K>, serde_json::Error> {
        let mut value = serde_json::to_value(object)?;
        if !crate::merge::merge(&mut value, &self.body) {
            return Ok(None);
        }
        serde_json::from_value(value).map(Some)
    }
}

/// How long a write is remembered while the cache has not shown it yet.
const EXPECTATION_TTL: Duration = Duration::from_secs(10);
/// Keys a repeated write is compared without: a transition time recomputed against a
/// stale copy is not news.
const EXPECTATION_IGNORES: [&str; 1] = ["lastTransitionTime"];

#[derive(Debug)]
struct Expectation {
    resource_version: Option<String>,
    body: Value,
    at: Instant,
}

/// A write that completed.
#[derive(Debug)]
pub enum WriteOutcome<K> {
    /// The object already had the change; nothing was sent.
    Unchanged,
    /// The change was written in `attempts` requests; `object` is what the server returned.
    Written { object: Box<K>, attempts: u32 },
    /// The object no longer exists (retry strategy re-read it as NotFound).
    Gone,
}

impl<K> WriteOutcome<K> {
    pub fn is_written(&self) -> bool {
        matches!(self, WriteOutcome::Written { .. })
    }
}

/// A write that failed; for a conflict after the last retry, `source` is that last 409.
#[derive(Debug, thiserror::Error)]
#[error("writing {resource} {name} ({strategy}, {attempts} attempts): {source}")]
pub struct WriteError {
    pub resource: String,
    pub name: String,
    pub strategy: &'static str,
    pub attempts: u32,
    #[source]
    pub source: kube::Error,
}

impl WriteError {
    pub fn class(&self) -> ErrorClass {
        classify(&self.source)
    }
    pub fn is_conflict(&self) -> bool {
        self.class() == ErrorClass::Conflict
    }
}

/// Writes changes with one strategy and one field manager, counting what it does.
#[derive(Clone, Debug)]
pub struct Writer {
    strategy: ConflictStrategy,
    field_manager: String,
    metrics: Option<Arc<WriteMetrics>>,
    /// This writer's recent writes by object, until the cache shows them.
    expectations: Arc<Mutex<HashMap<String, Expectation>>>,
}

impl Writer {
    pub fn new(strategy: ConflictStrategy, field_manager: impl Into<String>) -> Self {
        Self {
            strategy,
            field_manager: field_manager.into(),
            metrics: None,
            expectations: Arc::default(),
        }
    }

    pub fn with_metrics(mut self, metrics: Arc<WriteMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn strategy(&self) -> ConflictStrategy {
        self.strategy
    }

    /// Writes `change` to the object `cached` (a copy from the reflector cache).
    pub async fn write<K>(
        &self,
        api: &Api<K>,
        cached: &K,
        change: &Change,
    ) -> Result<WriteOutcome<K>, WriteError>
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
    {
        let resource = resource_label::<K>(change.target);
        let name = cached.name_any();
        let manager = change.field_manager.unwrap_or(&self.field_manager);
        let fail = |attempts: u32, source: kube::Error| WriteError {
            resource: resource.clone(),
            name: name.clone(),
            strategy: self.strategy.name(),
            attempts,
            source,
        };

        // Compare before writing: a no-op write still costs the API server a request,
        // a new resourceVersion, and a watch event to every watcher.
        // By object, not by manager: the reconcile after the one that scaled sends the main
        // manager's fields, a subset of what the scaling record's write just sent.
        let key = format!(
            "{resource}/{}/{name}",
            cached.namespace().unwrap_or_default()
        );
        // Our own last write to this object, when the cache does not show it yet: then the
        // cache cannot say "unchanged", and a change within that write is no news.
        let pending = self.pending_write(&key, cached);
        let desired = match change.merged_into(cached) {
            Ok(desired) => desired,
            Err(e) => return Err(fail(0, kube::Error::SerdeError(e))),
        };
        match (&desired, &pending) {
            (_, Some(last))
                if crate::merge::is_within(&change.body, last, &EXPECTATION_IGNORES) =>
            {
                self.count_result(&resource, "expected");
                return Ok(WriteOutcome::Unchanged);
            }
            (None, None) => {
                self.count_result(&resource, "unchanged");
                return Ok(WriteOutcome::Unchanged);
            }
            _ => {}
        }
        // With a pending write the cached copy may already look right and still be stale:
        // write anyway (a PUT of that stale copy meets the 409 it deserves).
        let desired = desired.unwrap_or_else(|| cached.clone());
        tracing::debug!(
            resource,
            name,
            field_manager = manager,
            strategy = self.strategy.name(),
            cached_resource_version = cached.meta().resource_version.as_deref().unwrap_or(""),
            body = %change.body,
            "writing"
        );
        let result = match self.strategy {
            ConflictStrategy::Lazy => {
                let precondition = cached.resource_version();
                match self
                    .put_change(api, &name, change, manager, precondition)
                    .await
                {
                    Ok(object) => Ok(WriteOutcome::Written {
                        object: Box::new(object),
                        attempts: 1,
                    }),
                    Err(PutError::Unchanged) => Ok(WriteOutcome::Unchanged),
                    Err(PutError::Api(e)) => {
                        self.on_error(&resource, &name, &desired, 1, "requeue", &e);
                        Err(fail(1, e))
                    }
                }
            }
            ConflictStrategy::Retry(backoff) => self
                .retry_on_conflict(api, cached, change, manager, backoff, &resource)
                .await
                .map_err(|(attempts, e)| fail(attempts, e)),
            ConflictStrategy::Apply => {
                let body = apply_body::<K>(&name, &change.body);
                let params = PatchParams::apply(manager).force();
                let sent = match change.target {
                    Target::Main => api.patch(&name, &params, &Patch::Apply(&body)).await,
                    Target::Status => api.patch_status(&name, &params, &Patch::Apply(&body)).await,
                };
                match sent {
                    Ok(object) => Ok(WriteOutcome::Written {
                        object: Box::new(object),
                        attempts: 1,
                    }),
                    Err(e) => {
                        self.on_error(&resource, &name, &desired, 1, "none", &e);
                        Err(fail(1, e))
                    }
                }
            }
        };
        match &result {
            Ok(WriteOutcome::Written { object, .. }) => {
                self.remember(key, object.resource_version(), &change.body);
                self.count_result(&resource, "written")
            }
            Ok(WriteOutcome::Unchanged) => self.count_result(&resource, "unchanged"),
            Ok(WriteOutcome::Gone) => self.count_result(&resource, "gone"),
            Err(e) => self.count_result(&resource, e.class().as_str()),
        }
        result
    }

    /// The body this writer last wrote to the object, while the cached copy does not
    /// show that write yet (and for [`EXPECTATION_TTL`] at most).
    fn pending_write<K: Resource>(&self, key: &str, cached: &K) -> Option<Value> {
        let mut expectations = self.expectations.lock().expect("not poisoned");
        let e = expectations.get(key)?;
        let caught_up = e.resource_version.is_some()
            && e.resource_version.as_deref() == cached.meta().resource_version.as_deref();
        if caught_up || e.at.elapsed() > EXPECTATION_TTL {
            expectations.remove(key);
            return None;
        }
        Some(e.body.clone())
    }

    fn remember(&self, key: String, resource_version: Option<String>, body: &Value) {
        let mut expectations = self.expectations.lock().expect("not poisoned");
        if expectations.len() >= 1024 {
            expectations.retain(|_, e| e.at.elapsed() <= EXPECTATION_TTL);
        }
        expectations.insert(
            key,
            Expectation {
                resource_version,
                body: body.clone(),
                at: Instant::now(),
            },
        );
    }

    /// client-go's `RetryOnConflict`: the first attempt writes the change under the cached
    /// copy's resourceVersion; each 409 is followed by a backoff sleep and the same change
    /// on a fresh read from the API server (not the cache). NotFound ends cleanly; any
    /// other error returns at once; when the steps run out, the last 409 is returned.
    async fn retry_on_conflict<K>(
        &self,
        api: &Api<K>,
        cached: &K,
        change: &Change,
        manager: &str,
        mut backoff: Backoff,
        resource: &str,
    ) -> Result<WriteOutcome<K>, (u32, kube::Error)>
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
    {
        let name = cached.name_any();
        let mut attempts = 0;
        let mut last_conflict = None;
        while backoff.steps > 0 {
            let precondition = if attempts == 0 {
                cached.resource_version()
            } else {
                self.count_retry(resource);
                None
            };
            attempts += 1;
            match self
                .put_change(api, &name, change, manager, precondition)
                .await
            {
                Ok(object) => {
                    return Ok(WriteOutcome::Written {
                        object: Box::new(object),
                        attempts,
                    });
                }
                Err(PutError::Unchanged) => return Ok(WriteOutcome::Unchanged),
                Err(PutError::Api(e)) => match classify(&e) {
                    ErrorClass::Conflict => {
                        let next = if backoff.steps > 1 {
                            "reread_and_retry"
                        } else {
                            "give_up"
                        };
                        let sent = cached.resource_version().filter(|_| attempts == 1);
                        self.log_conflict(resource, &name, sent.as_deref(), attempts, next, &e);
                        last_conflict = Some(e);
                    }
                    ErrorClass::NotFound => return Ok(WriteOutcome::Gone),
                    _ => return Err((attempts, e)),
                },
            }
            if backoff.steps == 1 {
                break;
            }
            tokio::time::sleep(backoff.step()).await;
        }
        Err((
            attempts,
            last_conflict.expect("the loop runs at least once and ends on a conflict"),
        ))
    }

    /// One optimistic PUT of `change`: the object read whole from the API server (the
    /// cache may be trimmed: see the module documentation), the change made on that copy,
    /// sent under `precondition` (the resourceVersion the decision was made from) or, with
    /// none, under the fresh read's own.
    async fn put_change<K>(
        &self,
        api: &Api<K>,
        name: &str,
        change: &Change,
        manager: &str,
        precondition: Option<String>,
    ) -> Result<K, PutError>
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
    {
        let live = api.get(name).await?;
        let changed = change.merged_into(&live).map_err(kube::Error::SerdeError)?;
        let mut body = match (changed, &precondition) {
            (Some(changed), _) => changed,
            // The decision's copy is stale and the server has the change already: the PUT
            // still goes, under the stale resourceVersion, and earns its 409.
            (None, Some(_)) => live,
            // Read fresh, and someone else made the same change meanwhile.
            (None, None) => return Err(PutError::Unchanged),
        };
        if precondition.is_some() {
            body.meta_mut().resource_version = precondition;
        }
        let params = PostParams {
            dry_run: false,
            field_manager: Some(manager.to_owned()),
        };
        let sent = match change.target {
            Target::Main => api.replace(name, &params, &body).await,
            Target::Status => api.replace_status(name, &params, &body).await,
        };
        Ok(sent?)
    }

    fn labels(&self, resource: &str) -> WriteLabels {
        WriteLabels {
            resource: resource.to_owned(),
            strategy: self.strategy.name(),
        }
    }

    /// Counts and logs a 409 of a write made from `sent` (the copy the write was built
    /// from), with what happens next (`requeue`, `none`).
    fn on_error<K: Resource>(
        &self,
        resource: &str,
        name: &str,
        sent: &K,
        attempt: u32,
        next: &'static str,
        e: &kube::Error,
    ) {
        let read = sent.meta().resource_version.as_deref();
        self.log_conflict(resource, name, read, attempt, next, e);
    }

    /// Counts and logs a 409: which object, from which resourceVersion the write was
    /// made (none: a fresh read's), and what happens next (`requeue`,
    /// `reread_and_retry`, `give_up`).
    fn log_conflict(
        &self,
        resource: &str,
        name: &str,
        read_resource_version: Option<&str>,
        attempt: u32,
        next: &'static str,
        e: &kube::Error,
    ) {
        if classify(e) != ErrorClass::Conflict {
            return;
        }
        if let Some(m) = &self.metrics {
            m.conflicts.get_or_create(&self.labels(resource)).inc();
        }
        tracing::info!(
            resource,
            name,
            strategy = self.strategy.name(),
            field_manager = %self.field_manager,
            read_resource_version = read_resource_version.unwrap_or(""),
            attempt,
            next,
            "write conflict"
        );
    }

    fn count_retry(&self, resource: &str) {
        if let Some(m) = &self.metrics {
            m.retries.get_or_create(&self.labels(resource)).inc();
        }
    }

    fn count_result(&self, resource: &str, result: &'static str) {
        if let Some(m) = &self.metrics {
            m.writes
                .get_or_create(&WriteResultLabels {
                    resource: resource.to_owned(),
                    strategy: self.strategy.name(),
                    result,
                })
                .inc();
        }
    }
}

/// Why a PUT was not sent or failed.
enum PutError {
    /// A fresh read already has the change.
    Unchanged,
    Api(kube::Error),
}

impl From<kube::Error> for PutError {
    fn from(e: kube::Error) -> Self {
        PutError::Api(e)
    }
}

fn resource_label<K: Resource<DynamicType = ()>>(target: Target) -> String {
    let plural = K::plural(&());
    match target {
        Target::Main => plural.into_owned(),
        Target::Status => format!("{plural}/status"),
    }
}

/// `apply` plus the `apiVersion`, `kind` and `metadata.name` server-side apply requires.
fn apply_body<K: Resource<DynamicType = ()>>(name: &str, apply: &Value) -> Value {
    let mut body = match apply {
        Value::Object(map) => Value::Object(map.clone()),
        _ => Value::Object(Default::default()),
    };
    body["apiVersion"] = K::api_version(&()).into();
    body["kind"] = K::kind(&()).into();
    if !body["metadata"].is_object() {
        body["metadata"] = Value::Object(Default::default());
    }
    body["metadata"]["name"] = name.into();
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    #[test]
    fn apply_body_names_the_object_and_keeps_only_the_given_fields() {
        let body = apply_body::<ConfigMap>("cm", &json!({"data": {"a": "1"}}));
        assert_eq!(
            body,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1"}})
        );
    }

    #[test]
    fn resource_labels_name_the_subresource() {
        assert_eq!(resource_label::<ConfigMap>(Target::Main), "configmaps");
        assert_eq!(
            resource_label::<ConfigMap>(Target::Status),
            "configmaps/status"
        );
    }

    #[test]
    fn strategy_names_are_the_flag_values() {
        assert_eq!(ConflictStrategy::Lazy.name(), "lazy");
        assert_eq!(ConflictStrategy::Retry(Backoff::default()).name(), "retry");
        assert_eq!(ConflictStrategy::Apply.name(), "apply");
    }
}
