//! `make bench-scale`: the operators at scale on a fresh local control plane, measured
//! by the API server itself. Three scenarios:
//! - `pools`: nodepool-operator alone, N NodePools x 2 replicas;
//! - `both`: both operators, N pools at 1 replica with N Autoscalers (1..6, target 100%),
//!   then 3 pods of 1 cpu per pool on 2-cpu nodes (so 2 nodes per pool);
//! - `standing`: the N pools of `pools` are there before nodepool-operator starts (an
//!   install on a cluster that has them, or a restart that lost every node), timed from
//!   the process's start against the API server's own time for as many writes.
//!
//! Each run reports the time to converge after the last object was created, the mutating
//! requests by verb and resource from `apiserver_request_total` (Leases and Events apart,
//! the benchmark's own creates subtracted) beside the scenario's minimum, the mutating
//! requests in an idle period afterwards, and each operator's CPU seconds and peak RSS.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeSpec, NodeStatus, Pod, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde::Serialize;
use shared_crd::condition::find;
use shared_crd::{Autoscaler, NodePool};

use test_support::{ControlPlane, fixtures, http_get};

use crate::report::median;

/// Which scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Pools,
    Both,
    Standing,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Pools => "pools",
            Scenario::Both => "both",
            Scenario::Standing => "standing",
        }
    }

    /// The scenario named `name`.
    pub fn parse(name: &str) -> Result<Self> {
        Ok(match name {
            "pools" => Scenario::Pools,
            "both" => Scenario::Both,
            "standing" => Scenario::Standing,
            other => bail!("unknown scenario {other:?} (pools, both, standing)"),
        })
    }

    fn operators(self) -> &'static [&'static str] {
        match self {
            Scenario::Pools | Scenario::Standing => &["nodepool-operator"],
            Scenario::Both => &["nodepool-operator", "autoscaler-operator"],
        }
    }
}

/// Settings of one run.
#[derive(Clone, Debug)]
pub struct Options {
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
    pub pools: usize,
    pub idle: Duration,
    /// Objects the benchmark creates at once.
    pub parallel: usize,
}

/// What one operator process cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProcessCost {
    pub cpu_seconds: f64,
    pub peak_rss_mb: f64,
    /// RSS at the end of the idle period.
    pub rss_mb: f64,
}

/// One measured run.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub scenario: Scenario,
    pub strategy: String,
    pub pools: usize,
    /// Seconds from the last object created (with `standing`, from the operator's start)
    /// to the last pool converged.
    pub converged_after_s: Option<f64>,
    /// With `standing`: the API server's own seconds for as many writes as the minimum,
    /// node creates from `parallel` writers at once.
    pub api_server_s: Option<f64>,
    /// Mutating requests while converging, by `VERB resource`.
    pub converge_requests: BTreeMap<String, u64>,
    pub converge_total: u64,
    /// What the scenario needs at the least.
    pub minimum: u64,
    pub minimum_explained: String,
    /// Mutating requests in the idle period, by `VERB resource` (Leases apart).
    pub idle_requests: BTreeMap<String, u64>,
    pub idle_total: u64,
    pub idle_seconds: u64,
    /// Lease writes in the idle period (the node heartbeats).
    pub idle_lease_writes: u64,
    /// Lease and Event writes while converging (each new node's Lease, the operators'
    /// Events): not in `converge_total`, but the API server serves them too.
    pub converge_lease_writes: u64,
    pub converge_event_writes: u64,
    pub operators: BTreeMap<String, ProcessCost>,
    /// Each operator's own count of its writes (`<operator> <resource> <result>`), from
    /// its /metrics at the end: `written`, or not sent as `unchanged` / `expected`.
    pub operator_writes: BTreeMap<String, u64>,
    /// (seconds since the last object was created, pools converged).
    pub progress: Vec<(f64, usize)>,
}

