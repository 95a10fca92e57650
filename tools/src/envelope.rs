//! `make bench-envelope`: one big Deployment onto one pool, on the full local control
//! plane (kube-scheduler and kube-controller-manager, their client limits raised alike in
//! both runs), with both operators as release binaries under their chart identities.
//!
//! - **The limit run**: the pool already at its final size, no Autoscaler. The time from
//!   the Deployment's creation to all its pods Running is what the control plane itself
//!   needs: the ReplicaSet controller creates the pods, the scheduler binds them,
//!   nodepool-operator (the kubelet part) reports them Running.
//! - **The autoscaled run**: the same pool at 1 node with an Autoscaler (1 to 2,000,
//!   target 100%), the same Deployment. Then the Deployment goes to 0 and the pool back to
//!   its minimum.
//!
//! Pods are alike (1 cpu on 8-cpu nodes), so `R` nodes hold the first `8R` pods created.
//! A pod's decision latency is from the moment the bench's watch saw it `PodScheduled=False
//! Unschedulable` to the moment it saw the first `spec.replicas` that holds it (0 if the
//! pool had already asked for room for it). It asserts nothing about time.
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde::Serialize;
use shared_crd::{Autoscaler, NodeCapacity, NodePool, PolicyType, ScalingRules};
use test_support::control_plane::ClientLimits;
use test_support::{ControlPlane, fixtures, http_get};

use crate::report::median;
use crate::scale::{
    Process, ProcessCost, apiserver_requests, leases, mutating, own_writes, proc_status_kb,
};

/// The pool's name in every run.
pub const POOL: &str = "envelope";
/// The Deployment's name.
pub const APP: &str = "load";

/// Settings of a benchmark.
#[derive(Clone, Debug)]
pub struct Options {
    pub bin_dir: PathBuf,
    pub log_dir: PathBuf,
    /// Pods in the Deployment.
    pub pods: usize,
    /// CPUs per node (pods ask for 1 each).
    pub node_cpu: u32,
    /// kube-scheduler's and kube-controller-manager's client limits.
    pub limits: ClientLimits,
    /// The Autoscaler's scale-down stabilization window.
    pub scale_down_window: Duration,
    /// Idle measured after convergence.
    pub idle: Duration,
    /// How long any one phase may take before the run fails.
    pub deadline: Duration,
}

impl Options {
    /// The pool's final size: every pod on a node of its own share.
    pub fn nodes(&self) -> i32 {
        self.pods.div_ceil(self.node_cpu as usize) as i32
    }
}

/// Which run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Limit,
    Autoscaled,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Limit => "limit",
            Kind::Autoscaled => "autoscaled",
        }
    }
}

/// One point of the plot, seconds after the Deployment was created.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Sample {
    pub t: f64,
    pub pending: usize,
    pub running: usize,
    pub desired: i32,
    pub ready: i32,
}

/// The Deployment at 0 and the pool back at its minimum.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleIn {
    /// Seconds from the Deployment's `replicas: 0` to the pool at its minimum, every node
    /// but those gone.
    pub to_minimum_s: f64,
    pub window_s: u64,
    pub evictions: u64,
    pub node_deletes: u64,
    pub replicas_writes: usize,
}

/// One measured run.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub kind: Kind,
    pub pods: usize,
    pub nodes: i32,
    pub limits: ClientLimits,
    /// Seconds from the Deployment's creation to all its pods Running.
    pub all_running_s: f64,
    /// Seconds from the Deployment's creation to the pool holding its final number of
    /// Ready nodes.
    pub nodes_ready_s: Option<f64>,
    /// Decision latency over the pods that were ever Unschedulable, in seconds.
    pub pending_pods: usize,
    pub latency_p50_s: Option<f64>,
    pub latency_p99_s: Option<f64>,
    /// `spec.replicas` changes the watch saw during the scale-out, and the seconds from the
    /// first Unschedulable pod to the last of them.
    pub replicas_writes: usize,
    pub scale_out_s: Option<f64>,
    /// Mutating requests while converging, by `VERB resource` (Leases and Events apart).
    pub converge_requests: BTreeMap<String, u64>,
    pub converge_total: u64,
    pub node_creates: u64,
    pub idle_requests: BTreeMap<String, u64>,
    pub idle_total: u64,
    pub idle_seconds: u64,
    pub idle_lease_writes: u64,
    pub operators: BTreeMap<String, ProcessCost>,
    /// Growth of each operator's RSS from before the Deployment to its end, per pod and
    /// per node made (an upper bound on what one cached object costs).
    pub rss_growth_mb: BTreeMap<String, f64>,
    pub operator_writes: BTreeMap<String, u64>,
    pub reconciles: BTreeMap<String, u64>,
    pub scale_in: Option<ScaleIn>,
    pub samples: Vec<Sample>,
}

