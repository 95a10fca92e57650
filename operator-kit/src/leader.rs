//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's semantics, so that
//! several replicas of an operator can run and only one writes.
//!
//! - Every replica starts its watches and turns Ready once its caches have synced. Only the
//!   leader runs controllers: they wait on [`Leadership::acquired`].
//! - A candidate tries to take the Lease every `retry_period` (with client-go's jitter). It
//!   may take it when it is free, or when the holder has not renewed it for
//!   `lease_duration`, measured on this process's clock from when it *saw* the last change
//!   (clocks of two machines are never compared).
//! - The leader renews every `retry_period`. If no renewal has succeeded for
//!   `renew_deadline`, [`Elector::run`] returns [`LeaderError::LeadershipLost`]: the process
//!   stops its controllers at once and exits, even when every renewal failed with an error
//!   or hung (a leader cut off from the API server must stop before a standby can take
//!   over: `renew_deadline` < `lease_duration`).
//! - On SIGTERM the leader releases the Lease ([`Elector::release`]), so a standby takes
//!   over at its next try instead of after `lease_duration`.
//!
//! Updates carry the Lease's `resourceVersion`: two candidates that both see a free Lease
//! cannot both take it; the second gets a 409 and stays a candidate.
use std::time::{Duration, Instant};

use clap::Args;
use k8s_openapi::api::coordination::v1::{Lease as LeaseObject, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::watch;

/// Leader-election flags.
#[derive(Clone, Debug, Args)]
pub struct LeaderArgs {
    /// Run the controllers only while holding a Lease (for more than one replica).
    #[arg(long, env = "LEADER_ELECT")]
    pub leader_elect: bool,
    /// Namespace of the Lease (in a pod: its own namespace).
    #[arg(long, env = "LEADER_ELECT_NAMESPACE", default_value = "default")]
    pub leader_elect_namespace: String,
    /// Seconds a standby waits, after the last renewal it saw, before taking the Lease.
    #[arg(long, env = "LEADER_ELECT_LEASE_SECONDS", default_value_t = 15)]
    pub leader_elect_lease_seconds: u64,
    /// Seconds the leader keeps leading without a successful renewal; then it exits.
    /// Must be less than the lease duration.
    #[arg(
        long,
        env = "LEADER_ELECT_RENEW_DEADLINE_SECONDS",
        default_value_t = 10
    )]
    pub leader_elect_renew_deadline_seconds: u64,
    /// Seconds between tries to take or renew the Lease.
    #[arg(long, env = "LEADER_ELECT_RETRY_PERIOD_SECONDS", default_value_t = 2)]
    pub leader_elect_retry_period_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "invalid leader election timing: renew deadline {renew_deadline:?} must be less than \
         the lease duration {lease_duration:?} and more than the retry period {retry_period:?}"
    )]
    InvalidTiming {
        lease_duration: Duration,
        renew_deadline: Duration,
        retry_period: Duration,
    },
    #[error("lost the lease {lease}: {why}; stopping so that a fresh process can take over")]
    LeadershipLost { lease: String, why: String },
}

/// client-go's timing: a standby takes over `lease_duration` after the last renewal it saw;
/// a leader gives up `renew_deadline` after its last successful renewal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

impl Timing {
    /// client-go refuses a renew deadline that leaves no margin before a standby may take
    /// over, or that leaves no room for a retry.
    pub fn validate(self) -> Result<Self, LeaderError> {
        if self.renew_deadline >= self.lease_duration || self.retry_period >= self.renew_deadline {
            return Err(LeaderError::InvalidTiming {
                lease_duration: self.lease_duration,
                renew_deadline: self.renew_deadline,
                retry_period: self.retry_period,
            });
        }
        Ok(self)
    }
}

/// The Lease to hold and who holds it.
#[derive(Clone, Debug)]
pub struct Lease {
    pub namespace: String,
    pub name: String,
    /// This process's identity (in a pod: its name).
    pub identity: String,
    pub timing: Timing,
}

