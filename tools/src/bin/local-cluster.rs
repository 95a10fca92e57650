//! `make cluster-up` / `make cluster-down`: a persistent local control plane
//! (etcd + kube-apiserver, CRDs installed) that developers use like a kind cluster.
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use test_support::ControlPlane;

#[derive(Parser)]
#[command(about = "Start or stop the local control plane used for development and the demo")]
struct Cli {
    /// Where the control plane keeps its data, logs and pids.
    #[arg(long, env = "LOCAL_CLUSTER_DIR", default_value = ".kube/local")]
    dir: PathBuf,
    /// Where the kubeconfig goes (`export KUBECONFIG=<this>`).
    #[arg(long, env = "LOCAL_CLUSTER_KUBECONFIG", default_value = ".kube/config")]
    kubeconfig: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start it in the background (a no-op when it already runs).
    Up,
    /// Stop it and remove its data.
    Down,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let dir = std::path::absolute(&cli.dir)?;
    match cli.command {
        Cmd::Up => {
            if running(&dir) {
                eprintln!(
                    "local control plane already running; KUBECONFIG={}",
                    cli.kubeconfig.display()
                );
                return Ok(());
            }
            ControlPlane::stop_detached(&dir)?;
            let cp = ControlPlane::start_detached(&dir)
                .await
                .context("starting the control plane")?;
            if let Some(parent) = cli.kubeconfig.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(cp.kubeconfig(), &cli.kubeconfig)?;
            cp.detach();
            eprintln!(
                "local control plane is up (data and logs in {}).\n  export KUBECONFIG={}",
                dir.display(),
                std::path::absolute(&cli.kubeconfig)?.display()
            );
        }
        Cmd::Down => {
            if !dir.exists() {
                eprintln!("no local control plane in {}", dir.display());
                return Ok(());
            }
            ControlPlane::stop_detached(&dir)?;
            if cli.kubeconfig.exists() {
                std::fs::remove_file(&cli.kubeconfig)?;
            }
            if running(&dir) {
                bail!("processes of {} still running", dir.display());
            }
            eprintln!("local control plane stopped and removed");
        }
    }
    Ok(())
}

/// Whether every recorded process is alive.
fn running(dir: &std::path::Path) -> bool {
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
    !pids.trim().is_empty()
        && pids
            .split_whitespace()
            .all(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
}
