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
//! reconcile that runs before the cache shows that write does not send it again
//! (`expectations`). How each strategy sends is in `send`.
use std::fmt::Debug;
use std::sync::Arc;

use kube::api::Api;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::backoff::Backoff;
use crate::errors::{ErrorClass, classify};
use crate::metrics::{WriteLabels, WriteMetrics, WriteResultLabels};

mod expectations;
mod send;

/// Where one write goes, and who sends it.
struct Destination<'a> {
    /// `nodepools` or `nodepools/status`.
    resource: String,
    name: String,
    manager: &'a str,
}

impl Destination<'_> {
    fn fail(&self, writer: &Writer, attempts: u32, source: kube::Error) -> WriteError {
        WriteError {
            resource: self.resource.clone(),
            name: self.name.clone(),
            strategy: writer.strategy.name(),
            attempts,
            source,
        }
    }
}

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
            body: serde_json::to_value(crate::patch::StatusPatch { status })
                .expect("a change is JSON"),
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
    expectations: Arc<expectations::Expectations>,
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
        let to = Destination {
            resource: resource_label::<K>(change.target),
            name: cached.name_any(),
            manager: change.field_manager.unwrap_or(&self.field_manager),
        };
        // By object, not by manager: the reconcile after the one that scaled sends the main
        // manager's fields, a subset of what the scaling record's write just sent.
        let key = format!(
            "{}/{}/{}",
            to.resource,
            cached.namespace().unwrap_or_default(),
            to.name
        );
        if let Some(result) = self
            .unneeded(cached, change, &key)
            .map_err(|e| to.fail(self, 0, e))?
        {
            self.count_result(&to.resource, result);
            return Ok(WriteOutcome::Unchanged);
        }
        tracing::debug!(
            resource = to.resource,
            name = to.name,
            field_manager = to.manager,
            strategy = self.strategy.name(),
            cached_resource_version = cached.meta().resource_version.as_deref().unwrap_or(""),
            body = %change.body,
            "writing"
        );
        let result = match self.strategy {
            ConflictStrategy::Lazy => self.lazy(api, cached, change, &to).await,
            ConflictStrategy::Retry(backoff) => {
                self.retry_on_conflict(api, cached, change, &to, backoff)
                    .await
            }
            ConflictStrategy::Apply => self.apply(api, cached, change, &to).await,
        };
        let result = result.map_err(|(attempts, e)| to.fail(self, attempts, e));
        match &result {
            Ok(WriteOutcome::Written { object, .. }) => {
                self.expectations
                    .remember(key, object.resource_version(), &change.body);
                self.count_result(&to.resource, "written")
            }
            Ok(WriteOutcome::Unchanged) => self.count_result(&to.resource, "unchanged"),
            Ok(WriteOutcome::Gone) => self.count_result(&to.resource, "gone"),
            Err(e) => self.count_result(&to.resource, e.class().as_str()),
        }
        result
    }

    /// Why `change` need not be sent to `cached`, if it need not: the cached copy has it
    /// (`unchanged`), or this writer's own last write, which the cache does not show yet,
    /// said it all (`expected`). Compare before writing: a no-op write still costs the API
    /// server a request, a new resourceVersion, and a watch event to every watcher. With
    /// a pending write the cached copy may already look right and still be stale: then it
    /// is written anyway (a PUT from that stale copy meets the 409 it deserves).
    fn unneeded<K>(
        &self,
        cached: &K,
        change: &Change,
        key: &str,
    ) -> Result<Option<&'static str>, kube::Error>
    where
        K: Resource + Serialize + DeserializeOwned,
    {
        let pending = self
            .expectations
            .pending(key, cached.meta().resource_version.as_deref());
        let has_it = change
            .merged_into(cached)
            .map_err(kube::Error::SerdeError)?
            .is_none();
        Ok(match pending {
            Some(last) if expectations::covered(&change.body, &last) => Some("expected"),
            None if has_it => Some("unchanged"),
            _ => None,
        })
    }

    fn labels(&self, resource: &str) -> WriteLabels {
        WriteLabels {
            resource: resource.to_owned(),
            strategy: self.strategy.name(),
        }
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

fn resource_label<K: Resource<DynamicType = ()>>(target: Target) -> String {
    let plural = K::plural(&());
    match target {
        Target::Main => plural.into_owned(),
        Target::Status => format!("{plural}/status"),
    }
}

#[cfg(test)]
mod tests {
    use super::send::apply_body;
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
