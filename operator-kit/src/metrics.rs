//! Prometheus metrics every write and reconcile records, served on `/metrics`.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of a write to a shared object.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// Plural resource name, e.g. `nodepools` or `nodepools/status`.
    pub resource: String,
    /// `lazy`, `retry` or `apply`.
    pub strategy: &'static str,
}

/// Labels of a finished write.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteResultLabels {
    pub resource: String,
    pub strategy: &'static str,
    /// `written`; `unchanged` (the object had the change) or `expected` (this writer
    /// had just written it; the cache had not shown it yet): nothing sent; `gone`; or
    /// the error class (`conflict`, `invalid`, ...).
    pub result: &'static str,
}

/// Counters of the write path: what the conflict strategies cost.
#[derive(Clone, Debug, Default)]
pub struct WriteMetrics {
    /// Writes by outcome.
    pub writes: Family<WriteResultLabels, Counter>,
    /// 409 Conflict responses received (each attempt counts).
    pub conflicts: Family<WriteLabels, Counter>,
    /// Attempts after the first one (retry strategy).
    pub retries: Family<WriteLabels, Counter>,
}

impl WriteMetrics {
    /// Writes of `resource` (e.g. `nodepools/status`) that ended with `result` so far.
    pub fn count(&self, resource: &str, strategy: &'static str, result: &'static str) -> u64 {
        self.writes
            .get(&WriteResultLabels {
                resource: resource.to_owned(),
                strategy,
                result,
            })
            .map_or(0, |c| c.get())
    }

    /// Registers the counters in `registry` (whose prefix names the operator).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "writes",
            "Writes to shared objects by resource, conflict strategy and result",
            self.writes.clone(),
        );
        registry.register(
            "conflicts",
            "409 Conflict responses by resource and conflict strategy",
            self.conflicts.clone(),
        );
        registry.register(
            "write_retries",
            "Write attempts after a conflict (retry strategy), by resource",
            self.retries.clone(),
        );
    }
}

/// Labels of one reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    /// `ok` or an error category.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

/// Labels of a watch event that a predicate dropped.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkippedEventLabels {
    pub controller: &'static str,
    /// Kind of the watched object, e.g. `Node`.
    pub kind: &'static str,
}

/// What the reconcilers do and cost.
#[derive(Clone, Debug)]
pub struct ReconcileMetrics {
    pub reconciles: Family<ReconcileLabels, Counter>,
    /// Reconciles running now.
    pub in_flight: Family<ControllerLabels, Gauge>,
    pub duration: Family<ControllerLabels, Histogram>,
    pub skipped_events: Family<SkippedEventLabels, Counter>,
}

impl Default for ReconcileMetrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            in_flight: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
            skipped_events: Family::default(),
        }
    }
}

impl ReconcileMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "reconciles",
            "Reconciles by controller and result",
            self.reconciles.clone(),
        );
        registry.register(
            "reconciles_in_flight",
            "Reconciles running now, by controller",
            self.in_flight.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took, by controller",
            self.duration.clone(),
        );
        registry.register(
            "watch_events_skipped",
            "Watch events a predicate dropped because nothing a reconcile reads changed",
            self.skipped_events.clone(),
        );
    }

    /// Runs one reconcile of `controller`: counted in flight while it runs, then by
    /// result (`ok` or `category` of its error) with its duration.
    pub async fn measure<T, E>(
        &self,
        controller: &'static str,
        reconcile: impl std::future::Future<Output = Result<T, E>>,
        category: impl Fn(&E) -> &'static str,
    ) -> Result<T, E> {
        let in_flight = self
            .in_flight
            .get_or_create(&ControllerLabels { controller })
            .clone();
        in_flight.inc();
        let started = std::time::Instant::now();
        let result = reconcile.await;
        in_flight.dec();
        let label = match &result {
            Ok(_) => "ok",
            Err(e) => category(e),
        };
        self.observe(controller, label, started.elapsed().as_secs_f64());
        result
    }

    /// Records a finished reconcile.
    pub fn observe(&self, controller: &'static str, result: &'static str, seconds: f64) {
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
        self.duration
            .get_or_create(&ControllerLabels { controller })
            .observe(seconds);
    }

    /// Counts a watch event of `kind` that a predicate of `controller` dropped.
    pub fn skip_event(&self, controller: &'static str, kind: &'static str) {
        self.skipped_events
            .get_or_create(&SkippedEventLabels { controller, kind })
            .inc();
    }

    /// Watch events of `kind` that a predicate of `controller` dropped so far: proof that
    /// the controller saw a change and chose not to reconcile it.
    pub fn skipped(&self, controller: &'static str, kind: &'static str) -> u64 {
        self.skipped_events
            .get_or_create(&SkippedEventLabels { controller, kind })
            .get()
    }

    /// Reconciles of `controller` that ended with `result` so far.
    pub fn count(&self, controller: &'static str, result: &'static str) -> u64 {
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .get()
    }
}

/// Drives a controller's result stream to its end (the controller's shutdown). Failed
/// reconciles are counted by [`ReconcileMetrics::measure`] and logged by the error policy;
/// here they are only traced.
pub async fn run_to_end<S, T, E>(results: S, controller: &'static str)
where
    S: futures::Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
    use futures::StreamExt;
    results
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(controller, error = %e, "reconcile failed");
            }
        })
        .await;
}

/// All metrics of one operator, and the registry `/metrics` serves them from.
pub struct OperatorMetrics {
    pub registry: Registry,
    pub writes: std::sync::Arc<WriteMetrics>,
    pub reconciles: std::sync::Arc<ReconcileMetrics>,
    pub observe: std::sync::Arc<crate::observe::ObserveMetrics>,
    /// 1 while this process leads: it holds the leader Lease, or runs without election.
    pub leader: prometheus_client::metrics::gauge::Gauge,
}

/// The metrics of one operator, named `<prefix>_...`.
pub fn operator_metrics(prefix: &str) -> OperatorMetrics {
    let mut registry = Registry::with_prefix(prefix);
    let writes = std::sync::Arc::new(WriteMetrics::default());
    let reconciles = std::sync::Arc::new(ReconcileMetrics::default());
    let observe = std::sync::Arc::new(crate::observe::ObserveMetrics::default());
    writes.register(&mut registry);
    reconciles.register(&mut registry);
    observe.register(&mut registry);
    let leader = prometheus_client::metrics::gauge::Gauge::default();
    registry.register(
        "leader",
        "1 while this process leads (holds the leader Lease, or runs without election)",
        leader.clone(),
    );
    OperatorMetrics {
        registry,
        writes,
        reconciles,
        observe,
        leader,
    }
}
