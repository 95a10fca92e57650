//! The kubelet's heartbeats for virtual nodes, as the kubelet and kwok do them since
//! node Leases (Kubernetes 1.17): a `coordination.k8s.io/v1` Lease per node in
//! `kube-node-lease`, renewed every 10 s for 40 s; the Node's status only when it
//! changes (Ready after the provisioning delay) or every 5 minutes. A Lease renewal is an
//! event only for Lease watchers; a Node status write is one for every Node watcher.
//!
//! A Node annotated `nodepool.dev/fault: NotReady` gets no heartbeats while it carries it,
//! as kwok's stages fail a node: the node lifecycle controller marks it NotReady, then
//! Unknown, as it would a dead kubelet's node. Without the annotation, the next beats
//! make it Ready again.
//!
//! A task of its own, outside the reconcile queues: a pool with an invalid spec, or a
//! queue full of scaling work, never delays a heartbeat. It reads the node cache once a
//! second; what it remembers (when each Lease is next due) only paces requests.
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeCondition, NodeStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use nodepool_core::naming::fnv1a;
use nodepool_core::nodes::ready_condition as node_ready_condition;
use operator_kit::NotFoundIsDone;
use operator_kit::patch::{SpecPatch, StatusPatch};
use shared_crd::{FAULT_ANNOTATION, FAULT_NOT_READY, NODE_LEASE_NAMESPACE};

use super::VirtualSettings;
use super::node::{is_virtual, ready_condition};

/// Requests in flight at once: 2,000 nodes need 200 Lease renewals a second, a few at a
/// time; every extra one in flight is a connection with buffers of its own.
const CONCURRENCY: usize = 8;

/// How much older than one renewal interval a node this process has not beaten yet may
/// be and still count as new (no Lease yet): its `creationTimestamp` is to the second,
/// and the cache and the once-a-second tick add up to a second more.
const NEW_NODE_SLACK: Duration = Duration::from_secs(2);

/// The heartbeat task.
pub(super) struct Heartbeats {
    leases: Api<Lease>,
    node_api: Api<Node>,
    nodes: Store<Node>,
    settings: VirtualSettings,
}

#[derive(Debug, PartialEq)]
enum Beat {
    Lease(String, Option<String>, LeaseBeat),
    Status(String, NodeCondition),
}

/// Which request a Lease beat sends first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LeaseBeat {
    /// The first beat of a node made a moment ago: its Lease is not there yet, so it is
    /// created (a renewal would be a 404 for every new node).
    Create,
    /// A renewal; the Lease is created if it is not there (someone deleted it).
    Renew,
}

/// When each node's next beats are due. What it remembers only paces requests: a restart
/// spreads the Leases of the nodes it finds over one interval again.
struct Schedule {
    every: Duration,
    lease_due: HashMap<String, Instant>,
    /// A status just sent shows in the cache a moment later: it is not sent twice.
    status_sent: HashMap<String, Instant>,
}

impl Schedule {
    fn new(every: Duration) -> Self {
        Self {
            every,
            lease_due: HashMap::new(),
            status_sent: HashMap::new(),
        }
    }

    /// The beats due at `now` (`wall` on the clock) for `nodes`, the virtual ones of the
    /// node cache; forgets the nodes that are gone.
    fn due(
        &mut self,
        nodes: &[&Node],
        now: Instant,
        wall: Timestamp,
        settings: &VirtualSettings,
    ) -> Vec<Beat> {
        let every = self.every;
        let mut beats = Vec::new();
        let mut present = HashSet::new();
        for node in nodes {
            let name = node.name_any();
            present.insert(name.clone());
            // A node made a moment ago gets its Lease at once, as a starting kubelet
            // makes it; the nodes a restart finds are spread over one interval, so the
            // restart sends no burst.
            let mut kind = LeaseBeat::Renew;
            let due = self.lease_due.entry(name.clone()).or_insert_with(|| {
                let age = node
                    .metadata
                    .creation_timestamp
                    .as_ref()
                    .and_then(|t| Duration::try_from(wall.duration_since(t.0)).ok())
                    .unwrap_or(Duration::MAX);
                if age < every + NEW_NODE_SLACK {
                    kind = LeaseBeat::Create;
                    now
                } else {
                    now + every.mul_f64((fnv1a(name.as_bytes()) % 1000) as f64 / 1000.0)
                }
            });
            if *due <= now {
                *due = now + every;
                beats.push(Beat::Lease(name.clone(), node.metadata.uid.clone(), kind));
            }
            let recently_sent = self
                .status_sent
                .get(&name)
                .is_some_and(|at| now.duration_since(*at) < every);
            if !recently_sent && let Some(condition) = status_due(node, wall, settings) {
                self.status_sent.insert(name.clone(), now);
                beats.push(Beat::Status(name, condition));
            }
        }
        self.lease_due.retain(|n, _| present.contains(n));
        self.status_sent
            .retain(|n, at| present.contains(n) && now.duration_since(*at) < every);
        beats
    }
}