impl LeaderArgs {
    /// The lease for `operator`, when leader election is on.
    pub fn lease(&self, operator: &str) -> Result<Option<Lease>, LeaderError> {
        if !self.leader_elect {
            return Ok(None);
        }
        let timing = Timing {
            lease_duration: Duration::from_secs(self.leader_elect_lease_seconds),
            renew_deadline: Duration::from_secs(self.leader_elect_renew_deadline_seconds),
            retry_period: Duration::from_secs(self.leader_elect_retry_period_seconds),
        }
        .validate()?;
        Ok(Some(Lease {
            namespace: self.leader_elect_namespace.clone(),
            name: operator.to_owned(),
            identity: std::env::var("POD_NAME")
                .unwrap_or_else(|_| format!("{operator}-{}", std::process::id())),
            timing,
        }))
    }
}

/// Opens once this process leads (at once when it runs without election). Cloneable: each
/// part of an operator that writes waits on it.
#[derive(Clone, Debug)]
pub struct Leadership(watch::Receiver<bool>);

impl Leadership {
    /// A gate that is open from the start (no election).
    pub fn always() -> Self {
        Self(watch::channel(true).1)
    }

    /// Waits until this process leads. Never returns if the elector is gone without ever
    /// leading (the process is ending then).
    pub async fn acquired(&mut self) {
        if self.0.wait_for(|leading| *leading).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// What this process last saw of the Lease, and when it saw it change.
#[derive(Clone, Debug)]
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    lease_duration: Duration,
    at: Instant,
}

/// Takes, holds and releases one Lease.
pub struct Elector {
    api: Api<LeaseObject>,
    lease: Lease,
    observed: Option<Observed>,
    leading: watch::Sender<bool>,
    gauge: Gauge,
}

impl Elector {
    /// An elector and the gate it opens. `gauge` is set to 1 while this process leads.
    pub fn new(client: kube::Client, lease: Lease, gauge: Gauge) -> (Self, Leadership) {
        let (leading, rx) = watch::channel(false);
        gauge.set(0);
        let api = Api::namespaced(client, &lease.namespace);
        (
            Self {
                api,
                lease,
                observed: None,
                leading,
                gauge,
            },
            Leadership(rx),
        )
    }

    /// Campaigns until this process holds the Lease, opens the gate, then renews it. Returns
    /// only when leadership is lost: no successful renewal within the renew deadline, or
    /// another holder took the Lease.
    pub async fn run(&mut self) -> LeaderError {
        let timing = self.lease.timing;
        tracing::info!(lease = %self.lease.name, identity = %self.lease.identity, "waiting for the lease");
        loop {
            match tokio::time::timeout(timing.renew_deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => break,
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(lease = %self.lease.name, error = %e, "trying to take the lease")
                }
                Err(_) => {
                    tracing::warn!(lease = %self.lease.name, "trying to take the lease timed out")
                }
            }
            tokio::time::sleep(jittered(timing.retry_period)).await;
        }
        let mut last_renewal = Instant::now();
        tracing::info!(lease = %self.lease.name, identity = %self.lease.identity, "leading");
        self.gauge.set(1);
        let _ = self.leading.send(true);
        loop {
            tokio::time::sleep(timing.retry_period).await;
            let deadline = last_renewal + timing.renew_deadline;
            let attempt = tokio::time::timeout_at(deadline.into(), self.try_acquire_or_renew());
            let why = match attempt.await {
                Ok(Ok(true)) => {
                    last_renewal = Instant::now();
                    continue;
                }
                Ok(Ok(false)) => format!(
                    "{} holds it now",
                    self.observed
                        .as_ref()
                        .and_then(|o| o.holder.clone())
                        .unwrap_or_default()
                ),
                Ok(Err(e)) if Instant::now() < deadline => {
                    tracing::warn!(lease = %self.lease.name, error = %e, "renewing the lease failed; retrying");
                    continue;
                }
                Ok(Err(e)) => format!(
                    "no renewal succeeded for {:?}, the last error: {e}",
                    timing.renew_deadline
                ),
                Err(_) => format!("no renewal succeeded for {:?}", timing.renew_deadline),
            };
            self.stop_leading();
            return LeaderError::LeadershipLost {
                lease: self.lease.name.clone(),
                why,
            };
        }
    }

    fn stop_leading(&mut self) {
        self.gauge.set(0);
        let _ = self.leading.send(false);
    }

