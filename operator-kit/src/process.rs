//! What every operator process does around its controllers: telemetry (with the
//! reconcile-trigger layer), metrics, a client that counts its requests, and one HTTP
//! port for /metrics, /healthz and /readyz while the controllers run.
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tracing_subscriber::Layer;

use crate::cli::{CommonArgs, LogArgs, RunArgs};
use crate::controller::RunnerSettings;
use crate::events::{Recorder, Reporter};
use crate::http::{self, Readiness};
use crate::metrics::{OperatorMetrics, operator_metrics};
use crate::observe::TriggerLayer;
use crate::watch::Watches;
use crate::write::{ConflictStrategy, Writer};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Who an operator is, to its process.
#[derive(Clone, Copy, Debug)]
pub struct Operator {
    /// Its name: the field manager, the leader Lease, the reporter of its events.
    pub name: &'static str,
    /// The prefix of its metrics (`<prefix>_reconciles_total`).
    pub metrics_prefix: &'static str,
    /// Where it serves /metrics, /healthz and /readyz unless `--metrics-addr` says.
    pub default_metrics_addr: &'static str,
}

/// The whole life of an operator process: telemetry, metrics and the client from `args`,
/// then `operator` (its watches and controllers, built from the [`Parts`]) under leader
/// election when `--leader-elect` asks for it, beside the HTTP endpoints, until SIGTERM,
/// Ctrl-C or a lost lease.
pub async fn run<F, Fut>(who: &Operator, args: &CommonArgs, operator: F) -> Result<(), BoxError>
where
    F: FnOnce(Parts) -> Fut,
    Fut: Future<Output = ()>,
{
    let process = start(
        who.metrics_prefix,
        &args.log,
        &args.run,
        who.default_metrics_addr,
    )
    .await?;
    let lease = args.leader.lease(who.name)?;
    tracing::info!(
        operator = who.name,
        strategy = args.write.strategy().name(),
        "starting"
    );
    process.run(who.name, lease, operator).await?;
    tracing::info!("stopped");
    Ok(())
}

/// A started operator process, before its controllers run.
pub struct Process {
    pub client: kube::Client,
    pub metrics: OperatorMetrics,
    pub readiness: Readiness,
    /// Where /metrics, /healthz and /readyz are served.
    pub addr: SocketAddr,
}

/// Sets up logging, metrics named `<prefix>_...` and the client.
pub async fn start(
    prefix: &str,
    log: &LogArgs,
    run: &RunArgs,
    default_addr: &str,
) -> Result<Process, BoxError> {
    let metrics = operator_metrics(prefix);
    let triggers = TriggerLayer(metrics.observe.clone()).with_filter(TriggerLayer::filter());
    crate::telemetry::init(log, triggers);
    let client = run.client(metrics.observe.clone()).await?;
    let addr = match run.metrics_addr {
        Some(addr) => addr,
        None => default_addr.parse()?,
    };
    Ok(Process {
        client,
        metrics,
        readiness: Readiness::default(),
        addr,
    })
}

/// What an operator's parts are given to run with, by [`Process::run`].
pub struct Parts {
    /// The operator's name: its field manager and the reporter of its events.
    pub name: &'static str,
    pub client: kube::Client,
    pub writes: Arc<crate::metrics::WriteMetrics>,
    pub reconciles: Arc<crate::metrics::ReconcileMetrics>,
    pub readiness: Readiness,
    /// Opens once this process leads.
    pub leadership: crate::leader::Leadership,
}

impl Process {
    /// Runs the operator `operator` builds from its [`Parts`], under leader election when
    /// `lease` is given, and serves /metrics, /healthz and /readyz until it ends.
    pub async fn run<F, Fut>(
        self,
        name: &'static str,
        lease: Option<crate::leader::Lease>,
        operator: F,
    ) -> Result<(), BoxError>
    where
        F: FnOnce(Parts) -> Fut,
        Fut: Future<Output = ()>,
    {
        let Process {
            client,
            metrics,
            readiness,
            addr,
        } = self;
        let (writes, reconciles) = (metrics.writes, metrics.reconciles);
        let (lease_client, ready) = (client.clone(), readiness.clone());
        let operator = move |leadership| {
            operator(Parts {
                name,
                client,
                writes,
                reconciles,
                readiness: ready,
                leadership,
            })
        };
        let elected = with_leader_election(lease_client, lease, metrics.leader, operator);
        serve_while(metrics.registry, addr, readiness, elected).await
    }
}

