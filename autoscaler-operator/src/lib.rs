//! autoscaler-operator: sizes each NodePool that an Autoscaler targets from the demand of
//! the pods that want the pool, and writes the pool's `spec.replicas`.
#![forbid(unsafe_code)]

pub mod caches;
pub mod cli;
pub mod controller;

use operator_kit::ConflictStrategy;
use operator_kit::process::Parts;

pub use caches::Caches;
pub use cli::Cli;
pub use controller::{Context, Settings};

/// Everything the operator needs to run, from flags.
#[derive(Clone, Debug)]
pub struct Config {
    pub settings: Settings,
    pub strategy: ConflictStrategy,
}

/// Runs the controller until SIGTERM or Ctrl-C: the watches on every replica (Ready once
/// their caches are full), the controller on the leader only, from then on.
pub async fn run_operator(parts: Parts, config: Config) {
    let mut runtime = parts.runtime(config.strategy, config.settings.concurrency);
    let caches = Caches::watch(&mut runtime.watches);
    runtime
        .serve(move |shared| {
            let runner = shared.runner.clone();
            let ctx = Context::new(
                shared.client,
                shared.writer,
                shared.recorder,
                caches,
                config.settings,
            );
            controller::runner(ctx, &runner).run()
        })
        .await;
}
