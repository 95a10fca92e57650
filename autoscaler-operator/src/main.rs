//! autoscaler-operator: parse the flags, run (see the library's documentation).
use clap::Parser;

// One thread: a reconcile waits on the API server, not on the CPU, and a second thread
// costs a malloc arena of its own for nothing (docs/scale.md).
#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    autoscaler_operator::Cli::parse()
        .run()
        .await
        .map_err(|e| anyhow::anyhow!(e))
}