/// What the bench's watches saw, with the time they saw it.
#[derive(Default)]
struct Seen {
    /// Pod uid -> first seen, first seen Unschedulable, first seen Running.
    created: HashMap<String, f64>,
    unschedulable: HashMap<String, f64>,
    running: HashMap<String, f64>,
    /// (time, spec.replicas) at each change.
    replicas: Vec<(f64, i32)>,
    /// (time, status.readyReplicas) at each change.
    ready: Vec<(f64, i32)>,
}

fn unschedulable(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })
}

fn running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// The pool every run uses: 8-cpu nodes (`node_cpu`), 64Gi, 110 pods.
pub fn pool(opts: &Options, replicas: i32) -> NodePool {
    let mut p = fixtures::nodepool(POOL, replicas);
    p.spec.template.capacity = NodeCapacity {
        cpu: Quantity(opts.node_cpu.to_string()),
        memory: Quantity("64Gi".into()),
        pods: Quantity("110".into()),
    };
    p
}

/// The Autoscaler of the autoscaled run: 1 to 2,000 nodes at 100%, allowed to grow by
/// its whole range at once (the HPA's default, 4 nodes or 100% per 15 s, would take
/// eleven periods from 1 to 1,250 nodes), and the configured scale-down window.
pub fn autoscaler(opts: &Options) -> Autoscaler {
    let mut a = fixtures::autoscaler(POOL, POOL, 1, 2000);
    a.spec.target_utilization = 100;
    a.spec.behavior.scale_up = ScalingRules::default().with_policy(PolicyType::Nodes, 2000, 15);
    a.spec.behavior.scale_down = ScalingRules::window(opts.scale_down_window.as_secs() as i32);
    a
}

