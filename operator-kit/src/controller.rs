//! One way to run a controller. A controller supplies its [`Reconciler`] (the reconcile
//! and its error type) and its triggers; [`Runner`] does the rest the same way for every
//! controller of both operators:
//! - each trigger passes a predicate first ([`changed_or_deleted`]): an event goes on only
//!   when the part of the object the reconcile reads changed, and each one dropped is
//!   counted (`watch_events_skipped_total`);
//! - kube-runtime's `Controller` on the shared caches, with the configured concurrency,
//!   stopping on SIGTERM or Ctrl-C;
//! - each reconcile measured (`reconciles_total` by result, its duration, in flight);
//! - a failed reconcile requeued after a per-object delay (5 ms doubling to 1000 s, forgotten
//!   on success: [`ErrorBackoff`]), and logged by what its error is: an error the design
//!   expects (a lazy write's 409) at debug while it does not repeat, any other at warn.
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Resource;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::ObjectRef;
use serde::de::DeserializeOwned;

use crate::backoff::ErrorBackoff;
use crate::metrics::ReconcileMetrics;
use crate::watch::{Cache, changed_or_deleted};

/// What a reconcile's error tells the runner.
pub trait ReconcileError: std::error::Error + Send + Sync + 'static {
    /// A bounded label for metrics (`reconciles_total{result=...}`).
    fn category(&self) -> &'static str;

    /// Whether the design expects this error now and then and the requeue is the cure (a
    /// 409 under the lazy strategy, a cache behind the operator's own create). It is logged
    /// at debug while its object's delay is short, at warn once it keeps coming back.
    fn is_expected(&self) -> bool {
        false
    }
}

/// One controller's reconcile.
pub trait Reconciler: Send + Sync + 'static {
    /// The kind reconciled.
    type Object: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static;
    type Error: ReconcileError;
    /// The controller's name in metrics and logs.
    const NAME: &'static str;

    /// Brings one object's world to what its spec asks, reading caches only.
    fn reconcile(
        &self,
        object: Arc<Self::Object>,
    ) -> impl Future<Output = Result<Action, Self::Error>> + Send;
}

/// What every controller of a process shares.
#[derive(Clone, Debug)]
pub struct RunnerSettings {
    pub metrics: Arc<ReconcileMetrics>,
    /// Reconciles running at once (0: unbounded).
    pub concurrency: u16,
}

struct State<R> {
    reconciler: R,
    metrics: Arc<ReconcileMetrics>,
    backoff: ErrorBackoff,
}

/// A controller being put together: its reconciler, the cache of its kind and the caches
/// whose changes map to objects of its kind.
pub struct Runner<R: Reconciler> {
    controller: Controller<R::Object>,
    state: Arc<State<R>>,
}

/// How long an expected error stays at debug: after about eight failures in a row of one
/// object, it is worth a warning.
const QUIET_WHILE: Duration = Duration::from_secs(1);

impl<R: Reconciler> Runner<R> {
    /// A controller of `objects`, triggered when `inputs` of an object changes (or it goes).
    pub fn new(
        reconciler: R,
        objects: &Cache<R::Object>,
        inputs: impl Fn(&R::Object) -> u64 + Send + 'static,
        settings: &RunnerSettings,
    ) -> Self {
        let trigger = changed_or_deleted(
            objects.subscribe(),
            inputs,
            skip_counter::<R::Object>(R::NAME, &settings.metrics),
        );
        let controller = Controller::for_stream(trigger, objects.store().clone())
            .with_config(ControllerConfig::default().concurrency(settings.concurrency));
        Self {
            controller,
            state: Arc::new(State {
                reconciler,
                metrics: settings.metrics.clone(),
                backoff: ErrorBackoff::default(),
            }),
        }
    }

    /// Also reconciles the objects `map` names when `inputs` of an object of `related`
    /// changes (or it goes).
    pub fn watches<O, I>(
        mut self,
        related: &Cache<O>,
        inputs: impl Fn(&O) -> u64 + Send + 'static,
        map: impl Fn(O) -> I + Send + Sync + 'static,
    ) -> Self
    where
        O: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
        I: IntoIterator<Item = ObjectRef<R::Object>> + 'static,
        I::IntoIter: Send,
    {
        let trigger = changed_or_deleted(
            related.subscribe(),
            inputs,
            skip_counter::<O>(R::NAME, &self.state.metrics),
        );
        self.controller = self.controller.watches_stream(trigger, map);
        self
    }

    /// Runs the controller until SIGTERM or Ctrl-C.
    pub async fn run(self) {
        let results =
            self.controller
                .shutdown_on_signal()
                .run(reconcile::<R>, error_policy::<R>, self.state);
        crate::metrics::run_to_end(results, R::NAME).await;
    }
}

fn skip_counter<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    metrics: &Arc<ReconcileMetrics>,
) -> impl Fn() + Send + 'static {
    let (metrics, kind) = (metrics.clone(), crate::watch::kind_of::<K>());
    move || metrics.skip_event(controller, kind)
}

fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    ObjectRef::from_obj(object).to_string()
}

async fn reconcile<R: Reconciler>(
    object: Arc<R::Object>,
    state: Arc<State<R>>,
) -> Result<Action, R::Error> {
    let key = key(object.as_ref());
    let measured = state.metrics.measure(
        R::NAME,
        state.reconciler.reconcile(object),
        ReconcileError::category,
    );
    state.backoff.track(&key, measured).await
}

fn error_policy<R: Reconciler>(
    object: Arc<R::Object>,
    error: &R::Error,
    state: Arc<State<R>>,
) -> Action {
    let key = key(object.as_ref());
    let delay = state.backoff.next(&key);
    if quiet(error.is_expected(), delay) {
        tracing::debug!(controller = R::NAME, object = %key, %error, ?delay, "requeued");
    } else {
        tracing::warn!(controller = R::NAME, object = %key, %error, ?delay, "reconcile failed");
    }
    Action::requeue(delay)
}

fn quiet(expected: bool, delay: Duration) -> bool {
    expected && delay < QUIET_WHILE
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_expected_error_is_quiet_until_it_keeps_coming_back() {
        let backoff = ErrorBackoff::default();
        let quiet_failures = (0..20)
            .take_while(|_| quiet(true, backoff.next("a")))
            .count();
        // 5, 10, ... 640 ms: eight in a row, then warnings.
        assert_eq!(quiet_failures, 8);
        assert!(!quiet(false, Duration::ZERO), "other errors always warn");
    }
}