impl Run {
    pub fn ratio(&self) -> f64 {
        self.converge_total as f64 / self.minimum.max(1) as f64
    }

    /// Convergence against the API server's own time for the same number of writes.
    pub fn time_ratio(&self) -> Option<f64> {
        Some(self.converged_after_s? / self.api_server_s?)
    }
}

/// Runs one scenario with one strategy on a fresh control plane.
pub async fn run(scenario: Scenario, strategy: &str, opts: &Options) -> Result<Run> {
    // Bare: the figures count every request the API server serves, and a
    // controller-manager's writes would blur them.
    let cp = ControlPlane::start_with(test_support::control_plane::Topology::Bare).await?;
    let client = cp.client().await?;
    let n = opts.pools;
    let pools_api: Api<NodePool> = Api::all(client.clone());
    let autoscalers_api: Api<Autoscaler> = Api::all(client.clone());
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let (pools, pools_w) = reflector::store();
    let (autoscalers, autoscalers_w) = reflector::store();
    let watches = tokio::spawn(futures::future::join(
        watcher(pools_api.clone(), watcher::Config::default())
            .default_backoff()
            .reflect(pools_w)
            .for_each(|_| async {}),
        watcher(autoscalers_api.clone(), watcher::Config::default())
            .default_backoff()
            .reflect(autoscalers_w)
            .for_each(|_| async {}),
    ));

    let mut operators = Vec::new();
    let dirs = (opts.bin_dir.as_path(), opts.log_dir.as_path());
    if scenario != Scenario::Standing {
        for name in scenario.operators() {
            operators.push(Process::start(name, strategy, &cp, dirs, scenario.name()).await?);
        }
    }
    let names: Vec<String> = (0..n).map(|i| format!("pool-{i:04}")).collect();

    let mut api_server_s = None;
    let mut since = None;
    let (created_by_bench, minimum, minimum_explained) = match scenario {
        Scenario::Standing => {
            create_pools(&pools_api, &names, 2, opts.parallel).await?;
            let minimum = 3 * n as u64;
            api_server_s = Some(api_server_time(&client, minimum as usize, opts.parallel).await?);
            let before = apiserver_requests(&client).await?;
            // Timed from the process's start: reading the caches and taking the lease
            // are part of the catch-up.
            since = Some(Instant::now());
            for name in scenario.operators() {
                operators.push(Process::start(name, strategy, &cp, dirs, scenario.name()).await?);
            }
            (
                (before, vec![]),
                minimum,
                format!("{n} pools x (2 node creates + 1 status write)"),
            )
        }
        Scenario::Pools => {
            let before = apiserver_requests(&client).await?;
            create_pools(&pools_api, &names, 2, opts.parallel).await?;
            (
                (before, vec![("POST nodepools".to_owned(), n as u64)]),
                3 * n as u64,
                format!("{n} pools x (2 node creates + 1 status write)"),
            )
        }
        Scenario::Both => {
            create_all(&names, opts.parallel, |name| {
                let (pools, autoscalers) = (pools_api.clone(), autoscalers_api.clone());
                async move {
                    pools
                        .create(&PostParams::default(), &fixtures::nodepool(&name, 1))
                        .await?;
                    let mut a = fixtures::autoscaler(&name, &name, 1, 6);
                    a.spec.target_utilization = 100;
                    autoscalers
                        .create(&PostParams::default(), &a)
                        .await
                        .map(|_| ())
                }
            })
            .await?;
            wait_converged(&pools, &autoscalers, scenario, n, 1, Instant::now(), opts)
                .await
                .context("setting up: pools at 1 node")?;
            // Let set-up writes land before counting.
            tokio::time::sleep(Duration::from_secs(3)).await;
            let before = apiserver_requests(&client).await?;
            let pod_names: Vec<String> = names
                .iter()
                .flat_map(|p| (0..3).map(move |i| format!("{p}-{i}")))
                .collect();
            let pool_of = |name: &str| {
                name.rsplit_once('-')
                    .map(|(p, _)| p.to_owned())
                    .unwrap_or_default()
            };
            create_all(&pod_names, opts.parallel, |name| {
                let api = pods_api.clone();
                let pool = pool_of(&name);
                async move {
                    api.create(
                        &PostParams::default(),
                        &fixtures::pod_wanting(&name, &pool, "1", "256Mi"),
                    )
                    .await
                    .map(|_| ())
                }
            })
            .await?;
            // The bare control plane has no scheduler: the bench writes its verdict, which
            // is what the autoscaler provisions for, once every pod exists (a scheduler
            // marks a pool's pods within milliseconds of each other).
            create_all(&pod_names, opts.parallel, |name| {
                let api = pods_api.clone();
                async move {
                    api.patch_status(
                        &name,
                        &PatchParams::default(),
                        &Patch::Strategic(fixtures::unschedulable_status()),
                    )
                    .await
                    .map(|_| ())
                }
            })
            .await?;
            (
                (
                    before,
                    vec![
                        ("POST pods".to_owned(), 3 * n as u64),
                        ("PATCH pods/status".to_owned(), 3 * n as u64),
                    ],
                ),
                4 * n as u64,
                format!(
                    "{n} pools x (1 spec write + 1 node create + 1 pool status write + 1 Autoscaler status write)"
                ),
            )
        }
    };
    let last_created = since.unwrap_or_else(Instant::now);
    let (before, own) = created_by_bench;
    let progress = wait_converged(&pools, &autoscalers, scenario, n, 2, last_created, opts).await;
    let converged_after_s = progress
        .as_ref()
        .ok()
        .map(|p| p.last().map_or(0.0, |l| l.0));
    // Late writes of convergence land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = apiserver_requests(&client).await?;
    let mut converge_requests = mutating(&before, &after);
    for (key, count) in own {
        if let Some(v) = converge_requests.get_mut(&key) {
            *v = v.saturating_sub(count);
        }
    }
    converge_requests.retain(|_, v| *v > 0);
    tokio::time::sleep(opts.idle).await;
    let idle_after = apiserver_requests(&client).await?;
    let idle_requests = mutating(&after, &idle_after);
    let idle_lease_writes = leases(&after, &idle_after);

    let mut costs = BTreeMap::new();
    let mut operator_writes = BTreeMap::new();
    for op in operators {
        if let Ok(text) = http_get(&op.addr, "/metrics") {
            operator_writes.extend(own_writes(op.name, &text));
        }
        costs.insert(op.name.to_owned(), op.stop().await?);
    }
    watches.abort();
    drop(cp);
    Ok(Run {
        scenario,
        strategy: strategy.to_owned(),
        pools: n,
        converged_after_s,
        api_server_s,
        converge_total: converge_requests.values().sum(),
        converge_requests,
        minimum,
        minimum_explained,
        idle_total: idle_requests.values().sum(),
        idle_requests,
        idle_seconds: opts.idle.as_secs(),
        idle_lease_writes,
        converge_lease_writes: leases(&before, &after),
        converge_event_writes: writes_of("events", &before, &after),
        operators: costs,
        operator_writes,
        progress: progress.unwrap_or_default(),
    })
}

