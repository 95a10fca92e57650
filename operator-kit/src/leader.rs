//! Leader election with a coordination.k8s.io Lease (kube-lease-manager), so that several
//! replicas of an operator can run and only one writes. The controllers start once this
//! process holds the lease; if it loses the lease, the process ends, and a new one starts
//! with fresh caches (controller-runtime does the same).
use std::future::Future;
use std::time::Duration;

use clap::Args;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};

/// Leader-election flags.
#[derive(Clone, Debug, Args)]
pub struct LeaderArgs {
    /// Run the controllers only while holding a Lease (for more than one replica).
    #[arg(long, env = "LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the Lease (in a pod: its own namespace).
    #[arg(long, env = "LEADER_ELECT_NAMESPACE", default_value = "default")]
    pub leader_elect_namespace: String,
    /// Seconds a lease lasts without renewal.
    #[arg(long, env = "LEADER_ELECT_LEASE_SECONDS", default_value_t = 15)]
    pub leader_elect_lease_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error("setting up the lease {lease}: {source}")]
    LeaseSetupFailed {
        lease: String,
        #[source]
        source: LeaseManagerError,
    },
    #[error("lost the lease {0}; stopping so that a fresh process can take over")]
    LeadershipLost(String),
}

/// The Lease to hold and who holds it.
#[derive(Clone, Debug)]
pub struct Lease {
    pub namespace: String,
    pub name: String,
    /// This process's identity (in a pod: its name).
    pub identity: String,
    pub duration: Duration,
    pub grace: Duration,
}

/// Runs `operator` once this process holds `lease`; returns when `operator` ends (the lease
/// is released), or with `LeadershipLost` if the lease is lost while it runs.
pub async fn run_as_leader(
    client: kube::Client,
    lease: &Lease,
    operator: impl Future<Output = ()>,
) -> Result<(), LeaderError> {
    let manager = LeaseManagerBuilder::new(client, &lease.name)
        .with_namespace(&lease.namespace)
        .with_identity(&lease.identity)
        .with_duration(lease.duration.as_secs().max(1))
        .with_grace(lease.grace.as_secs().max(1))
        .build()
        .await
        .map_err(|source| LeaderError::LeaseSetupFailed {
            lease: lease.name.clone(),
            source,
        })?;
    let (mut leader, task) = manager.watch().await;
    tracing::info!(lease = %lease.name, identity = %lease.identity, "waiting for the lease");
    while !*leader.borrow_and_update() {
        if leader.changed().await.is_err() {
            return Err(LeaderError::LeadershipLost(lease.name.clone()));
        }
    }
    tracing::info!(lease = %lease.name, identity = %lease.identity, "holding the lease; starting");
    let lost = async {
        loop {
            if leader.changed().await.is_err() || !*leader.borrow_and_update() {
                return;
            }
        }
    };
    let result = tokio::select! {
        () = operator => Ok(()),
        () = lost => Err(LeaderError::LeadershipLost(lease.name.clone())),
    };
    // Closing the channel makes the manager release the lease.
    drop(leader);
    let _ = task.await;
    result
}

impl LeaderArgs {
    /// The lease for `operator`, when leader election is on.
    pub fn lease(&self, operator: &str) -> Option<Lease> {
        self.leader_elect.then(|| Lease {
            namespace: self.leader_elect_namespace.clone(),
            name: operator.to_owned(),
            identity: std::env::var("POD_NAME")
                .unwrap_or_else(|_| format!("{operator}-{}", std::process::id())),
            duration: Duration::from_secs(self.leader_elect_lease_seconds),
            grace: Duration::from_secs(5.min(self.leader_elect_lease_seconds / 3).max(1)),
        })
    }
}

/// Runs `operator` as the leader when `lease` is given, else at once.
pub async fn maybe_as_leader(
    client: kube::Client,
    lease: Option<Lease>,
    operator: impl Future<Output = ()>,
) -> Result<(), LeaderError> {
    match lease {
        Some(lease) => run_as_leader(client, &lease, operator).await,
        None => {
            operator.await;
            Ok(())
        }
    }
}
