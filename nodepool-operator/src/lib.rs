//! nodepool-operator: keeps each NodePool's nodes at `spec.replicas`, reports the pool's
//! status, plays the kubelet for its virtual nodes, and tells Autoscalers whether their
//! pool can get nodes (`NodePoolReady`).
//!
//! One watch per kind (NodePools, its Nodes, bound Pods, Autoscalers: `caches`), each
//! feeding one cache, a few indexes and every controller that needs it:
//! - `pool`: a pool's nodes to `spec.replicas`, and its status;
//! - `lifecycle`: one node's end (drain, then the finalizer goes) and its pods' start and
//!   end where this operator plays their kubelet;
//! - `nodepool_ready`: the `NodePoolReady` condition on Autoscalers.
//!
//! Nodes come from a `provider`; the virtual one plays their kubelet too (heartbeats on a
//! task of their own). The decisions are nodepool-core's.
#![forbid(unsafe_code)]

pub mod caches;
pub mod cli;
pub mod eviction;
pub mod lifecycle;
pub mod nodepool_ready;
pub mod pool;
pub mod provider;

pub use caches::Caches;
pub use cli::Cli;
pub use pool::{Context, Settings};

use std::sync::Arc;

use operator_kit::ConflictStrategy;
use operator_kit::process::{Parts, Shared};

/// Everything the operator needs to run, from flags.
#[derive(Clone, Debug)]
pub struct Config {
    pub settings: Settings,
    pub provider: provider::VirtualSettings,
    pub strategy: ConflictStrategy,
}

/// Runs every part until the process gets SIGTERM or Ctrl-C: the watches on every replica
/// (Ready once their caches are full), the parts that write on the leader only, from then
/// on (an orphan is only an orphan against a complete list of pools).
pub async fn run_operator(parts: Parts, config: Config) {
    let mut runtime = parts.runtime(config.strategy, config.settings.concurrency);
    let caches = Caches::watch(&mut runtime.watches);
    runtime
        .serve(move |shared| run_controllers(shared, caches, config))
        .await;
}

/// The controllers, and the heartbeats of the kubelet the provider's nodes lack.
async fn run_controllers(shared: Shared, caches: Caches, config: Config) {
    let Shared {
        client,
        writer,
        recorder,
        runner,
    } = shared;
    let provider = provider::VirtualProvider::new(client.clone(), config.provider.clone());
    let kubelet = provider::Provider::kubelet(&provider);
    let lifecycle = lifecycle::runner(
        lifecycle::Context::new(
            client.clone(),
            recorder.clone(),
            caches.clone(),
            &provider,
            config.settings.drain_timeout,
        ),
        &runner,
    );
    let pools = pool::runner(
        Context::new(
            client.clone(),
            writer.clone(),
            recorder,
            Arc::new(provider),
            caches.clone(),
            config.settings.clone(),
        ),
        &runner,
    );
    let ready = nodepool_ready::runner(
        nodepool_ready::Context::new(client, writer, caches.clone()),
        &runner,
    );
    // They never end by themselves: the controllers' end (SIGTERM) ends them.
    let heartbeats = async {
        match kubelet {
            Some(kubelet) => kubelet.heartbeats(caches.nodes.store().clone()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = async { tokio::join!(pools.run(), lifecycle.run(), ready.run()) } => {}
        () = heartbeats => {}
    }
}