/// Runs one kind on a fresh control plane.
pub async fn run(kind: Kind, opts: &Options) -> Result<Run> {
    let cp = ControlPlane::start_full_with(opts.limits).await?;
    let client = cp.client().await?;
    let pools: Api<NodePool> = Api::all(client.clone());
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let label = format!("{}-{}", kind.name(), opts.pods);
    let mut operators = Vec::new();
    for name in ["nodepool-operator", "autoscaler-operator"] {
        operators.push(
            Process::start(name, "apply", &cp, (&opts.bin_dir, &opts.log_dir), &label).await?,
        );
    }
    let nodes = opts.nodes();
    let start_at = if kind == Kind::Limit { nodes } else { 1 };
    pools
        .create(&PostParams::default(), &pool(opts, start_at))
        .await?;
    if kind == Kind::Autoscaled {
        Api::<Autoscaler>::all(client.clone())
            .create(&PostParams::default(), &autoscaler(opts))
            .await?;
    }

    let seen = Arc::new(Mutex::new(Seen::default()));
    let t0 = Arc::new(Mutex::new(Instant::now()));
    let (pod_store, pods_w) = reflector::store();
    let (pool_store, pools_w) = reflector::store();
    let since = {
        let t0 = t0.clone();
        move || t0.lock().unwrap().elapsed().as_secs_f64()
    };
    let watches = {
        let (seen_pods, seen_pools) = (seen.clone(), seen.clone());
        let (since_pods, since_pools) = (since.clone(), since.clone());
        tokio::spawn(futures::future::join(
            watcher(pods_api.clone(), watcher::Config::default())
                .default_backoff()
                .reflect(pods_w)
                .applied_objects()
                .for_each(move |pod| {
                    if let Ok(pod) = pod {
                        let t = since_pods();
                        let uid = pod.metadata.uid.clone().unwrap_or_default();
                        let mut s = seen_pods.lock().unwrap();
                        s.created.entry(uid.clone()).or_insert(t);
                        if unschedulable(&pod) {
                            s.unschedulable.entry(uid.clone()).or_insert(t);
                        }
                        if running(&pod) {
                            s.running.entry(uid).or_insert(t);
                        }
                    }
                    async {}
                }),
            watcher(pools.clone(), watcher::Config::default())
                .default_backoff()
                .reflect(pools_w)
                .applied_objects()
                .for_each(move |p: Result<NodePool, watcher::Error>| {
                    if let Ok(p) = p {
                        let t = since_pools();
                        let ready = p.status.as_ref().map_or(0, |s| s.ready_replicas);
                        let mut s = seen_pools.lock().unwrap();
                        if s.replicas.last().map(|l| l.1) != Some(p.spec.replicas) {
                            s.replicas.push((t, p.spec.replicas));
                        }
                        if s.ready.last().map(|l| l.1) != Some(ready) {
                            s.ready.push((t, ready));
                        }
                    }
                    async {}
                }),
        ))
    };
    let sample = |t: f64| {
        let pods = pod_store.state();
        let p = pool_store.get(&ObjectRef::new(POOL));
        Sample {
            t,
            pending: pods.iter().filter(|p| unschedulable(p)).count(),
            running: pods.iter().filter(|p| running(p)).count(),
            desired: p.as_ref().map_or(0, |p| p.spec.replicas),
            ready: p
                .as_ref()
                .and_then(|p| p.status.as_ref())
                .map_or(0, |s| s.ready_replicas),
        }
    };
    let deadline = opts.deadline;
    wait(deadline, "the pool at its starting size", || {
        let s = sample(0.0);
        s.desired == start_at && s.ready == start_at
    })
    .await
    .with_context(|| format!("setting up; logs in {}", opts.log_dir.display()))?;
    // Let set-up writes land before counting.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = apiserver_requests(&client).await?;
    let rss_before: Vec<u64> = operators
        .iter()
        .map(|o| proc_status_kb(o.pid, "VmRSS:").unwrap_or(0))
        .collect();

    *t0.lock().unwrap() = Instant::now();
    seen.lock().unwrap().replicas.clear();
    deployments
        .create(
            &PostParams::default(),
            &fixtures::deployment(APP, POOL, opts.pods as i32, "1", "64Mi"),
        )
        .await?;
    let mut samples = Vec::new();
    let started = Instant::now();
    loop {
        let s = sample(since());
        samples.push(s);
        if s.running == opts.pods && s.desired == nodes && s.ready == nodes {
            break;
        }
        if started.elapsed() > deadline {
            bail!(
                "{label}: after {deadline:?}, {} of {} pods Running, pool at {} ready of {} desired ({nodes} wanted); logs in {}",
                s.running,
                opts.pods,
                s.ready,
                s.desired,
                opts.log_dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Late writes of convergence land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = apiserver_requests(&client).await?;
    let rss_growth_mb = operators
        .iter()
        .zip(&rss_before)
        .map(|(o, b)| {
            let now = proc_status_kb(o.pid, "VmRSS:").unwrap_or(0);
            (o.name.to_owned(), now.saturating_sub(*b) as f64 / 1024.0)
        })
        .collect();
    let (all_running_s, nodes_ready_s, latencies, writes, scale_out_s) = {
        let s = seen.lock().unwrap();
        let all_running = s.running.values().copied().fold(0.0, f64::max);
        let nodes_ready = s.ready.iter().find(|r| r.1 >= nodes).map(|r| r.0);
        let mut created: Vec<f64> = s.created.values().copied().collect();
        created.sort_by(f64::total_cmp);
        let pending: Vec<(f64, f64)> = s
            .unschedulable
            .iter()
            .filter_map(|(uid, t)| s.created.get(uid).map(|c| (*c, *t)))
            .collect();
        let lat = decision_latencies(&created, &pending, &s.replicas, opts.node_cpu);
        let first_pending = s.unschedulable.values().copied().fold(f64::MAX, f64::min);
        let last_write = s.replicas.last().map(|w| w.0);
        let scale_out = last_write
            .filter(|_| first_pending < f64::MAX)
            .map(|w| (w - first_pending).max(0.0));
        (all_running, nodes_ready, lat, s.replicas.len(), scale_out)
    };
    let converge_requests = mutating(&before, &after);
    tokio::time::sleep(opts.idle).await;
    let idle_after = apiserver_requests(&client).await?;
    let idle_requests = mutating(&after, &idle_after);

    let scale_in = if kind == Kind::Autoscaled {
        let before = apiserver_requests(&client).await?;
        let writes_before = seen.lock().unwrap().replicas.len();
        let t = Instant::now();
        deployments
            .patch(
                APP,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
            )
            .await?;
        wait(
            opts.scale_down_window + deadline,
            "the pool back at 1 node",
            || {
                let p = pool_store.get(&ObjectRef::new(POOL));
                p.is_some_and(|p| {
                    let s = p.status.clone().unwrap_or_default();
                    p.spec.replicas == 1 && s.replicas == 1 && s.ready_replicas == 1
                })
            },
        )
        .await
        .with_context(|| format!("{label}: scale-in; logs in {}", opts.log_dir.display()))?;
        let to_minimum_s = t.elapsed().as_secs_f64();
        let after = apiserver_requests(&client).await?;
        let m = mutating(&before, &after);
        Some(ScaleIn {
            to_minimum_s,
            window_s: opts.scale_down_window.as_secs(),
            evictions: m.get("POST pods/eviction").copied().unwrap_or(0),
            node_deletes: m.get("DELETE nodes").copied().unwrap_or(0),
            replicas_writes: seen.lock().unwrap().replicas.len() - writes_before,
        })
    } else {
        None
    };

    let mut costs = BTreeMap::new();
    let mut operator_writes = BTreeMap::new();
    let mut reconciles = BTreeMap::new();
    for op in operators {
        if let Ok(text) = http_get(&op.addr, "/metrics") {
            operator_writes.extend(own_writes(op.name, &text));
            reconciles.extend(reconcile_counts(&text));
        }
        costs.insert(op.name.to_owned(), op.stop().await?);
    }
    watches.abort();
    drop(cp);
    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(Run {
        kind,
        pods: opts.pods,
        nodes,
        limits: opts.limits,
        all_running_s,
        nodes_ready_s,
        pending_pods: latencies.len(),
        latency_p50_s: percentile(&sorted, 0.50),
        latency_p99_s: percentile(&sorted, 0.99),
        replicas_writes: writes,
        scale_out_s,
        node_creates: converge_requests.get("POST nodes").copied().unwrap_or(0),
        converge_total: converge_requests.values().sum(),
        converge_requests,
        idle_total: idle_requests.values().sum(),
        idle_requests,
        idle_seconds: opts.idle.as_secs(),
        idle_lease_writes: leases(&after, &idle_after),
        operators: costs,
        rss_growth_mb,
        operator_writes,
        reconciles,
        scale_in,
        samples,
    })
}

async fn wait(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            bail!("not {what} after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Each pod's decision latency, for the pods that were ever Unschedulable.
/// - `created`: when each pod was first seen, sorted;
/// - `pending`: (first seen, first seen Unschedulable) of each pod that was;
/// - `replicas`: (time, `spec.replicas`) at each change, in time order;
/// - `per_node`: pods one node holds.
///
/// Pods are alike, so `R` nodes hold the first `per_node * R` pods created: a pod created
/// `k`-th (from 1) has room once `spec.replicas >= ceil(k / per_node)`. Its latency is from
/// its Unschedulable to the first such size at or after it, or 0 if the size already
/// held it (the room was asked for, the node was not there yet).
pub fn decision_latencies(
    created: &[f64],
    pending: &[(f64, f64)],
    replicas: &[(f64, i32)],
    per_node: u32,
) -> Vec<f64> {
    pending
        .iter()
        .filter_map(|(first_seen, unschedulable)| {
            let rank = created.partition_point(|t| *t <= *first_seen).max(1);
            let needs = rank.div_ceil(per_node as usize) as i32;
            // The size when it became Unschedulable, then the first change that holds it.
            let at = replicas.partition_point(|w| w.0 <= *unschedulable);
            if at > 0 && replicas[at - 1].1 >= needs {
                return Some(0.0);
            }
            replicas[at..]
                .iter()
                .find(|w| w.1 >= needs)
                .map(|w| w.0 - unschedulable)
        })
        .collect()
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// `<controller>` -> reconciles, from an operator's `*_reconciles_total` lines.
fn reconcile_counts(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("reconciles_total{")) {
        let Some((labels, value)) = line.split_once('{').and_then(|(_, r)| r.rsplit_once("} "))
        else {
            continue;
        };
        let controller = labels
            .split(',')
            .find_map(|kv| kv.strip_prefix("controller=\""))
            .map(|v| v.trim_end_matches('"').to_owned())
            .unwrap_or_default();
        let count: f64 = value.trim().parse().unwrap_or(0.0);
        *out.entry(controller).or_insert(0) += count as u64;
    }
    out
}

/// The table for one pod count: the limit runs beside the autoscaled ones, each cell the
/// median over that kind's runs, the ratio that of the two medians.
pub fn table(runs: &[Run]) -> String {
    let of = |kind| runs.iter().filter(|r| r.kind == kind).collect::<Vec<_>>();
    let (limit, auto) = (of(Kind::Limit), of(Kind::Autoscaled));
    let med = |rs: &[&Run], get: &dyn Fn(&Run) -> Option<f64>| {
        median(rs.iter().filter_map(|r| get(r)).collect())
    };
    let f = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    let mut out = String::new();
    let Some(any) = runs.first() else {
        return out;
    };
    out += &format!(
        "{} pods of 1 cpu, {} nodes; kube-scheduler and kube-controller-manager at {} QPS (burst {}); medians over the runs\n",
        any.pods, any.nodes, any.limits.qps, any.limits.burst
    );
    out += "figure                                   limit      autoscaled\n";
    let pair = |name: &str, l: String, a: String| format!("{name:<40} {l:<10} {a}\n");
    let row = |name: &str, digits: usize, get: &dyn Fn(&Run) -> Option<f64>| {
        pair(
            name,
            f(med(&limit, get), digits),
            f(med(&auto, get), digits),
        )
    };
    let count = |v: u64| Some(v as f64);
    out += &pair("runs", limit.len().to_string(), auto.len().to_string());
    let running = |r: &Run| Some(r.all_running_s);
    out += &row("all pods Running (s)", 1, &running);
    let ratio = med(&auto, &running)
        .zip(med(&limit, &running))
        .map(|(a, l)| a / l.max(0.001));
    out += &pair("  ratio to the limit run", "1.00".into(), f(ratio, 2));
    out += &row("final Ready nodes (s)", 1, &|r| r.nodes_ready_s);
    out += &row("pods ever Unschedulable", 0, &|r| {
        count(r.pending_pods as u64)
    });
    out += &row("decision latency p50 (s)", 2, &|r| r.latency_p50_s);
    out += &row("decision latency p99 (s)", 2, &|r| r.latency_p99_s);
    out += &row("spec.replicas writes", 0, &|r| {
        count(r.replicas_writes as u64)
    });
    out += &row("  over the scale-out (s)", 1, &|r| r.scale_out_s);
    out += &row("node creates", 0, &|r| count(r.node_creates));
    out += &row("mutating requests (Leases apart)", 0, &|r| {
        count(r.converge_total)
    });
    let idle = format!("idle mutating requests (in {} s)", any.idle_seconds);
    out += &row(&idle, 0, &|r| count(r.idle_total));
    for op in ["autoscaler-operator", "nodepool-operator"] {
        let cost = |rss: bool| {
            move |r: &Run| {
                r.operators
                    .get(op)
                    .map(|c| if rss { c.peak_rss_mb } else { c.cpu_seconds })
            }
        };
        out += &row(&format!("{op} CPU (s)"), 1, &cost(false));
        out += &row(&format!("{op} peak RSS (MB)"), 1, &cost(true));
        out += &row(&format!("{op} RSS growth / pod (bytes)"), 0, &|r| {
            r.rss_growth_mb
                .get(op)
                .map(|mb| mb * 1024.0 * 1024.0 / r.pods as f64)
        });
    }
    for s in auto.iter().filter_map(|a| a.scale_in.as_ref()) {
        out += &format!(
            "scale to 0: pool at its minimum after {:.1} s (window {} s), {} evictions, {} node deletes, {} spec.replicas writes\n",
            s.to_minimum_s, s.window_s, s.evictions, s.node_deletes, s.replicas_writes
        );
    }
    for r in runs {
        out += &format!(
            "{} run, mutating requests while converging:\n",
            r.kind.name()
        );
        for (k, v) in &r.converge_requests {
            out += &format!("    {k:<32} {v}\n");
        }
        for (k, v) in &r.idle_requests {
            out += &format!("    idle {k:<27} {v}\n");
        }
        for (k, v) in &r.operator_writes {
            out += &format!("    operator {k:<48} {v}\n");
        }
        for (k, v) in &r.reconciles {
            out += &format!("    reconciles {k:<30} {v}\n");
        }
    }
    out
}

/// A self-contained SVG of the autoscaled run (and the limit run's Running pods, dashed):
/// pending and Running pods, desired and Ready nodes (nodes scaled to pods per node).
pub fn svg(runs: &[Run], per_node: u32) -> String {
    let (w, h, pad) = (760.0, 380.0, 50.0);
    let t_max = runs
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| s.t))
        .fold(1.0_f64, f64::max);
    let y_max = runs.iter().map(|r| r.pods).max().unwrap_or(1) as f64;
    let x = |t: f64| pad + t / t_max * (w - 2.0 * pad);
    let y = |v: f64| h - pad - v / y_max * (h - 2.0 * pad);
    let line = |r: &Run, get: &dyn Fn(&Sample) -> f64, colour: &str, dash: &str| {
        let points: Vec<String> = r
            .samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.t), y(get(s))))
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" {dash} points=\"{}\"/>\n",
            points.join(" ")
        )
    };
    let mut body = String::new();
    let per = per_node as f64;
    let legend = [
        ("pending pods", "#d62728"),
        ("Running pods", "#2ca02c"),
        ("desired nodes x pods per node", "#1f77b4"),
        ("Ready nodes x pods per node", "#ff7f0e"),
        ("Running pods, limit run", "#7f7f7f"),
    ];
    for r in runs {
        if r.kind == Kind::Autoscaled {
            body += &line(r, &|s| s.pending as f64, legend[0].1, "");
            body += &line(r, &|s| s.running as f64, legend[1].1, "");
            body += &line(r, &|s| s.desired as f64 * per, legend[2].1, "");
            body += &line(r, &|s| s.ready as f64 * per, legend[3].1, "");
        } else {
            body += &line(
                r,
                &|s| s.running as f64,
                legend[4].1,
                "stroke-dasharray=\"6 4\"",
            );
        }
    }
    for (i, (name, colour)) in legend.iter().enumerate() {
        body += &format!(
            "<text x=\"{}\" y=\"{}\" fill=\"{colour}\" font-size=\"12\">{name}</text>\n",
            w - pad - 210.0,
            pad + 16.0 * i as f64 + 140.0
        );
    }
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"black\"/>\n<line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" stroke=\"black\"/>\n<text x=\"{pad}\" y=\"{t}\" font-size=\"12\">seconds after the Deployment was created (0 to {t_max:.1})</text>\n<text x=\"5\" y=\"{pad}\" font-size=\"12\">{y_max}</text>\n<text x=\"5\" y=\"20\" font-size=\"13\">{y_max} pods onto one pool</text>\n{body}</svg>\n",
        b = h - pad,
        r = w - pad,
        t = h - 15.0,
    )
}