impl Heartbeats {
    pub fn new(client: Client, nodes: Store<Node>, settings: VirtualSettings) -> Self {
        Self {
            leases: Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            node_api: Api::all(client),
            nodes,
            settings,
        }
    }

    /// Runs until the process ends: once a second, the beats due, a few at a time.
    pub async fn run(self) {
        if self.nodes.wait_until_ready().await.is_err() {
            return;
        }
        let every = self
            .settings
            .lease_renew_interval
            .max(Duration::from_secs(1));
        let mut schedule = Schedule::new(every);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let cached = self.nodes.state();
            // A node under fault injection gets no heartbeat: its Lease and status go stale,
            // as a dead kubelet's would.
            let virtual_nodes: Vec<&Node> = cached
                .iter()
                .map(AsRef::as_ref)
                .filter(|n| is_virtual(n) && !faulted(n))
                .collect();
            let beats = schedule.due(
                &virtual_nodes,
                Instant::now(),
                Timestamp::now(),
                &self.settings,
            );
            futures::stream::iter(beats)
                .for_each_concurrent(CONCURRENCY, |beat| self.send(beat))
                .await;
        }
    }

    async fn send(&self, beat: Beat) {
        let result = match &beat {
            Beat::Lease(name, uid, kind) => {
                lease_beat(&self.leases, name, uid.as_deref(), *kind, &self.settings).await
            }
            Beat::Status(name, condition) => report(&self.node_api, name, condition).await,
        };
        if let Err(e) = result {
            let (what, name) = match &beat {
                Beat::Lease(n, ..) => ("lease", n),
                Beat::Status(n, _) => ("status", n),
            };
            tracing::warn!(node = %name, what, error = %e, "heartbeat failed");
        }
    }
}

/// Whether `node` carries `nodepool.dev/fault: NotReady`.
pub fn faulted(node: &Node) -> bool {
    node.annotations()
        .get(FAULT_ANNOTATION)
        .is_some_and(|v| v == FAULT_NOT_READY)
}

/// The Ready condition to write for `node` now, if one is due: Ready once the
/// provisioning delay has passed since its creation, then a fresh heartbeat every
/// status report interval. `None` between those.
pub fn status_due(
    node: &Node,
    now: Timestamp,
    settings: &VirtualSettings,
) -> Option<NodeCondition> {
    let previous = node_ready_condition(node);
    let ready = previous.is_some_and(|c| c.status == "True");
    let (since, wait) = if ready {
        let heartbeat = previous.and_then(|c| c.last_heartbeat_time.as_ref())?;
        (heartbeat.0, settings.status_report_interval)
    } else {
        let created = node.creation_timestamp()?;
        (created.0, settings.provisioning_delay)
    };
    let age = Duration::try_from(now.duration_since(since)).unwrap_or_default();
    (age >= wait).then(|| {
        ready_condition(
            true,
            shared_crd::time::at_api_precision(now),
            previous.filter(|_| ready),
        )
    })
}

async fn report(nodes: &Api<Node>, name: &str, condition: &NodeCondition) -> kube::Result<()> {
    // Strategic merge: conditions merge by type, as the kubelet's patches do.
    let patch = StatusPatch {
        status: NodeStatus {
            conditions: Some(vec![condition.clone()]),
            ..Default::default()
        },
    };
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .ok_if_not_found()
        .map(|_| ())
}

/// Renews the node's Lease, or creates it: first for a new node (`LeaseBeat::Create`,
/// renewing if it is there after all), else after a renewal found none.
async fn lease_beat(
    leases: &Api<Lease>,
    node: &str,
    node_uid: Option<&str>,
    kind: LeaseBeat,
    settings: &VirtualSettings,
) -> kube::Result<()> {
    let now = MicroTime(Timestamp::now());
    if kind == LeaseBeat::Renew && renew(leases, node, &now).await?.is_some() {
        return Ok(());
    }
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some(node.to_owned()),
            namespace: Some(NODE_LEASE_NAMESPACE.to_owned()),
            // Garbage-collected with its node where a collector runs.
            owner_references: node_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.to_owned(),
                    uid: uid.to_owned(),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(node.to_owned()),
            lease_duration_seconds: Some(settings.lease_duration.as_secs() as i32),
            renew_time: Some(now.clone()),
            ..Default::default()
        }),
    };
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        // Made by an earlier process (a restart just after it), or the renewal raced it.
        Err(kube::Error::Api(s)) if s.is_already_exists() => match kind {
            LeaseBeat::Create => renew(leases, node, &now).await.map(|_| ()),
            LeaseBeat::Renew => Ok(()),
        },
        Err(e) => Err(e),
    }
}

