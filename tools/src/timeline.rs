//! The talk's cross-operator timeline, reproduced and measured: both operator binaries run
//! as processes with one `--conflict-strategy`, a NodePool at 1 node gets a Deployment whose
//! pods need 4, then the Deployment is scaled to 0 (it needs the full control plane: the
//! controller-manager makes the pods, the scheduler marks and binds them); a third writer touches the pool meanwhile, so writes from cached
//! copies meet newer resourceVersions. Every change of the pool (from a watch), every 409
//! the operators log, and their metrics are recorded.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde::Serialize;
use serde_json::{Value, json};
use shared_crd::condition::find;
use shared_crd::{Autoscaler, NodePool, NodePoolStatus, ScalingRules};

use test_support::{ControlPlane, fixtures, http_get, unique_name};

/// The field manager of the third writer.
pub const THIRD_WRITER: &str = "third-writer";

/// How a run is set up.
#[derive(Clone, Debug)]
pub struct Options {
    /// Where `nodepool-operator` and `autoscaler-operator` are.
    pub bin_dir: PathBuf,
    /// How often the third writer touches the pool (None: no third writer).
    pub contention: Option<Duration>,
    /// How many copies of the third writer run at once.
    pub third_writers: usize,
    /// How long the third writers go on, from the moment the demand appears. A writer
    /// that never pauses can starve `lazy`: its next try comes after a doubling backoff,
    /// and when the cache lags more than the gap between the writer's writes, every try
    /// meets a 409 (seen on a loaded CI machine: 16 tries in 120 s, all 409s).
    pub contention_for: Duration,
    /// Where the operators' logs go.
    pub log_dir: PathBuf,
    /// Replicas of 1 cpu that want the pool (5 -> 4 nodes of 2 cpu at 80%).
    pub pods: usize,
    pub expect_up: i32,
    pub expect_down: i32,
    /// Change the pool's template once it has scaled up: nodepool-operator replaces every
    /// node while the autoscaler keeps deciding on the same pool (`--rollout`).
    pub rollout: bool,
}

impl Options {
    pub fn new(bin_dir: PathBuf, log_dir: PathBuf) -> Self {
        Self {
            bin_dir,
            contention: Some(Duration::from_millis(50)),
            third_writers: 2,
            contention_for: Duration::from_secs(15),
            log_dir,
            pods: 5,
            expect_up: 4,
            expect_down: 1,
            rollout: false,
        }
    }
}

/// One change of the NodePool, as the watch saw it.
#[derive(Clone, Debug, Serialize)]
pub struct PoolChange {
    /// Seconds since the pool was created.
    pub t: f64,
    pub resource_version: String,
    pub generation: i64,
    pub spec_replicas: i32,
    pub status_replicas: i32,
    pub ready_replicas: i32,
    pub updated_replicas: i32,
    /// What changed, e.g. `spec.replicas 1 -> 4`, `status`, `annotations`.
    pub changed: Vec<String>,
    /// The field managers that own what changed.
    pub by: Vec<String>,
}

/// A 409 an operator got, from its JSON log.
#[derive(Clone, Debug, Serialize)]
pub struct Conflict {
    pub t: f64,
    pub operator: String,
    pub resource: String,
    /// The resourceVersion the rejected write was made from.
    pub read_resource_version: String,
    pub attempt: u64,
    /// `requeue` (lazy), `reread_and_retry` or `give_up` (retry).
    pub next: String,
}

/// Sums of one operator's metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counters {
    pub conflicts: u64,
    pub retries: u64,
    pub reconciles: u64,
    /// Reconciles that ended in an error (with `lazy`, each 409 is one).
    pub failed_reconciles: u64,
    pub error_requeues: u64,
    pub writes_skipped: u64,
    /// API requests by verb.
    pub requests: BTreeMap<String, u64>,
}