impl Parts {
    /// The run time of an operator that writes with `strategy` and runs each controller
    /// with `concurrency` reconciles at once: its writer (its name is the field manager),
    /// its event recorder, and the watches to open before [`Runtime::serve`].
    pub fn runtime(self, strategy: ConflictStrategy, concurrency: u16) -> Runtime {
        let reporter = Reporter {
            controller: self.name.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let recorder = Recorder::new(self.client.clone(), reporter);
        Runtime {
            watches: Watches::new(self.client.clone(), recorder.clone()),
            shared: Shared {
                writer: Writer::new(strategy, self.name).with_metrics(self.writes),
                client: self.client,
                recorder,
                runner: RunnerSettings {
                    metrics: self.reconciles,
                    concurrency,
                },
            },
            readiness: self.readiness,
            leadership: self.leadership,
        }
    }
}

/// One operator's run time.
pub struct Runtime {
    /// Where the operator opens its watches, before [`Runtime::serve`].
    pub watches: Watches,
    shared: Shared,
    readiness: Readiness,
    leadership: crate::leader::Leadership,
}

/// What the controllers of one operator share.
#[derive(Clone)]
pub struct Shared {
    pub client: kube::Client,
    pub writer: Writer,
    /// The one event recorder of the process (the watches report with it too).
    pub recorder: Recorder,
    pub runner: RunnerSettings,
}

impl Runtime {
    /// Runs the watches until the process stops; once every cache is full the process is
    /// Ready, and once it leads, `leading` builds the controllers from what they share and
    /// runs them (see [`Watches::serve`]).
    pub async fn serve<F, Fut>(self, leading: F)
    where
        F: FnOnce(Shared) -> Fut,
        Fut: Future<Output = ()>,
    {
        let Runtime {
            watches,
            shared,
            readiness,
            mut leadership,
        } = self;
        watches
            .serve(&readiness, &mut leadership, move || leading(shared))
            .await;
    }
}

/// Serves /metrics, /healthz and /readyz until `operator` ends (on SIGTERM or Ctrl-C, or
/// with an error such as a lost lease) or the server fails (e.g. its port is taken).
pub async fn serve_while<E>(
    registry: prometheus_client::registry::Registry,
    addr: SocketAddr,
    readiness: Readiness,
    operator: impl Future<Output = Result<(), E>>,
) -> Result<(), BoxError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    tokio::select! {
        result = operator => result.map_err(Into::into),
        result = http::serve(addr, Arc::new(registry), readiness) => {
            result.map_err(|e| format!("serving /metrics on {addr}: {e}").into())
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (what kube's `Controller::shutdown_on_signal` stops on),
/// for the parts of an operator that wait before any controller runs.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs `operator` under leader election when `lease` is given, else at once. With a
/// lease, the elector campaigns beside the operator (whose writing parts wait on the
/// returned gate); a lost lease ends `operator` at once with the error, and when
/// `operator` ends by itself (SIGTERM) the lease is released for a standby.
pub async fn with_leader_election<F, Fut>(
    client: kube::Client,
    lease: Option<crate::leader::Lease>,
    gauge: prometheus_client::metrics::gauge::Gauge,
    operator: F,
) -> Result<(), crate::leader::LeaderError>
where
    F: FnOnce(crate::leader::Leadership) -> Fut,
    Fut: Future<Output = ()>,
{
    let Some(lease) = lease else {
        gauge.set(1);
        operator(crate::leader::Leadership::always()).await;
        return Ok(());
    };
    let (mut elector, leadership) = crate::leader::Elector::new(client, lease, gauge);
    let operator = operator(leadership);
    tokio::select! {
        () = operator => {
            elector.release().await;
            Ok(())
        }
        lost = elector.run() => Err(lost),
    }
}

/// What every replica does before it writes: turns Ready once `caches_synced` says the
/// caches hold their first full lists, then waits to lead. False when the process should
/// end instead: a cache never synced, or SIGTERM came first.
pub async fn synced_then_leading(
    caches_synced: impl Future<Output = bool>,
    readiness: &Readiness,
    leadership: &mut crate::leader::Leadership,
) -> bool {
    if !caches_synced.await {
        return false;
    }
    tracing::info!("caches synced; ready");
    readiness.set_ready();
    tokio::select! {
        () = leadership.acquired() => true,
        () = shutdown_signal() => false,
    }
}