/// Sets the Lease's `renewTime`; `None` when there is no Lease.
async fn renew(leases: &Api<Lease>, node: &str, now: &MicroTime) -> kube::Result<Option<Lease>> {
    let patch = SpecPatch {
        spec: LeaseSpec {
            renew_time: Some(now.clone()),
            ..Default::default()
        },
    };
    leases
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .ok_if_not_found()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use shared_crd::{NodePool, NodePoolSpec, NodeTemplate};

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn settings() -> VirtualSettings {
        VirtualSettings {
            provisioning_delay: Duration::from_secs(2),
            status_report_interval: Duration::from_secs(300),
            ..Default::default()
        }
    }

    fn node(created: i64, ready: Option<i64>) -> Node {
        let pool = NodePool::new(
            "p",
            NodePoolSpec {
                replicas: 1,
                template: NodeTemplate::default(),
                disruption: None,
            },
        );
        let mut node = super::super::node::node_for(&pool, "n", true, false);
        node.metadata.creation_timestamp = Some(Time(at(created)));
        if let Some(beat) = ready {
            let c = ready_condition(true, Time(at(beat)), None);
            node.status.as_mut().unwrap().conditions = Some(vec![c]);
        }
        node
    }

    #[test]
    fn a_new_nodes_lease_is_due_at_once_and_a_found_one_within_an_interval() {
        let every = Duration::from_secs(10);
        let mut schedule = Schedule::new(every);
        let t0 = Instant::now();
        // Made a second ago, Ready: its Lease now, no status (its heartbeat is fresh).
        let new = node(99, Some(99));
        let old = {
            let mut n = node(0, Some(95));
            n.metadata.name = Some("old".into());
            n
        };
        let beats = schedule.due(&[&new, &old], t0, at(100), &settings());
        assert_eq!(
            beats,
            [Beat::Lease("n".into(), None, LeaseBeat::Create)],
            "the old one waits its turn; the new one's Lease is made, not renewed"
        );
        // Within one interval the old one's Lease comes, the new one's not again.
        let later: Vec<Beat> = (1..=10)
            .flat_map(|s| {
                let now = t0 + Duration::from_secs(s) - Duration::from_millis(1);
                schedule.due(&[&new, &old], now, at(100 + s as i64), &settings())
            })
            .collect();
        assert_eq!(
            later,
            [Beat::Lease("old".into(), None, LeaseBeat::Renew)],
            "a node found old has a Lease to renew"
        );
        // The new one's next beat is a renewal.
        let next = schedule.due(&[&new], t0 + every, at(110), &settings());
        assert_eq!(next, [Beat::Lease("n".into(), None, LeaseBeat::Renew)]);
    }

    #[test]
    fn a_status_is_not_sent_twice_before_the_cache_shows_it() {
        let mut schedule = Schedule::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let starting = node(100, None);
        let first = schedule.due(&[&starting], t0, at(103), &settings());
        assert!(first.iter().any(|b| matches!(b, Beat::Status(..))));
        // The cache still shows it not Ready a second later: nothing new to send.
        let again = schedule.due(
            &[&starting],
            t0 + Duration::from_secs(1),
            at(104),
            &settings(),
        );
        assert!(again.is_empty(), "{again:?}");
        // A node gone is forgotten.
        assert!(
            schedule
                .due(&[], t0 + Duration::from_secs(2), at(105), &settings())
                .is_empty()
        );
        assert!(schedule.lease_due.is_empty() && schedule.status_sent.is_empty());
    }

    #[test]
    fn a_new_node_turns_ready_after_the_provisioning_delay() {
        assert!(status_due(&node(100, None), at(101), &settings()).is_none());
        let c = status_due(&node(100, None), at(102), &settings()).unwrap();
        assert_eq!(c.status, "True");
        assert_eq!(c.last_transition_time, Some(Time(at(102))));
    }

    #[test]
    fn a_ready_node_reports_status_only_every_report_interval() {
        let n = node(0, Some(1_000));
        assert!(status_due(&n, at(1_010), &settings()).is_none());
        assert!(status_due(&n, at(1_299), &settings()).is_none());
        let c = status_due(&n, at(1_300), &settings()).unwrap();
        assert_eq!(c.last_heartbeat_time, Some(Time(at(1_300))));
        assert_eq!(
            c.last_transition_time,
            Some(Time(at(1_000))),
            "a heartbeat is no transition"
        );
    }
}
