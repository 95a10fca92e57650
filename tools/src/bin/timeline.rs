//! `make timeline`: the cross-operator timeline of the talk, once per conflict strategy,
//! on a real API server, with a comparison table, a JSON file and a swimlane picture.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use test_support::ControlPlane;
use tools::report;
use tools::timeline::{self, Options};

#[derive(Parser)]
#[command(about = "Reproduce the two-operator conflict timeline with each strategy, measured")]
struct Cli {
    /// Strategies to run, in order.
    #[arg(long, value_delimiter = ',', default_value = "lazy,retry,apply")]
    strategies: Vec<String>,
    /// Use this cluster instead of starting a local control plane per strategy.
    #[arg(long, env = "TIMELINE_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Where the operator binaries are.
    #[arg(long, default_value = "target/debug")]
    bin_dir: PathBuf,
    /// Where results go (a folder per run is made inside).
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// Milliseconds between the third writer's writes (0: no third writer).
    #[arg(long, default_value_t = 150)]
    third_writer_ms: u64,
    /// Seconds the third writers go on, from the moment the demand appears.
    #[arg(long, default_value_t = 15)]
    third_writer_seconds: u64,
    /// Timeline lines printed per strategy (all are in the JSON file).
    #[arg(long, default_value_t = 40)]
    lines: usize,
    /// Change the pool's template once it has scaled up: nodepool-operator replaces every node
    /// while the autoscaler goes on deciding (`make timeline TIMELINE_ARGS=--rollout`).
    #[arg(long)]
    rollout: bool,
    /// Runs per strategy; the table shows medians (`make bench`: 3).
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let out = tools::results_dir(&cli.results, "timeline");
    std::fs::create_dir_all(&out)?;
    let mut options = Options::new(std::path::absolute(&cli.bin_dir)?, out.join("logs"));
    options.rollout = cli.rollout;
    options.contention_for = Duration::from_secs(cli.third_writer_seconds);
    options.contention =
        (cli.third_writer_ms > 0).then(|| Duration::from_millis(cli.third_writer_ms));

    let mut runs = Vec::new();
    let order = (0..cli.repeat.max(1)).flat_map(|_| cli.strategies.iter());
    for strategy in order {
        eprintln!("== --conflict-strategy {strategy}: starting a control plane and both operators");
        let cp = match &cli.kubeconfig {
            Some(path) => ControlPlane::external(path).await?,
            None => ControlPlane::start().await?,
        };
        let run = timeline::run(&cp, strategy, &options)
            .await
            .with_context(|| format!("scenario with --conflict-strategy {strategy}"))?;
        if runs.len() < cli.strategies.len() {
            // The first round's timelines; later rounds only feed the medians.
            print!("{}", report::timeline_text(&run, cli.lines));
            println!();
        }
        runs.push(run);
    }
    let table = report::comparison_table(&runs);
    println!("{table}");
    std::fs::write(
        out.join("timeline.json"),
        serde_json::to_string_pretty(&runs)?,
    )?;
    std::fs::write(out.join("timeline.svg"), report::swimlane_svg(&runs))?;
    let text: String = runs
        .iter()
        .map(|r| report::timeline_text(r, usize::MAX))
        .collect::<String>()
        + "\n"
        + &table;
    std::fs::write(out.join("timeline.txt"), text)?;
    println!(
        "wrote {0}/timeline.json, {0}/timeline.svg, {0}/timeline.txt",
        out.display()
    );
    if runs.iter().all(|r| r.final_ok()) {
        Ok(())
    } else {
        anyhow::bail!("a strategy did not converge to the right final state (see the table)")
    }
}
