//! The kubelet's heartbeats for virtual nodes, as the kubelet and kwok do them since
//! node Leases (Kubernetes 1.17): a `coordination.k8s.io/v1` Lease per node in
//! `kube-node-lease`, renewed every 10 s for 40 s; the Node's status only when it
//! changes (Ready after the provisioning delay) or every 5 minutes. A Lease renewal is an
//! event only for Lease watchers; a Node status write is one for every Node watcher.
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
use shared_crd::NODE_LEASE_NAMESPACE;

use super::VirtualSettings;
use super::node::{is_virtual, ready_condition};

/// Requests in flight at once: 2,000 nodes need 200 Lease renewals a second, a few at a
/// time; every extra one in flight is a connection with buffers of its own.
const CONCURRENCY: usize = 8;

/// The heartbeat task.
pub(super) struct Heartbeats {
    client: Client,
    nodes: Store<Node>,
    settings: VirtualSettings,
}

enum Beat {
    Lease(String, Option<String>),
    Status(String, NodeCondition),
}

impl Heartbeats {
    pub fn new(client: Client, nodes: Store<Node>, settings: VirtualSettings) -> Self {
        Self {
            client,
            nodes,
            settings,
        }
    }

    /// Runs until the process ends.
    pub async fn run(self) {
        if self.nodes.wait_until_ready().await.is_err() {
            return;
        }
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), NODE_LEASE_NAMESPACE);
        let nodes: Api<Node> = Api::all(self.client.clone());
        let every = self
            .settings
            .lease_renew_interval
            .max(Duration::from_secs(1));
        let mut lease_due: HashMap<String, Instant> = HashMap::new();
        // A status just sent shows in the cache a moment later: do not send it twice.
        let mut status_sent: HashMap<String, Instant> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (now, wall) = (Instant::now(), Timestamp::now());
            let mut beats = Vec::new();
            let mut present = HashSet::new();
            for node in self.nodes.state().iter().filter(|n| is_virtual(n)) {
                let name = node.name_any();
                present.insert(name.clone());
                // A node made a moment ago gets its Lease at once, as a starting kubelet
                // makes it; the nodes a restart finds are spread over one interval, so the
                // restart sends no burst.
                let due = lease_due.entry(name.clone()).or_insert_with(|| {
                    let age = node
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .and_then(|t| Duration::try_from(wall.duration_since(t.0)).ok())
                        .unwrap_or(Duration::MAX);
                    if age < every {
                        now
                    } else {
                        now + every.mul_f64((fnv1a(name.as_bytes()) % 1000) as f64 / 1000.0)
                    }
                });
                if *due <= now {
                    *due = now + every;
                    beats.push(Beat::Lease(name.clone(), node.metadata.uid.clone()));
                }
                let recently_sent = status_sent
                    .get(&name)
                    .is_some_and(|at| now.duration_since(*at) < every);
                if !recently_sent && let Some(condition) = status_due(node, wall, &self.settings) {
                    status_sent.insert(name.clone(), now);
                    beats.push(Beat::Status(name, condition));
                }
            }
            lease_due.retain(|n, _| present.contains(n));
            status_sent.retain(|n, at| present.contains(n) && now.duration_since(*at) < every);
            let settings = &self.settings;
            futures::stream::iter(beats)
                .for_each_concurrent(CONCURRENCY, |beat| {
                    let (leases, nodes) = (&leases, &nodes);
                    async move {
                        let result = match &beat {
                            Beat::Lease(name, uid) => {
                                renew(leases, name, uid.as_deref(), settings).await
                            }
                            Beat::Status(name, condition) => report(nodes, name, condition).await,
                        };
                        if let Err(e) = result {
                            let (what, name) = match &beat {
                                Beat::Lease(n, _) => ("lease", n),
                                Beat::Status(n, _) => ("status", n),
                            };
                            tracing::warn!(node = %name, what, error = %e, "heartbeat failed");
                        }
                    }
                })
                .await;
        }
    }
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

/// Renews the node's Lease, creating it the first time (or after someone deleted it).
async fn renew(
    leases: &Api<Lease>,
    node: &str,
    node_uid: Option<&str>,
    settings: &VirtualSettings,
) -> kube::Result<()> {
    let now = MicroTime(Timestamp::now());
    let patch = SpecPatch {
        spec: LeaseSpec {
            renew_time: Some(now.clone()),
            ..Default::default()
        },
    };
    let renewed = leases
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .ok_if_not_found()?;
    if renewed.is_some() {
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
            renew_time: Some(now),
            ..Default::default()
        }),
    };
    match leases.create(&PostParams::default(), &lease).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(()),
        Err(e) => Err(e),
    }
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
