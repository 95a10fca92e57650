//! The Autoscaler controller. Each reconcile is four phases:
//! - observe: the target pool, its nodes, the pods bound to them or waiting for them, all
//!   from the watch caches ([`observe`]);
//! - decide: autoscaler-core's HPA decision, with the stabilization history this process
//!   keeps and the changes the Autoscaler's status records (the policies count them);
//! - act: the cross-operator write, the pool's `spec.replicas` ([`act`]), after the
//!   change is recorded in the Autoscaler's status, so that a restart between the two
//!   counts it rather than forgets it;
//! - report: the Autoscaler's own status and the events it calls for ([`report`]).
//!
//! Both writes go through operator-kit's write strategy.
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use autoscaler_core::decide::{Decision, Inputs, decide};
use autoscaler_core::history::History;
use autoscaler_core::policy::{self, Direction};
use autoscaler_core::status;
use kube::Client;
use kube::runtime::controller::Action;
use operator_kit::controller::{ReconcileError, Reconciler};
use operator_kit::events::{Event as KubeEvent, EventType, Recorder};
use operator_kit::{WriteError, Writer};
use shared_crd::{Autoscaler, ScaleEvent};

use crate::caches::Caches;
use pacing::{Pacing, Turn};

mod act;
mod observe;
mod pacing;
mod report;
mod triggers;

pub use pacing::{DECISION_INTERVAL, SETTLE};
pub use triggers::runner;

/// Controller name in metrics and logs.
pub const CONTROLLER: &str = "autoscaler";

/// Behaviour knobs (from flags).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Reconcile every Autoscaler at least this often.
    pub resync: Duration,
    pub concurrency: u16,
}

pub struct Context {
    pub client: Client,
    pub writer: Writer,
    pub recorder: Recorder,
    pub caches: Caches,
    pub settings: Settings,
    /// Past recommendations for the stabilization windows (see [`History`]).
    history: Mutex<History>,
    /// The list of changes this process last wrote, by Autoscaler uid: the server has it,
    /// the cache may not show it yet (the later of the two counts).
    recorded: Mutex<HashMap<String, Vec<ScaleEvent>>>,
    /// When each Autoscaler may be decided next ([`pacing`]). Lost on a restart, which
    /// only lets the first decision come sooner.
    pacing: Mutex<Pacing>,
    started: Instant,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),
    #[error("writing NodePool {pool} spec.replicas: {source}")]
    ScaleWriteFailed {
        pool: String,
        #[source]
        source: WriteError,
    },
    #[error("writing Autoscaler status: {0}")]
    StatusWriteFailed(#[source] WriteError),
}

impl ReconcileError for Error {
    fn category(&self) -> &'static str {
        match self {
            Error::MissingObjectKey(_) => "missing_key",
            Error::ScaleWriteFailed { source, .. } | Error::StatusWriteFailed(source)
                if source.is_conflict() =>
            {
                "conflict"
            }
            Error::ScaleWriteFailed { .. } => "scale_write",
            Error::StatusWriteFailed(_) => "status_write",
        }
    }

    /// A conflict is the lazy strategy's way out: the whole reconcile runs again.
    fn is_expected(&self) -> bool {
        match self {
            Error::ScaleWriteFailed { source, .. } | Error::StatusWriteFailed(source) => {
                source.is_conflict()
            }
            Error::MissingObjectKey(_) => false,
        }
    }
}

impl Reconciler for Context {
    type Object = Autoscaler;
    type Error = Error;
    const NAME: &'static str = CONTROLLER;

    async fn reconcile(&self, a: Arc<Autoscaler>) -> Result<Action, Error> {
        reconcile_autoscaler(&a, self).await
    }
}