    /// Gives the Lease up if this process holds it, so that a standby takes over at its next
    /// try (client-go's `ReleaseOnCancel`): holder emptied, duration 1 s. Call it once the
    /// controllers have stopped.
    pub async fn release(&mut self) {
        if !*self.leading.borrow() {
            return;
        }
        self.stop_leading();
        let result = tokio::time::timeout(self.lease.timing.renew_deadline, async {
            let mut current = self.api.get(&self.lease.name).await?;
            let spec = current.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() != Some(&self.lease.identity) {
                return Ok(());
            }
            let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now.clone());
            spec.acquire_time = Some(now);
            self.api
                .replace(&self.lease.name, &PostParams::default(), &current)
                .await
                .map(|_| ())
        })
        .await;
        match result {
            Ok(Ok(())) => tracing::info!(lease = %self.lease.name, "released the lease"),
            Ok(Err(e)) => {
                tracing::warn!(lease = %self.lease.name, error = %e, "releasing the lease failed")
            }
            Err(_) => tracing::warn!(lease = %self.lease.name, "releasing the lease timed out"),
        }
    }

    /// One try (client-go's `tryAcquireOrRenew`): true when this process holds the Lease
    /// afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let me = self.lease.identity.clone();
        let duration_seconds = self.lease.timing.lease_duration.as_secs() as i32;
        let Some(mut current) = self.api.get_opt(&self.lease.name).await? else {
            let fresh = LeaseObject {
                metadata: ObjectMeta {
                    name: Some(self.lease.name.clone()),
                    namespace: Some(self.lease.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(duration_seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &fresh).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(true)
                }
                // Another candidate created it first.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        self.observe(&current);
        let observed = self.observed.as_ref().expect("just observed");
        let holder = observed.holder.clone().filter(|h| !h.is_empty());
        let held_by_other = holder.as_ref().is_some_and(|h| *h != me);
        if held_by_other && observed.at.elapsed() < observed.lease_duration {
            return Ok(false);
        }
        let spec = current.spec.get_or_insert_with(Default::default);
        if holder.as_deref() != Some(me.as_str()) {
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.holder_identity = Some(me);
        spec.lease_duration_seconds = Some(duration_seconds);
        spec.renew_time = Some(now);
        match self
            .api
            .replace(&self.lease.name, &PostParams::default(), &current)
            .await
        {
            Ok(updated) => {
                self.observe(&updated);
                Ok(true)
            }
            // Someone else updated it since our GET (another candidate took it).
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Records the Lease's holder and renew time, and when they last changed on our clock.
    fn observe(&mut self, lease: &LeaseObject) {
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity;
        let renew_time = spec.renew_time;
        let lease_duration = Duration::from_secs(
            spec.lease_duration_seconds
                .unwrap_or(self.lease.timing.lease_duration.as_secs() as i32)
                .max(1) as u64,
        );
        let unchanged = self
            .observed
            .as_ref()
            .is_some_and(|o| o.holder == holder && o.renew_time == renew_time);
        if !unchanged {
            self.observed = Some(Observed {
                holder,
                renew_time,
                lease_duration,
                at: Instant::now(),
            });
        }
    }
}

/// client-go's `wait.Jitter(period, 1.2)`: a random wait in [period, 2.2 x period), so that
/// candidates do not try in lockstep.
fn jittered(period: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let fraction = (h.finish() % 10_000) as f64 / 10_000.0;
    period.mul_f64(1.0 + 1.2 * fraction)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_go_timing_is_valid_and_a_deadline_past_the_lease_is_not() {
        assert!(Timing::default().validate().is_ok());
        let late = Timing {
            renew_deadline: Duration::from_secs(15),
            ..Timing::default()
        };
        assert!(matches!(
            late.validate(),
            Err(LeaderError::InvalidTiming { .. })
        ));
        let no_retry = Timing {
            retry_period: Duration::from_secs(10),
            ..Timing::default()
        };
        assert!(no_retry.validate().is_err());
    }

    #[test]
    fn jitter_stays_between_one_and_two_point_two_periods() {
        let period = Duration::from_secs(2);
        for _ in 0..1000 {
            let d = jittered(period);
            assert!(d >= period && d < period.mul_f64(2.2), "{d:?}");
        }
    }
}