/// The result of one strategy.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub strategy: String,
    /// When the Deployment was made and when it was scaled to 0 (seconds since the pool's
    /// creation).
    pub demand_at: f64,
    pub demand_gone_at: f64,
    /// When the third writers stopped, if they ran (seconds since the pool's creation).
    pub contention_until: Option<f64>,
    /// Seconds from the Deployment's creation to `expect_up` Ready nodes.
    pub converge_up: Option<f64>,
    /// Seconds from the scale to 0 to `expect_down` Ready nodes.
    pub converge_down: Option<f64>,
    /// With `rollout`: when the template changed, and seconds from then until every node
    /// was on the new template (`updatedReplicas`), the pool exact.
    pub rollout_at: Option<f64>,
    pub converge_rollout: Option<f64>,
    pub changes: Vec<PoolChange>,
    pub conflicts: Vec<Conflict>,
    pub nodepool_operator: Counters,
    pub autoscaler_operator: Counters,
    pub third_writer_writes: u64,
    /// What is wrong with the final state; empty when all is right.
    pub final_problems: Vec<String>,
}

impl Run {
    pub fn total(&self, f: impl Fn(&Counters) -> u64) -> u64 {
        f(&self.nodepool_operator) + f(&self.autoscaler_operator)
    }
    pub fn requests(&self, verb: &str) -> u64 {
        self.total(|c| c.requests.get(verb).copied().unwrap_or(0))
    }
    pub fn final_ok(&self) -> bool {
        self.final_problems.is_empty()
            && self.converge_up.is_some()
            && self.converge_down.is_some()
            && (self.rollout_at.is_none() || self.converge_rollout.is_some())
    }
}

struct Operator {
    name: &'static str,
    child: tokio::process::Child,
    addr: String,
    log: PathBuf,
}

