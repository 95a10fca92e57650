//! `make bench-scale`: both operators at scale, measured by the API server (see `tools::scale`).
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;
use tools::scale::{self, Options, Scenario};

#[derive(Parser)]
#[command(about = "NodePools at scale: requests, idle writes, convergence, CPU and memory")]
struct Cli {
    /// Pools per run.
    #[arg(long, default_value_t = 1000)]
    pools: usize,
    /// Scenarios, in order: pools (nodepool-operator alone), both, standing (the pools
    /// there before nodepool-operator starts).
    #[arg(long, value_delimiter = ',', default_value = "pools,both,standing")]
    scenarios: Vec<String>,
    /// Conflict strategies, in order.
    #[arg(long, value_delimiter = ',', default_value = "apply,retry,lazy")]
    strategies: Vec<String>,
    /// Runs per scenario and strategy; the table shows medians.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Seconds of idle measured after convergence.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    /// Objects created at once.
    #[arg(long, default_value_t = 16)]
    parallel: usize,
    /// Where the operator binaries are (a release build, for figures worth quoting).
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    #[arg(long, default_value = "results")]
    results: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let out = tools::results_dir(&cli.results, "scale");
    let opts = Options {
        bin_dir: std::path::absolute(&cli.bin_dir)?,
        log_dir: out.join("logs"),
        pools: cli.pools,
        idle: Duration::from_secs(cli.idle_seconds),
        parallel: cli.parallel,
    };
    let mut runs = Vec::new();
    for _ in 0..cli.repeat.max(1) {
        for scenario in &cli.scenarios {
            let scenario = Scenario::parse(scenario)?;
            for strategy in &cli.strategies {
                eprintln!(
                    "== {} / {strategy}: {} pools on a fresh control plane",
                    scenario.name(),
                    cli.pools
                );
                let run = scale::run(scenario, strategy, &opts).await?;
                if let (Some(limit), Some(ratio)) = (run.api_server_s, run.time_ratio()) {
                    eprintln!(
                        "   the API server's own time for {} node creates, {} at once: {limit:.1} s; the operator took x{ratio:.2} of it from its start",
                        run.minimum, cli.parallel
                    );
                }
                eprintln!(
                    "   converged {:?} s after the last create (standing: after the start); {} mutating requests (minimum {}, ratio {:.2}); {} in {} s of idle (+{} Lease writes)",
                    run.converged_after_s.map(|s| (s * 10.0).round() / 10.0),
                    run.converge_total,
                    run.minimum,
                    run.ratio(),
                    run.idle_total,
                    run.idle_seconds,
                    run.idle_lease_writes
                );
                runs.push(run);
                scale::write_results(&out, &runs)?;
            }
        }
    }
    println!("{}", scale::table(&runs));
    println!("{}", scale::breakdown(&runs));
    println!("results in {}", out.display());
    Ok(())
}
