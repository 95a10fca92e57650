//! Prometheus metrics every write and reconcile records, served on `/metrics`.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
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
    /// `written`, `unchanged`, `gone`, or the error class (`conflict`, `invalid`, ...).
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
    /// Writes not sent because the object already had the change.
    pub skipped: Family<WriteLabels, Counter>,
}

impl WriteMetrics {
    /// Registers the counters under `prefix` (e.g. `nodepool_operator`).
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
        registry.register(
            "writes_skipped",
            "Writes not sent because the object already had the change",
            self.skipped.clone(),
        );
    }
}