/// The API server's own time for `count` writes, as node creates from `parallel` writers
/// at once, each a node like a virtual node of a pool (but of no pool). They are deleted
/// before it returns, and the deletion waited for.
async fn api_server_time(client: &kube::Client, count: usize, parallel: usize) -> Result<f64> {
    let nodes: Api<Node> = Api::all(client.clone());
    let names: Vec<String> = (0..count).map(|i| format!("baseline-{i:05}")).collect();
    let started = Instant::now();
    create_all(&names, parallel, |name| {
        let nodes = nodes.clone();
        async move {
            nodes
                .create(&PostParams::default(), &baseline_node(&name))
                .await
                .map(|_| ())
        }
    })
    .await?;
    let took = started.elapsed().as_secs_f64();
    let ours = ListParams::default().labels(BASELINE_LABEL);
    nodes
        .delete_collection(&DeleteParams::default(), &ours)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !nodes
        .list_metadata(&ours.clone().limit(1))
        .await?
        .items
        .is_empty()
    {
        if Instant::now() > deadline {
            bail!("the baseline's nodes were not gone after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(took)
}

const BASELINE_LABEL: &str = "bench.nodepool.dev/baseline=true";

/// A node shaped as a virtual node of a pool: labels, an annotation, a taint, capacity and
/// a Ready condition; labelled as the baseline's, owned by no pool.
fn baseline_node(name: &str) -> Node {
    let (key, value) = BASELINE_LABEL.split_once('=').expect("a label");
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity("2".into())),
        ("memory".to_owned(), Quantity("4Gi".into())),
        ("pods".to_owned(), Quantity("110".into())),
    ]);
    let now = shared_crd::time::now();
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                (key.to_owned(), value.to_owned()),
                ("kubernetes.io/hostname".to_owned(), name.to_owned()),
                ("type".to_owned(), "virtual".to_owned()),
            ])),
            annotations: Some(BTreeMap::from([(
                "node.alpha.kubernetes.io/ttl".to_owned(),
                "0".to_owned(),
            )])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: Some(vec![Taint {
                key: "bench.nodepool.dev/baseline".into(),
                effect: "NoSchedule".into(),
                ..Default::default()
            }]),
            provider_id: Some(format!("virtual://{name}")),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(resources.clone()),
            allocatable: Some(resources),
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: Some("KubeletReady".into()),
                last_heartbeat_time: Some(now.clone()),
                last_transition_time: Some(now),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

/// Creates the pools `names`, of `replicas` each, `parallel` at once.
async fn create_pools(
    api: &Api<NodePool>,
    names: &[String],
    replicas: i32,
    parallel: usize,
) -> Result<()> {
    create_all(names, parallel, |name| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &fixtures::nodepool(&name, replicas))
                .await
                .map(|_| ())
        }
    })
    .await
}

