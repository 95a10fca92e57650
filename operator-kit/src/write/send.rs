//! How each strategy sends a change that is needed: `lazy` and `retry` PUT a copy of the
//! object read whole from the API server, `apply` sends only the change.
use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Change, Destination, Target, WriteOutcome, Writer};
use crate::backoff::Backoff;
use crate::errors::{ErrorClass, classify};

/// A failed send: how many requests it made, and the last error.
type Failed = (u32, kube::Error);

impl Writer {
    /// One PUT under the cached copy's resourceVersion; its 409 goes back to the caller.
    pub(super) async fn lazy<K>(
        &self,
        api: &Api<K>,
        cached: &K,
        change: &Change,
        to: &Destination<'_>,
    ) -> Result<WriteOutcome<K>, Failed>
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
    {
        let sent = match self
            .put_change(api, change, to, cached.resource_version())
            .await
        {
            Err(PutError::Unchanged) => return Ok(WriteOutcome::Unchanged),
            Err(PutError::Api(e)) => Err(e),
            Ok(object) => Ok(object),
        };
        self.once(sent, cached, to, "requeue")
    }

    /// Server-side apply of the change alone, under the writer's field manager, forced:
    /// no resourceVersion, so no optimistic-lock conflict.
    pub(super) async fn apply<K>(
        &self,
        api: &Api<K>,
        cached: &K,
        change: &Change,
        to: &Destination<'_>,
    ) -> Result<WriteOutcome<K>, Failed>
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
    {
        let body = apply_body::<K>(&to.name, &change.body);
        let params = PatchParams::apply(to.manager).force();
        let sent = match change.target {
            Target::Main => api.patch(&to.name, &params, &Patch::Apply(&body)).await,
            Target::Status => {
                api.patch_status(&to.name, &params, &Patch::Apply(&body))
                    .await
            }
        };
        self.once(sent, cached, to, "none")
    }

    /// The outcome of a strategy's one request: written, or the error, whose 409 is
    /// counted and logged as a write made from `cached`, with `next` after it.
    fn once<K: Resource>(
        &self,
        sent: kube::Result<K>,
        cached: &K,
        to: &Destination<'_>,
        next: &'static str,
    ) -> Result<WriteOutcome<K>, Failed> {
        match sent {
            Ok(object) => Ok(WriteOutcome::Written {
                object: Box::new(object),
                attempts: 1,
            }),
            Err(e) => {
                let read = cached.meta().resource_version.as_deref();
                self.log_conflict(&to.resource, &to.name, read, 1, next, &e);
                Err((1, e))
            }
        }
    }

    /// client-go's `RetryOnConflict`: the first attempt writes the change under the cached
    /// copy's resourceVersion; each 409 is followed by a backoff sleep and the same change
    /// on a fresh read from the API server (not the cache). NotFound ends cleanly; any
    /// other error returns at once; when the steps run out, the last 409 is returned.
    pub(super) async fn retry_on_conflict<K>(
        &self,
        api: &Api<K>,
        cached: &K,
        change: &Change,
        to: &Destination<'_>,
        mut backoff: Backoff,
    ) -> Result<WriteOutcome<K>, Failed>
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
    {
        let mut attempts = 0;
        let mut last_conflict = None;
        while backoff.steps > 0 {
            let precondition = if attempts == 0 {
                cached.resource_version()
            } else {
                self.count_retry(&to.resource);
                None
            };
            attempts += 1;
            match self.put_change(api, change, to, precondition).await {
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
                        let read = sent.as_deref();
                        self.log_conflict(&to.resource, &to.name, read, attempts, next, &e);
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
        change: &Change,
        to: &Destination<'_>,
        precondition: Option<String>,
    ) -> Result<K, PutError>
    where
        K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
    {
        let name = to.name.as_str();
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
            field_manager: Some(to.manager.to_owned()),
        };
        let sent = match change.target {
            Target::Main => api.replace(name, &params, &body).await,
            Target::Status => api.replace_status(name, &params, &body).await,
        };
        Ok(sent?)
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

/// `apply` plus the `apiVersion`, `kind` and `metadata.name` server-side apply requires.
pub(super) fn apply_body<K: Resource<DynamicType = ()>>(name: &str, apply: &Value) -> Value {
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
