//! `make bench-envelope`: one big Deployment onto one pool, autoscaled against the
//! control plane's own limit (see `tools::envelope`).
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use test_support::control_plane::ClientLimits;
use tools::envelope::{self, Kind, Options};

#[derive(Parser)]
#[command(about = "N pods onto one pool: onto nodes that exist (the limit) and autoscaled")]
struct Cli {
    /// Pod counts, one limit run and one autoscaled run each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pods: Vec<usize>,
    /// Which runs, in order, for each pod count: limit, autoscaled.
    #[arg(long, value_delimiter = ',', default_value = "limit,autoscaled")]
    kinds: Vec<String>,
    /// Runs of each kind, interleaved; the table shows medians, `results.json` has every run.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// CPUs per node; each pod asks for 1.
    #[arg(long, default_value_t = 8)]
    node_cpu: u32,
    /// kube-scheduler's and kube-controller-manager's `--kube-api-qps` (defaults 50 and 20).
    #[arg(long, default_value_t = 500)]
    qps: u32,
    /// Their `--kube-api-burst`.
    #[arg(long, default_value_t = 1000)]
    burst: u32,
    /// The Autoscaler's scale-down stabilization window, in seconds.
    #[arg(long, default_value_t = 60)]
    scale_down_window: u64,
    /// Seconds of idle measured after convergence.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    /// Where the operator binaries are (a release build, for figures worth quoting).
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    #[arg(long, default_value = "results")]
    results: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let out = tools::results_dir(&cli.results, "envelope");
    let mut runs = Vec::new();
    for pods in &cli.pods {
        let opts = Options {
            bin_dir: std::path::absolute(&cli.bin_dir)?,
            log_dir: out.join("logs"),
            pods: *pods,
            node_cpu: cli.node_cpu,
            limits: ClientLimits {
                qps: cli.qps,
                burst: cli.burst,
            },
            scale_down_window: Duration::from_secs(cli.scale_down_window),
            idle: Duration::from_secs(cli.idle_seconds),
            deadline: Duration::from_secs(600),
        };
        let kinds = cli
            .kinds
            .iter()
            .map(|k| match k.as_str() {
                "limit" => Ok(Kind::Limit),
                "autoscaled" => Ok(Kind::Autoscaled),
                other => Err(anyhow::anyhow!(
                    "unknown kind {other:?} (limit, autoscaled)"
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        // Interleaved (limit, autoscaled, limit, ...): a machine that slows down over the
        // runs slows both kinds alike.
        for kind in (0..cli.repeat.max(1)).flat_map(|_| kinds.iter().copied()) {
            eprintln!(
                "== {} run: {pods} pods, {} nodes, on a fresh control plane (scheduler and controller-manager at {} QPS, burst {})",
                kind.name(),
                opts.nodes(),
                cli.qps,
                cli.burst
            );
            let run = envelope::run(kind, &opts).await?;
            eprintln!(
                "   all Running after {:.1} s; {} spec.replicas writes; {} in {} s of idle",
                run.all_running_s, run.replicas_writes, run.idle_total, run.idle_seconds
            );
            runs.push(run);
            envelope::write_results(&out, &runs, cli.node_cpu)?;
        }
        let these: Vec<_> = runs.iter().filter(|r| r.pods == *pods).cloned().collect();
        println!("{}", envelope::table(&these));
    }
    println!("results in {}", out.display());
    Ok(())
}