/// Writes `results.json`, `table-<pods>.txt` and `envelope-<pods>.svg` into `dir`.
pub fn write_results(dir: &Path, runs: &[Run], per_node: u32) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(runs)?,
    )?;
    let mut counts: Vec<usize> = runs.iter().map(|r| r.pods).collect();
    counts.dedup();
    for n in counts {
        let these: Vec<Run> = runs.iter().filter(|r| r.pods == n).cloned().collect();
        std::fs::write(dir.join(format!("table-{n}.txt")), table(&these))?;
        std::fs::write(dir.join(format!("envelope-{n}.svg")), svg(&these, per_node))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_to_the_first_size_that_holds_the_pod() {
        // Four pods created at 0, 0.1, 0.2, 0.3; two per node; the pool at 1 node.
        let created = [0.0, 0.1, 0.2, 0.3];
        let replicas = [(0.0, 1), (1.5, 2)];
        // Pod 3 and pod 4 need 2 nodes; pods 1 and 2 fit on 1.
        let pending = [(0.2, 0.5), (0.3, 0.7), (0.1, 0.9)];
        assert_eq!(
            decision_latencies(&created, &pending, &replicas, 2),
            vec![1.0, 0.8, 0.0]
        );
        // A size already asked for before the pod was Unschedulable costs it nothing.
        assert_eq!(
            decision_latencies(&created, &[(0.3, 2.0)], &replicas, 2),
            vec![0.0]
        );
        // A pod never given room has no latency (it is left out, not counted as 0).
        assert!(decision_latencies(&created, &[(0.3, 0.4)], &[(0.0, 1)], 2).is_empty());
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[3.0], 0.99), Some(3.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    fn measured(kind: Kind, all_running_s: f64, nodepool_rss_mb: f64) -> Run {
        let cost = ProcessCost {
            peak_rss_mb: nodepool_rss_mb,
            ..Default::default()
        };
        Run {
            kind,
            pods: 10,
            nodes: 2,
            limits: ClientLimits {
                qps: 500,
                burst: 1000,
            },
            all_running_s,
            nodes_ready_s: None,
            pending_pods: 0,
            latency_p50_s: None,
            latency_p99_s: None,
            replicas_writes: 0,
            scale_out_s: None,
            converge_requests: BTreeMap::new(),
            converge_total: 0,
            node_creates: 0,
            idle_requests: BTreeMap::new(),
            idle_total: 0,
            idle_seconds: 5,
            idle_lease_writes: 0,
            operators: BTreeMap::from([("nodepool-operator".to_owned(), cost)]),
            rss_growth_mb: BTreeMap::new(),
            operator_writes: BTreeMap::new(),
            reconciles: BTreeMap::new(),
            scale_in: None,
            samples: Vec::new(),
        }
    }

    #[test]
    fn the_table_shows_medians_per_kind_and_the_ratio_of_the_medians() {
        // Interleaved as the bench runs them; the slow outliers do not move a median.
        let runs = [
            measured(Kind::Limit, 10.0, 50.0),
            measured(Kind::Autoscaled, 11.0, 40.0),
            measured(Kind::Limit, 30.0, 52.0),
            measured(Kind::Autoscaled, 99.0, 41.0),
            measured(Kind::Limit, 12.0, 51.0),
            measured(Kind::Autoscaled, 13.2, 90.0),
        ];
        let table = table(&runs);
        let line = |name: &str| {
            table
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_else(|| panic!("no {name:?} in\n{table}"))
                .split_whitespace()
                .rev()
                .take(2)
                .collect::<Vec<_>>()
        };
        assert_eq!(line("runs"), ["3", "3"]);
        assert_eq!(line("all pods Running (s)"), ["13.2", "12.0"]);
        assert_eq!(line("  ratio to the limit run"), ["1.10", "1.00"]);
        assert_eq!(line("nodepool-operator peak RSS (MB)"), ["41.0", "51.0"]);
        assert_eq!(line("autoscaler-operator peak RSS (MB)"), ["-", "-"]);
    }
}