impl Operator {
    async fn start(
        name: &'static str,
        strategy: &str,
        cp: &ControlPlane,
        opts: &Options,
    ) -> Result<Self> {
        let port = test_support::control_plane::free_port()?;
        let addr = format!("127.0.0.1:{port}");
        std::fs::create_dir_all(&opts.log_dir)?;
        let log = opts.log_dir.join(format!("{name}-{strategy}.log"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = tokio::process::Command::new(opts.bin_dir.join(name));
        cmd.args([
            "--conflict-strategy",
            strategy,
            "--metrics-addr",
            &addr,
            "--log-format",
            "json",
        ])
        .env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", "info,kube=warn")
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .kill_on_drop(true);
        if name == "nodepool-operator" {
            cmd.args(["--provisioning-delay-ms", "1000"]);
        }
        if !cp.is_external() {
            // Its own user, with only the ClusterRole its chart grants.
            cmd.args(["--context", name]);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", opts.bin_dir.join(name).display()))?;
        let mut op = Self {
            name,
            child,
            addr,
            log,
        };
        test_support::wait_until_ready(
            name,
            &mut op.child,
            &op.addr,
            &op.log,
            Duration::from_secs(30),
        )
        .await?;
        Ok(op)
    }

    fn counters(&self) -> Result<Counters> {
        Ok(parse_metrics(&http_get(&self.addr, "/metrics")?))
    }

    async fn stop(mut self) -> Result<PathBuf> {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(self.log)
    }
}

/// Runs the scenario once with `strategy` on `cp`.
pub async fn run(cp: &ControlPlane, strategy: &str, opts: &Options) -> Result<Run> {
    let client = cp.client().await?;
    let pools: Api<NodePool> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let name = unique_name(&format!("tl-{strategy}"));

    let nodepool = Operator::start("nodepool-operator", strategy, cp, opts).await?;
    let autoscaler = Operator::start("autoscaler-operator", strategy, cp, opts).await?;

    // The clock starts with the pool; the recorder sees its whole life.
    let t0 = Instant::now();
    let changes = Arc::new(Mutex::new(Vec::new()));
    let recorder = tokio::spawn(record(pools.clone(), name.clone(), t0, changes.clone()));
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&name, 1))
        .await?;
    let mut scaler = fixtures::autoscaler(&name, &name, 1, 6);
    // Down one node a second once the 5 s window has passed.
    scaler.spec.behavior.scale_down =
        ScalingRules::window(5).with_policy(shared_crd::PolicyType::Nodes, 1, 1);
    autoscalers.create(&PostParams::default(), &scaler).await?;
    wait_pool(&pools, &name, 1, Duration::from_secs(60))
        .await
        .context("pool at 1 node")?;

    let demand_at = t0.elapsed().as_secs_f64();
    let up_start = Instant::now();
    let until = up_start + opts.contention_for;
    let third: Vec<_> = opts
        .contention
        .into_iter()
        .flat_map(|every| (0..opts.third_writers).map(move |i| (i, every)))
        .map(|(i, every)| tokio::spawn(third_writer(pools.clone(), name.clone(), i, every, until)))
        .collect();

    // The demand as a user makes it: a Deployment, whose pods the scheduler marks
    // Unschedulable until the pool has room, then binds to its nodes.
    deployments
        .create(&PostParams::default(), &demand(&name, opts.pods))
        .await?;
    let converge_up = wait_pool(&pools, &name, opts.expect_up, Duration::from_secs(120))
        .await
        .ok()
        .map(|_| up_start.elapsed().as_secs_f64());
    let (rollout_at, converge_rollout) = if opts.rollout && converge_up.is_some() {
        let at = t0.elapsed().as_secs_f64();
        let start = Instant::now();
        let params = PatchParams {
            field_manager: Some(USER.into()),
            ..Default::default()
        };
        let patch = json!({"spec": {"template": {"labels": {ROLLOUT_LABEL: "2"}}}});
        pools.patch(&name, &params, &Patch::Merge(&patch)).await?;
        let done = wait_rollout(&pools, &name, opts.expect_up, Duration::from_secs(150))
            .await
            .ok()
            .map(|_| start.elapsed().as_secs_f64());
        (Some(at), done)
    } else {
        (None, None)
    };
    let demand_gone_at = t0.elapsed().as_secs_f64();
    let down_start = Instant::now();
    let none = serde_json::json!({"spec": {"replicas": 0}});
    deployments
        .patch(&name, &PatchParams::default(), &Patch::Merge(&none))
        .await?;
    let converge_down = wait_pool(&pools, &name, opts.expect_down, Duration::from_secs(120))
        .await
        .ok()
        .map(|_| down_start.elapsed().as_secs_f64());
    // Let late writes land, then stop the third writer and look at the final state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let aborted_at = t0.elapsed().as_secs_f64();
    for handle in &third {
        handle.abort();
    }
    // Their tick counters are their numbers of writes.
    let third_writer_writes = third_writer_count(&pools, &name).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut final_problems =
        check_final(&pools, &autoscalers, &name, opts, third_writer_writes > 0).await?;
    recorder.abort();
    let changes = changes.lock().expect("not poisoned").clone();
    if let (Some(at), Some(took)) = (rollout_at, converge_rollout) {
        final_problems.extend(rollout_problems(&changes, at, at + took, opts.expect_up));
    }

    let nodepool_operator = nodepool.counters()?;
    let autoscaler_operator = autoscaler.counters()?;
    let mut conflicts = Vec::new();
    for op in [nodepool, autoscaler] {
        let who = op.name;
        let log = op.stop().await?;
        conflicts.extend(conflicts_in_log(&log, who, t0)?);
    }
    conflicts.sort_by(|a, b| a.t.total_cmp(&b.t));

    deployments
        .delete(&name, &DeleteParams::background())
        .await?;
    autoscalers.delete(&name, &DeleteParams::default()).await?;
    pools.delete(&name, &DeleteParams::default()).await?;
    Ok(Run {
        strategy: strategy.to_owned(),
        demand_at,
        demand_gone_at,
        contention_until: opts
            .contention
            .map(|_| aborted_at.min(demand_at + opts.contention_for.as_secs_f64())),
        converge_up,
        converge_down,
        rollout_at,
        converge_rollout,
        changes,
        conflicts,
        nodepool_operator,
        autoscaler_operator,
        third_writer_writes,
        final_problems,
    })
}

/// `replicas` pods of 1 cpu that want `pool`.
fn demand(pool: &str, replicas: usize) -> Deployment {
    fixtures::deployment(pool, pool, replicas as i32, "1", "1Gi")
}

/// Waits until the pool asks for and has `n` Ready nodes.
async fn wait_pool(pools: &Api<NodePool>, name: &str, n: i32, timeout: Duration) -> Result<()> {
    let what = format!("at {n} nodes");
    wait_until(pools, name, timeout, &what, |p, s| {
        p.spec.replicas == n && s.replicas == n && s.ready_replicas == n
    })
    .await
}

/// Waits until every one of the pool's `n` nodes is Ready and on its current template.
async fn wait_rollout(pools: &Api<NodePool>, name: &str, n: i32, timeout: Duration) -> Result<()> {
    wait_until(pools, name, timeout, "rolled out", |p, s| {
        s.observed_generation == p.metadata.generation
            && (
                p.spec.replicas,
                s.replicas,
                s.ready_replicas,
                s.updated_replicas,
            ) == (n, n, n, n)
    })
    .await
}

/// Reads the pool every 100 ms until `done` holds, or fails after `timeout`, saying it is
/// not `what`.
async fn wait_until(
    pools: &Api<NodePool>,
    name: &str,
    timeout: Duration,
    what: &str,
    done: impl Fn(&NodePool, &NodePoolStatus) -> bool,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let p = pools.get(name).await?;
        let s = p.status.clone().unwrap_or_default();
        if done(&p, &s) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "pool {name} not {what} after {timeout:?}: spec {}, status {s:?}",
                p.spec.replicas
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What went wrong while the rollout ran, from the pool's recorded versions: the autoscaler
/// must not change the size (no flap), the pool must keep `replicas` Ready nodes and hold at
/// most one more (the default budget, 10% rounded up).
pub fn rollout_problems(changes: &[PoolChange], from: f64, to: f64, replicas: i32) -> Vec<String> {
    let during: Vec<&PoolChange> = changes.iter().filter(|c| c.t > from && c.t <= to).collect();
    let mut problems = Vec::new();
    for c in &during {
        if let Some(what) = c.changed.iter().find(|w| w.starts_with("spec.replicas")) {
            problems.push(format!("during the rollout, at {:.3}s: {what}", c.t));
        }
        if c.ready_replicas < replicas {
            problems.push(format!(
                "during the rollout, at {:.3}s: {} Ready nodes, fewer than {replicas}",
                c.t, c.ready_replicas
            ));
        }
        if c.status_replicas > replicas + 1 {
            problems.push(format!(
                "during the rollout, at {:.3}s: {} nodes, more than {}",
                c.t,
                c.status_replicas,
                replicas + 1
            ));
        }
    }
    if !during.iter().any(|c| c.status_replicas > replicas) {
        problems.push("the rollout replaced no node (the pool never held a replacement)".into());
    }
    problems
}

/// The field manager of the user who changes the template.
pub const USER: &str = "user";
const ROLLOUT_LABEL: &str = "timeline.nodepool.dev/rollout";

/// The third writer: a merge patch of one annotation (no resourceVersion, so it never
/// conflicts itself), which moves the pool's resourceVersion under the operators' caches.
async fn third_writer(
    pools: Api<NodePool>,
    name: String,
    index: usize,
    every: Duration,
    until: Instant,
) {
    let params = PatchParams {
        field_manager: Some(THIRD_WRITER.into()),
        ..Default::default()
    };
    let key = format!("{TICK_ANNOTATION}-{index}");
    for tick in 1u64.. {
        if Instant::now() >= until {
            return;
        }
        let patch = json!({"metadata": {"annotations": {&key: tick.to_string()}}});
        let _ = pools.patch(&name, &params, &Patch::Merge(&patch)).await;
        tokio::time::sleep(every).await;
    }
}

const TICK_ANNOTATION: &str = "timeline.nodepool.dev/tick";

/// The third writers' writes: each one's tick counter.
async fn third_writer_count(pools: &Api<NodePool>, name: &str) -> u64 {
    let Ok(pool) = pools.get(name).await else {
        return 0;
    };
    pool.annotations()
        .iter()
        .filter(|(k, _)| k.starts_with(TICK_ANNOTATION))
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum()
}

/// Records every version of the pool the watch delivers, with what changed and who owns it.
async fn record(pools: Api<NodePool>, name: String, t0: Instant, out: Arc<Mutex<Vec<PoolChange>>>) {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut previous: Option<NodePool> = None;
    let mut stream = watcher(pools, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(Ok(pool)) = stream.next().await {
        let change = describe_change(previous.as_ref(), &pool, t0.elapsed().as_secs_f64());
        if !change.changed.is_empty() {
            out.lock().expect("not poisoned").push(change);
        }
        previous = Some(pool);
    }
}

/// What changed between two versions of the pool, and the managers that own it.
pub fn describe_change(before: Option<&NodePool>, after: &NodePool, t: f64) -> PoolChange {
    let status = after.status.clone().unwrap_or_default();
    let mut changed = Vec::new();
    let mut areas = Vec::new();
    if let Some(b) = before {
        if b.spec.replicas != after.spec.replicas {
            changed.push(format!(
                "spec.replicas {} -> {}",
                b.spec.replicas, after.spec.replicas
            ));
            areas.push("f:spec");
        }
        if b.spec.template != after.spec.template {
            changed.push("spec.template".to_owned());
            areas.push("f:spec");
        }
        if b.status != after.status {
            let bs = b.status.clone().unwrap_or_default();
            let mut what = Vec::new();
            if (bs.replicas, bs.ready_replicas, bs.updated_replicas)
                != (
                    status.replicas,
                    status.ready_replicas,
                    status.updated_replicas,
                )
            {
                what.push(format!(
                    "replicas {}/{} ready/{} up to date",
                    status.replicas, status.ready_replicas, status.updated_replicas
                ));
            }
            if bs.conditions != status.conditions {
                what.push("conditions".to_owned());
            }
            if bs.observed_generation != status.observed_generation
                || bs.last_scale_time != status.last_scale_time
            {
                what.push("observedGeneration/lastScaleTime".to_owned());
            }
            changed.push(format!("status ({})", what.join(", ")));
            areas.push("f:status");
        }
        if b.annotations() != after.annotations() {
            changed.push("annotations".to_owned());
            areas.push("f:metadata");
        }
        if b.finalizers() != after.finalizers() {
            changed.push("finalizers".to_owned());
            areas.push("f:metadata");
        }
    }
    let mut by = BTreeSet::new();
    for area in areas {
        // The latest entry that owns something in that area.
        let owner = after
            .managed_fields()
            .iter()
            .filter(|m| {
                m.fields_v1
                    .as_ref()
                    .is_some_and(|f| f.0.get(area).is_some())
            })
            .filter(|m| area != "f:metadata" || m.manager.as_deref() != Some("kubectl-create"))
            .max_by_key(|m| m.time.as_ref().map(|t| t.0));
        if let Some(manager) = owner.and_then(|m| m.manager.clone()) {
            by.insert(manager);
        }
    }
    PoolChange {
        t,
        resource_version: after.resource_version().unwrap_or_default(),
        generation: after.metadata.generation.unwrap_or_default(),
        spec_replicas: after.spec.replicas,
        status_replicas: status.replicas,
        ready_replicas: status.ready_replicas,
        updated_replicas: status.updated_replicas,
        changed,
        by: by.into_iter().collect(),
    }
}

/// Nothing one writer wrote was lost by another: spec.replicas (autoscaler), status and its
/// conditions (nodepool-operator), the Autoscaler's own conditions and NodePoolReady, and
/// the third writer's annotation.
async fn check_final(
    pools: &Api<NodePool>,
    autoscalers: &Api<Autoscaler>,
    name: &str,
    opts: &Options,
    third_writer_ran: bool,
) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    let pool = pools.get(name).await?;
    let status = pool.status.clone().unwrap_or_default();
    if pool.spec.replicas != opts.expect_down {
        problems.push(format!("spec.replicas is {}", pool.spec.replicas));
    }
    if (status.replicas, status.ready_replicas) != (opts.expect_down, opts.expect_down) {
        problems.push(format!(
            "status {}/{} ready",
            status.replicas, status.ready_replicas
        ));
    }
    for c in ["Ready", "Scaling"] {
        if find(&status.conditions, c).is_none() {
            problems.push(format!("NodePool condition {c} missing"));
        }
    }
    if third_writer_ran
        && !pool
            .annotations()
            .keys()
            .any(|k| k.starts_with(TICK_ANNOTATION))
    {
        problems.push("the third writer's annotation was lost".into());
    }
    let a = autoscalers.get(name).await?;
    let s = a.status.clone().unwrap_or_default();
    for c in ["Active", "AbleToScale", "ScalingLimited", "NodePoolReady"] {
        if find(&s.conditions, c).is_none() {
            problems.push(format!("Autoscaler condition {c} missing"));
        }
    }
    if s.desired_replicas != Some(opts.expect_down) {
        problems.push(format!(
            "Autoscaler desiredReplicas {:?}",
            s.desired_replicas
        ));
    }
    Ok(problems)
}

/// The `write conflict` lines of an operator's JSON log.
fn conflicts_in_log(path: &Path, operator: &str, t0: Instant) -> Result<Vec<Conflict>> {
    let text = std::fs::read_to_string(path)?;
    // Log timestamps are wall-clock; t0 is monotonic: anchor one on the other.
    let now_wall = k8s_openapi::jiff::Timestamp::now();
    let t0_wall =
        now_wall - k8s_openapi::jiff::SignedDuration::try_from(t0.elapsed()).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let fields = &v["fields"];
        if fields["message"] != "write conflict" {
            continue;
        }
        let at = v["timestamp"]
            .as_str()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok());
        let t = at.map_or(0.0, |at| at.duration_since(t0_wall).as_secs_f64());
        out.push(Conflict {
            t,
            operator: operator.to_owned(),
            resource: fields["resource"].as_str().unwrap_or_default().to_owned(),
            read_resource_version: fields["read_resource_version"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            attempt: fields["attempt"].as_u64().unwrap_or_default(),
            next: fields["next"].as_str().unwrap_or_default().to_owned(),
        });
    }
    Ok(out)
}

/// Sums the series of an operator's `/metrics` text.
pub fn parse_metrics(text: &str) -> Counters {
    let mut c = Counters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let value = value as u64;
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let label = |key: &str| {
            labels.split(',').find_map(|kv| {
                kv.strip_prefix(&format!("{key}=\""))
                    .map(|v| v.trim_end_matches(['"', '}']).to_owned())
            })
        };
        match name
            .split_once('_')
            .map(|(_, rest)| rest)
            .and_then(|r| r.strip_prefix("operator_"))
        {
            Some("conflicts_total") => c.conflicts += value,
            Some("write_retries_total") => c.retries += value,
            Some("reconciles_total") => {
                c.reconciles += value;
                if label("result").as_deref() != Some("ok") {
                    c.failed_reconciles += value;
                }
            }
            // Not sent: the object had it, or this writer had just written it.
            Some("writes_total")
                if matches!(label("result").as_deref(), Some("unchanged" | "expected")) =>
            {
                c.writes_skipped += value
            }
            Some("reconcile_triggers_total")
                if label("trigger").as_deref() == Some("error_requeue") =>
            {
                c.error_requeues += value
            }
            Some("api_requests_total") => {
                if let Some(verb) = label("verb") {
                    *c.requests.entry(verb).or_default() += value;
                }
            }
            _ => {}
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry, Time};

    fn managed(manager: &str, fields: Value, second: i64) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            fields_v1: Some(FieldsV1(fields)),
            time: Some(Time(
                k8s_openapi::jiff::Timestamp::from_second(second).unwrap(),
            )),
            ..Default::default()
        }
    }

    #[test]
    fn a_change_is_attributed_to_the_manager_that_owns_it() {
        let before = fixtures::nodepool("p", 1);
        let mut after = before.clone();
        after.spec.replicas = 4;
        after.metadata.resource_version = Some("42".into());
        after.metadata.managed_fields = Some(vec![
            managed("kubectl-create", json!({"f:spec": {"f:template": {}}}), 1),
            managed(
                "autoscaler-operator",
                json!({"f:spec": {"f:replicas": {}}}),
                2,
            ),
            managed(
                "nodepool-operator",
                json!({"f:status": {"f:replicas": {}}}),
                3,
            ),
        ]);
        let change = describe_change(Some(&before), &after, 1.5);
        assert_eq!(change.changed, ["spec.replicas 1 -> 4"]);
        assert_eq!(change.by, ["autoscaler-operator"]);
        assert_eq!(
            (change.resource_version.as_str(), change.spec_replicas),
            ("42", 4)
        );

        let mut annotated = after.clone();
        annotated.metadata.annotations = Some([("tick".to_owned(), "1".to_owned())].into());
        let mut fields = annotated.metadata.managed_fields.clone().unwrap();
        fields.push(managed(
            THIRD_WRITER,
            json!({"f:metadata": {"f:annotations": {"f:tick": {}}}}),
            4,
        ));
        annotated.metadata.managed_fields = Some(fields);
        let change = describe_change(Some(&after), &annotated, 2.0);
        assert_eq!(
            (change.changed.as_slice(), change.by.as_slice()),
            (
                &["annotations".to_owned()][..],
                &[THIRD_WRITER.to_owned()][..]
            )
        );
    }

    fn version(t: f64, spec: i32, nodes: i32, ready: i32, changed: &str) -> PoolChange {
        PoolChange {
            t,
            resource_version: String::new(),
            generation: 2,
            spec_replicas: spec,
            status_replicas: nodes,
            ready_replicas: ready,
            updated_replicas: 0,
            changed: vec![changed.to_owned()],
            by: vec![],
        }
    }

    #[test]
    fn a_rollout_is_judged_by_the_versions_inside_it() {
        let good = [
            version(1.0, 4, 4, 4, "spec.replicas 1 -> 4"),
            version(2.0, 4, 5, 4, "status"),
            version(3.0, 4, 5, 5, "status"),
            version(4.0, 4, 4, 4, "status"),
            version(9.0, 1, 4, 4, "spec.replicas 4 -> 1"),
        ];
        assert_eq!(rollout_problems(&good, 1.5, 5.0, 4), Vec::<String>::new());

        let flap = [
            version(2.0, 4, 5, 4, "status"),
            version(2.5, 5, 5, 4, "spec.replicas 4 -> 5"),
            version(3.0, 5, 6, 3, "status"),
        ];
        let problems = rollout_problems(&flap, 1.5, 5.0, 4);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("spec.replicas 4 -> 5"));
        assert!(problems[1].contains("3 Ready nodes, fewer than 4"));
        assert!(problems[2].contains("6 nodes, more than 5"));

        assert_eq!(
            rollout_problems(&[version(2.0, 4, 4, 4, "status")], 1.5, 5.0, 4),
            ["the rollout replaced no node (the pool never held a replacement)"]
        );
    }

    #[test]
    fn the_first_version_has_nothing_to_compare_with() {
        assert!(
            describe_change(None, &fixtures::nodepool("p", 1), 0.0)
                .changed
                .is_empty()
        );
    }

    #[test]
    fn metrics_text_sums_the_families_the_table_needs() {
        let text = r#"# HELP x
nodepool_operator_conflicts_total{resource="nodepools/status",strategy="lazy"} 3
nodepool_operator_conflicts_total{resource="autoscalers/status",strategy="lazy"} 2
nodepool_operator_write_retries_total{resource="nodepools/status",strategy="retry"} 4
nodepool_operator_reconciles_total{controller="nodepool",result="ok"} 10
nodepool_operator_reconciles_total{controller="nodepool",result="conflict"} 3
nodepool_operator_writes_total{resource="nodepools/status",strategy="lazy",result="unchanged"} 5
nodepool_operator_writes_total{resource="nodepools/status",strategy="lazy",result="expected"} 2
nodepool_operator_writes_total{resource="nodepools/status",strategy="lazy",result="written"} 9
nodepool_operator_reconcile_triggers_total{kind="NodePool",trigger="error_requeue",related=""} 3
nodepool_operator_reconcile_triggers_total{kind="NodePool",trigger="object_updated",related=""} 5
nodepool_operator_api_requests_total{verb="update",resource="nodepools/status",code="409"} 3
nodepool_operator_api_requests_total{verb="update",resource="nodepools/status",code="200"} 9
nodepool_operator_api_requests_total{verb="get",resource="nodepools",code="200"} 1
"#;
        let c = parse_metrics(text);
        assert_eq!(
            (
                c.conflicts,
                c.retries,
                c.reconciles,
                c.writes_skipped,
                c.error_requeues
            ),
            (5, 4, 13, 7, 3)
        );
        assert_eq!(c.failed_reconciles, 3);
        assert_eq!(c.requests.get("update"), Some(&12));
        assert_eq!(c.requests.get("get"), Some(&1));
    }
}