pub(crate) async fn create_all<F, Fut>(names: &[String], parallel: usize, create: F) -> Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = kube::Result<()>>,
{
    futures::stream::iter(names.iter().cloned().map(create))
        .buffer_unordered(parallel.max(1))
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Waits until every pool has `replicas` Ready nodes and reports it (and, with the
/// autoscaler, asks for that size and its Autoscaler says so); returns the progress.
async fn wait_converged(
    pools: &Store<NodePool>,
    autoscalers: &Store<Autoscaler>,
    scenario: Scenario,
    n: usize,
    replicas: i32,
    since: Instant,
    opts: &Options,
) -> Result<Vec<(f64, usize)>> {
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut progress = Vec::new();
    loop {
        let done = pools
            .state()
            .iter()
            .filter(|p| {
                let s = p.status.clone().unwrap_or_default();
                let pool_ok = p.spec.replicas == replicas
                    && s.ready_replicas == replicas
                    && s.replicas == replicas
                    && s.observed_generation == p.metadata.generation
                    && find(&s.conditions, "Ready").is_some_and(|c| c.reason == "NodesReady");
                let scaler_ok = scenario != Scenario::Both
                    || autoscalers
                        .get(&kube::runtime::reflector::ObjectRef::new(
                            p.metadata.name.as_deref().unwrap_or_default(),
                        ))
                        .and_then(|a| a.status.clone())
                        .is_some_and(|s| s.desired_replicas == Some(replicas));
                pool_ok && scaler_ok
            })
            .count();
        progress.push((since.elapsed().as_secs_f64(), done));
        if done == n {
            return Ok(progress);
        }
        if Instant::now() > deadline {
            bail!(
                "{done} of {n} pools converged after 600 s; logs in {}",
                opts.log_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub(crate) use test_support::requests::apiserver_requests;

const MUTATING: [&str; 6] = [
    "POST",
    "PUT",
    "PATCH",
    "APPLY",
    "DELETE",
    "DELETECOLLECTION",
];

/// Mutating requests between two scrapes, by `VERB resource`, Leases and Events apart.
pub fn mutating(
    before: &BTreeMap<(String, String), u64>,
    after: &BTreeMap<(String, String), u64>,
) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for ((verb, resource), count) in after {
        if !MUTATING.contains(&verb.as_str()) || resource == "leases" || resource == "events" {
            continue;
        }
        let delta =
            count.saturating_sub(*before.get(&(verb.clone(), resource.clone())).unwrap_or(&0));
        if delta > 0 {
            out.insert(format!("{verb} {resource}"), delta);
        }
    }
    out
}

pub(crate) fn leases(
    before: &BTreeMap<(String, String), u64>,
    after: &BTreeMap<(String, String), u64>,
) -> u64 {
    writes_of("leases", before, after)
}

/// Mutating requests on `resource` between two scrapes.
fn writes_of(
    resource: &str,
    before: &BTreeMap<(String, String), u64>,
    after: &BTreeMap<(String, String), u64>,
) -> u64 {
    after
        .iter()
        .filter(|((verb, r), _)| r == resource && MUTATING.contains(&verb.as_str()))
        .map(|(k, v)| v.saturating_sub(*before.get(k).unwrap_or(&0)))
        .sum()
}

/// An operator binary running as its own user, measured through /proc.
pub(crate) struct Process {
    pub(crate) name: &'static str,
    pub(crate) addr: String,
    child: tokio::process::Child,
    pub(crate) pid: u32,
    peak_rss_kb: u64,
}

impl Process {
    pub(crate) async fn start(
        name: &'static str,
        strategy: &str,
        cp: &ControlPlane,
        dirs: (&Path, &Path),
        scenario: &str,
    ) -> Result<Self> {
        let (bin_dir, log_dir) = dirs;
        let addr = format!("127.0.0.1:{}", test_support::control_plane::free_port()?);
        std::fs::create_dir_all(log_dir)?;
        let log = log_dir.join(format!("{scenario}-{strategy}-{name}.log"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = tokio::process::Command::new(bin_dir.join(name));
        cmd.args(["--conflict-strategy", strategy, "--metrics-addr", &addr])
            .args(["--log-format", "json", "--context", name])
            .env("KUBECONFIG", cp.kubeconfig())
            .env(
                "RUST_LOG",
                std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        if name == "nodepool-operator" {
            cmd.args(["--provisioning-delay-ms", "0"]);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin_dir.join(name).display()))?;
        let pid = child.id().context("no pid")?;
        let mut p = Self {
            name,
            addr: addr.clone(),
            child,
            pid,
            peak_rss_kb: 0,
        };
        test_support::wait_until_ready(name, &mut p.child, &addr, &log, Duration::from_secs(60))
            .await?;
        p.peak_rss_kb = proc_status_kb(pid, "VmHWM:").unwrap_or(0);
        Ok(p)
    }

    /// CPU seconds and peak RSS so far, then SIGTERM.
    pub(crate) async fn stop(mut self) -> Result<ProcessCost> {
        let cost = ProcessCost {
            cpu_seconds: cpu_seconds(self.pid).unwrap_or(0.0),
            peak_rss_mb: proc_status_kb(self.pid, "VmHWM:").unwrap_or(self.peak_rss_kb) as f64
                / 1024.0,
            rss_mb: proc_status_kb(self.pid, "VmRSS:").unwrap_or(0) as f64 / 1024.0,
        };
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(cost)
    }
}

/// `<name> <resource> <result>` -> count, from an operator's `*_writes_total` lines.
pub(crate) fn own_writes(name: &str, text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("_writes_total{")) {
        let Some((labels, value)) = line.split_once('{').and_then(|(_, r)| r.rsplit_once("} "))
        else {
            continue;
        };
        let label = |k: &str| test_support::requests::label(labels, k);
        let count: f64 = value.trim().parse().unwrap_or(0.0);
        *out.entry(format!("{name} {} {}", label("resource"), label("result")))
            .or_insert(0) += count as u64;
    }
    out
}

pub(crate) fn proc_status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// utime + stime of a process, in seconds (clock ticks of 1/100 s, as Linux reports them).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = text.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The table printed and written as `table.txt`: one row per scenario and strategy,
/// medians over repeats.
pub fn table(runs: &[Run]) -> String {
    let mut groups: BTreeMap<(String, String), Vec<&Run>> = BTreeMap::new();
    for r in runs {
        groups
            .entry((r.scenario.name().to_owned(), r.strategy.clone()))
            .or_default()
            .push(r);
    }
    let mut out = String::from(
        "scenario  strategy  pools  runs  converged_s  mutating  minimum  ratio  idle_mutating  idle_lease_writes  nodepool_cpu_s  nodepool_rss_mb  autoscaler_cpu_s  autoscaler_rss_mb  api_server_s  time_ratio\n",
    );
    let med = |rs: &[&Run], f: &dyn Fn(&Run) -> Option<f64>| {
        median(rs.iter().filter_map(|r| f(r)).collect())
            .map_or("-".to_owned(), |v| format!("{v:.1}"))
    };
    for ((scenario, strategy), rs) in &groups {
        let cost = |op: &'static str, rss: bool| {
            move |r: &Run| {
                r.operators
                    .get(op)
                    .map(|c| if rss { c.peak_rss_mb } else { c.cpu_seconds })
            }
        };
        out += &format!(
            "{scenario:<9} {strategy:<9} {:<6} {:<5} {:<12} {:<9} {:<8} {:<6} {:<14} {:<18} {:<15} {:<16} {:<17} {:<18} {:<13} {}\n",
            rs[0].pools,
            rs.len(),
            med(rs, &|r| r.converged_after_s),
            med(rs, &|r| Some(r.converge_total as f64)),
            rs[0].minimum,
            median(rs.iter().map(|r| r.ratio()).collect())
                .map_or("-".to_owned(), |v| format!("{v:.2}")),
            med(rs, &|r| Some(r.idle_total as f64)),
            med(rs, &|r| Some(r.idle_lease_writes as f64)),
            med(rs, &cost("nodepool-operator", false)),
            med(rs, &cost("nodepool-operator", true)),
            med(rs, &cost("autoscaler-operator", false)),
            med(rs, &cost("autoscaler-operator", true)),
            med(rs, &|r| r.api_server_s),
            median(rs.iter().filter_map(|r| r.time_ratio()).collect())
                .map_or("-".to_owned(), |v| format!("{v:.2}")),
        );
    }
    out
}

/// Per run: the mutating requests by verb and resource.
pub fn breakdown(runs: &[Run]) -> String {
    let mut out = String::new();
    for r in runs {
        out += &format!(
            "{} / {}: converging {} (minimum {}: {}; +{} Lease and {} Event writes); idle {} s: {} (+{} Lease writes)\n",
            r.scenario.name(),
            r.strategy,
            r.converge_total,
            r.minimum,
            r.minimum_explained,
            r.converge_lease_writes,
            r.converge_event_writes,
            r.idle_seconds,
            r.idle_total,
            r.idle_lease_writes
        );
        for (k, v) in &r.converge_requests {
            out += &format!("    converging  {k:<32} {v}\n");
        }
        for (k, v) in &r.idle_requests {
            out += &format!("    idle        {k:<32} {v}\n");
        }
        for (k, v) in &r.operator_writes {
            out += &format!("    operator    {k:<48} {v}\n");
        }
    }
    out
}

/// A self-contained SVG: pools converged over time, one line per run.
pub fn svg(runs: &[Run]) -> String {
    let (w, h, pad) = (720.0, 360.0, 50.0);
    let t_max = runs
        .iter()
        .flat_map(|r| r.progress.iter().map(|p| p.0))
        .fold(1.0_f64, f64::max);
    let n_max = runs.iter().map(|r| r.pools).max().unwrap_or(1) as f64;
    let colours = [
        "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
    ];
    let mut body = String::new();
    for (i, r) in runs.iter().enumerate() {
        let points: Vec<String> = r
            .progress
            .iter()
            .map(|(t, n)| {
                format!(
                    "{:.1},{:.1}",
                    pad + t / t_max * (w - 2.0 * pad),
                    h - pad - *n as f64 / n_max * (h - 2.0 * pad)
                )
            })
            .collect();
        let colour = colours[i % colours.len()];
        body += &format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n<text x=\"{}\" y=\"{}\" fill=\"{colour}\" font-size=\"12\">{} / {}</text>\n",
            points.join(" "),
            w - pad - 150.0,
            pad + 16.0 * i as f64,
            r.scenario.name(),
            r.strategy
        );
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" stroke=\"black\"/>\n<text x=\"{pad}\" y=\"{t}\" font-size=\"12\">seconds after the last object was created (0 to {t_max:.1})</text>\n<text x=\"5\" y=\"{pad}\" font-size=\"12\">{n_max}</text>\n<text x=\"5\" y=\"20\" font-size=\"13\">pools converged</text>\n{body}</svg>\n",
        b = h - pad,
        r = w - pad,
        t = h - 15.0,
    )
}

/// Writes `results.json`, `table.txt` and `converged.svg` into `dir`.
pub fn write_results(dir: &Path, runs: &[Run]) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(runs)?,
    )?;
    std::fs::write(
        dir.join("table.txt"),
        format!("{}\n{}", table(runs), breakdown(runs)),
    )?;
    std::fs::write(dir.join("converged.svg"), svg(runs))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutating_requests_leave_reads_and_leases_apart() {
        let after: BTreeMap<(String, String), u64> = [
            ("POST", "nodes", 2003),
            ("APPLY", "nodepools/status", 1000),
            ("PATCH", "leases", 500),
            ("POST", "events", 40),
            ("LIST", "nodes", 7),
        ]
        .into_iter()
        .map(|(verb, resource, n)| ((verb.to_owned(), resource.to_owned()), n))
        .collect();
        let m = mutating(&BTreeMap::new(), &after);
        assert_eq!(m["POST nodes"], 2003);
        assert_eq!(m["APPLY nodepools/status"], 1000);
        assert!(!m.contains_key("PATCH leases") && !m.contains_key("POST events"));
        assert!(!m.keys().any(|k| k.starts_with("LIST")));
        assert_eq!(leases(&BTreeMap::new(), &after), 500);
        assert_eq!(writes_of("events", &BTreeMap::new(), &after), 40);
        let mut later = after.clone();
        *later.get_mut(&("POST".into(), "nodes".into())).unwrap() += 5;
        assert_eq!(mutating(&after, &later)["POST nodes"], 5);
        assert_eq!(mutating(&after, &later).len(), 1);
    }

    #[test]
    fn an_operators_own_writes_are_summed_by_resource_and_result() {
        let text = r#"# TYPE nodepool_operator_writes_total counter
nodepool_operator_writes_total{resource="nodepools/status",strategy="apply",result="written"} 1000
nodepool_operator_writes_total{resource="nodepools/status",strategy="apply",result="unchanged"} 7
nodepool_operator_reconciles_total{controller="nodepool"} 9
"#;
        let writes = own_writes("nodepool-operator", text);
        assert_eq!(writes.len(), 2);
        assert_eq!(writes["nodepool-operator nodepools/status written"], 1000);
        assert_eq!(writes["nodepool-operator nodepools/status unchanged"], 7);
    }
}