async fn reconcile_autoscaler(a: &Autoscaler, ctx: &Context) -> Result<Action, Error> {
    let uid = a
        .metadata
        .uid
        .as_deref()
        .ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let started = Instant::now();
    if let Turn::Wait(wait) = ctx.pacing().turn(uid, started) {
        // The events until then join the decision it waits for.
        return Ok(Action::requeue(wait));
    }
    let observed = match observe::observe(a, &ctx.caches) {
        Ok(observed) => observed,
        Err(why) => {
            // Nothing to do until the Autoscaler, its pool or the other claim changes.
            report::blocked(a, ctx, &why).await?;
            return Ok(Action::await_change());
        }
    };
    let decision = ctx.decide(uid, a, &observed);
    let current = observed.pool.spec.replicas;
    let unfit = &observed.demand.unfit;
    if decision.desired != current {
        // Recorded first, made second: a restart in between counts a change not made,
        // which only ever holds the next one back.
        if !status::records(a, &ctx.remembered(uid), current, decision.desired) {
            let keep = policy::longest_period(&a.spec.behavior);
            let events = status::with_change(
                a,
                &ctx.remembered(uid),
                current,
                decision.desired,
                status::recorded_at(k8s_openapi::jiff::Timestamp::now()),
                keep,
            );
            report::decided(a, ctx, &decision, unfit, Some(events.clone())).await?;
            // Only once the server has it: a change remembered here is never one that a
            // restart would not read back.
            ctx.remember(uid, &events);
        }
        act::scale(a, ctx, &observed.pool, &decision).await?;
    } else {
        report::decided(a, ctx, &decision, unfit, None).await?;
    }
    // Only a decision whose writes were made holds the next one back: a failed write (a
    // 409 with the lazy strategy) is decided again at once.
    ctx.pacing().decided(uid, started);
    let requeue = decision
        .recheck_in_seconds
        .map(|s| Duration::from_secs(s.max(1) as u64))
        .unwrap_or(ctx.settings.resync)
        .min(ctx.settings.resync);
    Ok(Action::requeue(requeue))
}

impl Context {
    pub fn new(
        client: Client,
        writer: Writer,
        recorder: Recorder,
        caches: Caches,
        settings: Settings,
    ) -> Self {
        Self {
            client,
            writer,
            recorder,
            caches,
            settings,
            history: Mutex::default(),
            recorded: Mutex::default(),
            pacing: Mutex::default(),
            started: Instant::now(),
        }
    }

    /// The decision for `a` (uid `uid`) on what was observed, and the recommendation kept
    /// for the next one's stabilization windows.
    fn decide(&self, uid: &str, a: &Autoscaler, observed: &observe::Observed) -> Decision {
        let now = self.clock();
        let current = observed.pool.spec.replicas;
        let behavior = &a.spec.behavior;
        let keep = policy::resolve(&behavior.scale_up, Direction::Up)
            .window_seconds
            .max(policy::resolve(&behavior.scale_down, Direction::Down).window_seconds);
        let mut history = self.history.lock().expect("not poisoned");
        // The pace of an Autoscaler that never got to decide (blocked) is kept too.
        let known = self.caches.autoscalers.len();
        if history.len() > known || self.pacing().len() > known {
            let live: HashSet<String> = self
                .caches
                .autoscalers
                .state()
                .iter()
                .filter_map(|a| a.metadata.uid.clone())
                .collect();
            history.retain(&live);
            self.recorded
                .lock()
                .expect("not poisoned")
                .retain(|uid, _| live.contains(uid));
            self.pacing().retain(&live);
        }
        let past = history.recommendations(uid, keep, current, now);
        let changes = status::changes(a, &self.remembered(uid));
        let decision = decide(&Inputs {
            spec: &a.spec,
            demand: &observed.demand,
            capacity: observed.capacity,
            current,
            pool_at_quota: observed.at_quota,
            history: &past,
            now,
            changes: &changes,
            wall_now: k8s_openapi::jiff::Timestamp::now().as_second(),
        });
        history.record(uid, now, decision.recommendation);
        decision
    }

    fn pacing(&self) -> std::sync::MutexGuard<'_, Pacing> {
        self.pacing.lock().expect("not poisoned")
    }

    /// The changes this process recorded for `uid`.
    fn remembered(&self, uid: &str) -> Vec<ScaleEvent> {
        let recorded = self.recorded.lock().expect("not poisoned");
        recorded.get(uid).cloned().unwrap_or_default()
    }

    /// Keeps the list of changes just written for `uid` until the cache shows it.
    fn remember(&self, uid: &str, events: &[ScaleEvent]) {
        let mut recorded = self.recorded.lock().expect("not poisoned");
        recorded.insert(uid.to_owned(), events.to_vec());
    }

    async fn publish(&self, a: &Autoscaler, type_: EventType, reason: &str, note: String) {
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Scale".into(),
            secondary: None,
        };
        self.recorder.publish(a, event).await;
    }

    /// Seconds since this process started: the clock of the stabilization windows.
    fn clock(&self) -> i64 {
        self.started.elapsed().as_secs() as i64
    }
}
