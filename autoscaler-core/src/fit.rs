//! Where a pod can run, and how few nodes a pool's pods fit on. Pure functions, no client.
//!
//! - **Filters.** A pod fits a pool's nodes when the scheduler's filters that tell one pool's
//!   nodes from another's all pass: node selector, required node affinity, taints and
//!   tolerations, and no resource asked beyond what one node offers.
//! - **Packing.** [`nodes_to_hold`] counts the nodes a pool needs so that every pod bound to
//!   it, and every unschedulable pod it should take, has a place. It keeps bound pods where
//!   they are, puts the others first-fit-decreasing into the free room of the nodes that
//!   stay, and adds empty nodes only for what does not fit. For a scale-down it removes nodes
//!   in the order nodepool-operator removes them ([`shared_crd::nodepool::removal_order`]),
//!   so a drain never leaves a pod that the next decision would scale up for.
//! - **Not modelled.** Pod affinity and anti-affinity, topology spread, host ports, volumes,
//!   preferred terms and `PreferNoSchedule` taints. First-fit decreasing is a heuristic: it
//!   may ask for a node more than an exact packing would, never fewer than the requests
//!   need.
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};
use shared_crd::NodePool;

use crate::node::NodeView;
use crate::pod::PodView;
use crate::resources::{Capacity, Demand};

/// What the nodes of a pool look like to the scheduler's filters.
#[derive(Clone, Debug, PartialEq)]
pub struct Shape {
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
}

/// The shape of `pool`'s nodes: read off one of its nodes when it has one (the truth,
/// whatever nodepool-operator's flags), else from the pool's template with the virtual-node
/// taint that nodepool-operator puts on by default.
///
/// A node's state taints (`node.kubernetes.io/not-ready`, `unreachable`, `unschedulable`...,
/// which the node lifecycle controller puts on and takes off) are not its shape: a new node
/// sheds them once Ready.
pub fn shape(pool: &NodePool, node: Option<&NodeView>) -> Shape {
    match node {
        Some(node) => {
            let mut labels = node.metadata.labels.clone().unwrap_or_default();
            // A pod that asks for one host by name asks for that node, not for a new one.
            labels.remove("kubernetes.io/hostname");
            let taints: Vec<Taint> = node
                .spec
                .taints
                .iter()
                .filter(|t| !t.key.starts_with(STATE_TAINTS))
                .cloned()
                .collect();
            Shape { labels, taints }
        }
        None => Shape {
            labels: pool.node_labels(),
            taints: pool.node_taints(true),
        },
    }
}

/// The prefix of the taints that say a node's state, not what it is for.
const STATE_TAINTS: &str = "node.kubernetes.io/";

/// Why `pod` cannot run on a node of this shape, if it cannot.
pub fn mismatch(pod: &PodView, shape: &Shape) -> Option<String> {
    let labels = &shape.labels;
    if let Some(selector) = &pod.spec.node_selector {
        for (key, value) in selector.iter() {
            if labels.get(key).map(String::as_str) != Some(value) {
                return Some(format!(
                    "node selector {key}={value} does not match the pool's nodes"
                ));
            }
        }
    }
    let required = pod
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.required.as_ref());
    if let Some(required) = required
        && !required
            .node_selector_terms
            .iter()
            .any(|t| term_matches(t, labels))
    {
        return Some("no term of its required node affinity matches the pool's nodes".into());
    }
    shape
        .taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !pod.spec.tolerations.iter().any(|tol| tolerates(tol, t)))
        .map(|t| {
            let value = t
                .value
                .as_deref()
                .map(|v| format!("={v}"))
                .unwrap_or_default();
            format!(
                "it does not tolerate the taint {}{value}:{}",
                t.key, t.effect
            )
        })
}

/// A node selector term matches when all its expressions do. A term with no expressions
/// matches nothing, as in the scheduler; `matchFields` names one node by name, which a new
/// node is not.
fn term_matches(term: &NodeSelectorTerm, labels: &BTreeMap<String, String>) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    !expressions.is_empty()
        && fields.is_empty()
        && expressions.iter().all(|e| requirement_matches(e, labels))
}

fn requirement_matches(req: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    let label = labels.get(&req.key);
    let number = |v: &str| v.parse::<i64>().ok();
    match req.operator.as_str() {
        "In" => label.is_some_and(|l| values.contains(l)),
        "NotIn" => label.is_none_or(|l| !values.contains(l)),
        "Exists" => label.is_some(),
        "DoesNotExist" => label.is_none(),
        "Gt" | "Lt" => {
            let (Some(l), Some(v)) = (
                label.and_then(|l| number(l)),
                values.first().and_then(|v| number(v)),
            ) else {
                return false;
            };
            if req.operator == "Gt" { l > v } else { l < v }
        }
        _ => false,
    }
}

/// The scheduler's toleration rule: an empty key with `Exists` tolerates every taint; an
/// empty effect tolerates every effect; `Equal` (the default) also compares the value.
pub fn tolerates(toleration: &Toleration, taint: &Taint) -> bool {
    let effect_ok = toleration
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = toleration.key.as_deref().unwrap_or_default();
    let exists = toleration.operator.as_deref() == Some("Exists");
    if !effect_ok {
        return false;
    }
    if key.is_empty() {
        return exists;
    }
    key == taint.key
        && (exists
            || toleration.value.as_deref().unwrap_or_default()
                == taint.value.as_deref().unwrap_or_default())
}

/// A node of a pool as the packing sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeLoad {
    pub name: String,
    pub ready: bool,
    /// Creation time, in seconds.
    pub created: i64,
    /// Being deleted: its pods are on their way elsewhere.
    pub deleting: bool,
    /// The requests of the active pods bound to it.
    pub pods: Vec<Demand>,
}

/// How many nodes the pool needs so that each of its pods has a place, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    pub nodes: i32,
    pub why: String,
}

const EPSILON: f64 = 1e-9;

fn fits_in(item: &Demand, room: &Demand) -> bool {
    item.cpu <= room.cpu + EPSILON
        && item.memory <= room.memory + EPSILON
        && item.pods <= room.pods + EPSILON
}

fn take(room: &mut Demand, item: &Demand) {
    room.cpu -= item.cpu;
    room.memory -= item.memory;
    room.pods -= item.pods;
}

/// The room a node of `capacity` has left with `pods` on it.
fn room(capacity: Capacity, pods: &[Demand]) -> Demand {
    let mut room = Demand {
        cpu: capacity.cpu,
        memory: capacity.memory,
        pods: capacity.pods,
    };
    for pod in pods {
        take(&mut room, pod);
    }
    room
}

/// Puts `items` first-fit-decreasing (by their larger share of a node's cpu or memory)
/// into `rooms`, then into as many empty nodes of `capacity` as needed; returns how many
/// empty nodes that took. Each item must fit on an empty node.
///
/// First fit is the first room, in order, with space for the item: a [`Rooms`] tree finds
/// it in about log n steps instead of a scan of every room, so a decision at 100,000 pods
/// over 5,000 nodes stays near n log n (`make bench-decision`).
fn pack(items: &[&Demand], rooms: Vec<Demand>, capacity: Capacity) -> usize {
    let share = |d: &Demand| (d.cpu / capacity.cpu).max(d.memory / capacity.memory);
    let mut sorted = items.to_vec();
    sorted.sort_by(|a, b| share(b).total_cmp(&share(a)));
    let existing = rooms.len();
    let mut rooms = Rooms::new(rooms, items.len());
    for item in sorted {
        if !rooms.take_first_fit(item) {
            let mut fresh = room(capacity, &[]);
            take(&mut fresh, item);
            rooms.push(fresh);
        }
    }
    rooms.len - existing
}

/// Rooms in order, under a tree whose every inner node holds the most cpu, memory and
/// pods left in any room below it (each on its own: a necessary condition for a fit, so
/// a subtree that fails it is skipped, and one that passes it is searched).
struct Rooms {
    /// Leaves from `size`; slots past `len` hold nothing (negative room).
    tree: Vec<Demand>,
    size: usize,
    len: usize,
}

const NONE: Demand = Demand {
    cpu: f64::NEG_INFINITY,
    memory: f64::NEG_INFINITY,
    pods: f64::NEG_INFINITY,
};

fn most(a: &Demand, b: &Demand) -> Demand {
    Demand {
        cpu: a.cpu.max(b.cpu),
        memory: a.memory.max(b.memory),
        pods: a.pods.max(b.pods),
    }
}

impl Rooms {
    /// `rooms`, with space for `more` to be pushed.
    fn new(rooms: Vec<Demand>, more: usize) -> Self {
        let size = (rooms.len() + more).max(1).next_power_of_two();
        let mut tree = vec![NONE; 2 * size];
        let len = rooms.len();
        for (i, r) in rooms.into_iter().enumerate() {
            tree[size + i] = r;
        }
        for i in (1..size).rev() {
            tree[i] = most(&tree[2 * i], &tree[2 * i + 1]);
        }
        Self { tree, size, len }
    }

    fn update(&mut self, leaf: usize) {
        let mut i = (self.size + leaf) / 2;
        while i >= 1 {
            self.tree[i] = most(&self.tree[2 * i], &self.tree[2 * i + 1]);
            i /= 2;
        }
    }

    fn push(&mut self, room: Demand) {
        let leaf = self.len;
        self.tree[self.size + leaf] = room;
        self.len += 1;
        self.update(leaf);
    }

    /// Takes `item` out of the first room it fits in; false when it fits in none.
    fn take_first_fit(&mut self, item: &Demand) -> bool {
        match self.first_fit(1, item) {
            Some(leaf) => {
                take(&mut self.tree[self.size + leaf], item);
                self.update(leaf);
                true
            }
            None => false,
        }
    }

    fn first_fit(&self, i: usize, item: &Demand) -> Option<usize> {
        if !fits_in(item, &self.tree[i]) {
            return None;
        }
        if i >= self.size {
            return Some(i - self.size);
        }
        self.first_fit(2 * i, item)
            .or_else(|| self.first_fit(2 * i + 1, item))
    }
}

/// The nodes that the summed requests of the pods on `live` and of `leaving` fill, by
/// the scarcest resource: a lower bound on any packing (a millionth of a node is allowed
/// for the rounding of the sums, so that it never exceeds the true answer).
fn fewest_by_requests(live: &[&NodeLoad], leaving: &[&Demand], capacity: Capacity) -> usize {
    let mut total = Demand::default();
    for d in live
        .iter()
        .flat_map(|n| &n.pods)
        .chain(leaving.iter().copied())
    {
        total.add(d);
    }
    let per = |d: f64, c: f64| {
        if c > 0.0 {
            (d / c - 1e-6).ceil().max(0.0)
        } else {
            0.0
        }
    };
    per(total.cpu, capacity.cpu)
        .max(per(total.memory, capacity.memory))
        .max(per(total.pods, capacity.pods)) as usize
}

/// The fewest nodes that hold the pool's pods: the bound ones where they are, the pending
/// ones (unschedulable pods it should take, each small enough for one node) wherever they
/// fit. Nodes being deleted count as gone, and their pods as pods to place.
///
/// - Pending pods that fit in no free room need new nodes: the answer is above the live
///   node count.
/// - Otherwise the answer is the live count less the most nodes that can go, in
///   nodepool-operator's removal order, with their pods fitting on the nodes that stay.
pub fn nodes_to_hold(nodes: &[NodeLoad], pending: &[Demand], capacity: Capacity) -> Placement {
    let mut live: Vec<&NodeLoad> = nodes.iter().filter(|n| !n.deleting).collect();
    live.sort_by_cached_key(|n| {
        shared_crd::nodepool::removal_order(n.ready, n.pods.len(), n.created, &n.name)
    });
    let leaving: Vec<&Demand> = nodes
        .iter()
        .filter(|n| n.deleting)
        .flat_map(|n| &n.pods)
        .chain(pending)
        .collect();
    // The items to place and the rooms left when the first `k` nodes of `live` go.
    let fresh_after_removing = |k: usize| {
        let items: Vec<&Demand> = live[..k]
            .iter()
            .flat_map(|n| &n.pods)
            .chain(leaving.iter().copied())
            .collect();
        let rooms = live[k..].iter().map(|n| room(capacity, &n.pods)).collect();
        pack(&items, rooms, capacity)
    };
    let count = live.len();
    let fresh = fresh_after_removing(0);
    if fresh > 0 {
        return Placement {
            nodes: (count + fresh) as i32,
            why: format!(
                "{} pods to place fit on {count} nodes only with {fresh} more",
                leaving.len()
            ),
        };
    }
    // The most nodes that can go: removing more only adds pods to place and takes rooms
    // away, so a binary search finds it. No packing holds the pods on fewer nodes than
    // their summed requests fill, so the search first tries that many: when the pods pack
    // that well (pods of one size do), that is the answer, from one packing instead of log n
    // of them. Otherwise the search runs as it would without the try (first fit is not
    // strictly monotone in the nodes removed, so the same probes keep the same answers).
    let fewest = fewest_by_requests(&live, &leaving, capacity);
    let most = count.saturating_sub(fewest);
    let (mut can, mut cannot) = if most > 0 && fresh_after_removing(most) == 0 {
        (most, most + 1)
    } else {
        (0, count + 1)
    };
    while cannot - can > 1 {
        let k = (can + cannot) / 2;
        if fresh_after_removing(k) == 0 {
            can = k;
        } else {
            cannot = k;
        }
    }
    let nodes = (count - can) as i32;
    let why = if can < count {
        format!(
            "the pods of the next node to go would not fit on the other {}",
            count - can - 1
        )
    } else {
        "no pod to place".to_owned()
    };
    Placement { nodes, why }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::GI;
    use crate::resources::tests::{NODE, cpu};
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> PodView {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap()
    }

    fn virtual_pool() -> NodePool {
        let mut pool: NodePool = serde_json::from_value(json!({
            "apiVersion": "nodepool.dev/v1alpha1", "kind": "NodePool",
            "metadata": {"name": "general"},
            "spec": {"replicas": 1, "template": {
                "labels": {"tier": "web", "zone": "3"},
                "taints": [{"key": "dedicated", "value": "web", "effect": "NoSchedule"}],
                "capacity": {"cpu": "2", "memory": "8Gi", "pods": "110"}}}
        }))
        .unwrap();
        pool.metadata.uid = Some("u".into());
        pool
    }

    const TOLERATE_ALL: &str = r#"[{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"},
                                  {"key": "nodepool.dev/virtual", "operator": "Exists"}]"#;

    fn tolerating(mut spec: serde_json::Value) -> PodView {
        spec["tolerations"] = serde_json::from_str(TOLERATE_ALL).unwrap();
        pod(spec)
    }

    #[test]
    fn the_template_shape_is_the_nodes_shape() {
        let pool = virtual_pool();
        let s = shape(&pool, None);
        assert_eq!(
            s.labels.get("nodepool.dev/pool").map(String::as_str),
            Some("general")
        );
        assert_eq!(s.labels.get("tier").map(String::as_str), Some("web"));
        assert_eq!(s.labels.get("type").map(String::as_str), Some("virtual"));
        let keys: Vec<&str> = s.taints.iter().map(|t| t.key.as_str()).collect();
        assert_eq!(keys, ["dedicated", "nodepool.dev/virtual"]);
        // A node, when there is one, is the truth: here made without the virtual taint.
        let node: NodeView = serde_json::from_value(json!({
            "metadata": {"name": "n", "labels": {"nodepool.dev/pool": "general",
                "kubernetes.io/hostname": "n"}},
            "spec": {"taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]}
        }))
        .unwrap();
        let s = shape(&pool, Some(&node));
        assert!(
            s.taints.is_empty(),
            "a state taint is not the shape: {:?}",
            s.taints
        );
        assert!(!s.labels.contains_key("kubernetes.io/hostname"));
    }

    #[test]
    fn selectors_affinity_and_tolerations_decide_the_fit() {
        let pool = virtual_pool();
        let s = shape(&pool, None);
        let fits = |p: PodView| mismatch(&p, &s);
        assert_eq!(
            fits(tolerating(json!({"nodeSelector": {"tier": "web"}}))),
            None
        );
        assert_eq!(
            fits(tolerating(json!({"nodeSelector": {"tier": "db"}}))).unwrap(),
            "node selector tier=db does not match the pool's nodes"
        );
        assert_eq!(
            fits(tolerating(
                json!({"nodeSelector": {"kubernetes.io/hostname": "general-x"}})
            ))
            .unwrap(),
            "node selector kubernetes.io/hostname=general-x does not match the pool's nodes"
        );
        let affinity = |exprs: serde_json::Value| {
            tolerating(json!({"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": exprs}}}}))
        };
        for (terms, ok) in [
            (
                json!([{"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]}]),
                true,
            ),
            (
                json!([{"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}]),
                false,
            ),
            (
                json!([{"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}]),
                true,
            ),
            (
                json!([{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}]),
                false,
            ),
            (
                json!([{"matchExpressions": [{"key": "zone", "operator": "Gt", "values": ["2"]}]}]),
                true,
            ),
            (
                json!([{"matchExpressions": [{"key": "zone", "operator": "Lt", "values": ["2"]}]}]),
                false,
            ),
            // Terms are ORed, expressions ANDed.
            (
                json!([{"matchExpressions": [{"key": "gpu", "operator": "Exists"}]},
                    {"matchExpressions": [{"key": "tier", "operator": "Exists"},
                                          {"key": "type", "operator": "In", "values": ["virtual"]}]}]),
                true,
            ),
            (json!([{"matchExpressions": []}]), false),
            (
                json!([{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}]),
                false,
            ),
        ] {
            assert_eq!(fits(affinity(terms.clone())).is_none(), ok, "{terms}");
        }
        // Taints: each NoSchedule/NoExecute one must be tolerated.
        assert_eq!(
            fits(pod(json!({}))).unwrap(),
            "it does not tolerate the taint dedicated=web:NoSchedule"
        );
        let only_dedicated = pod(json!({"tolerations": [
            {"key": "dedicated", "value": "web", "effect": "NoSchedule"}]}));
        assert_eq!(
            fits(only_dedicated).unwrap(),
            "it does not tolerate the taint nodepool.dev/virtual=true:NoSchedule"
        );
        let wrong_value = pod(json!({"tolerations": [
            {"key": "dedicated", "value": "db"}, {"key": "nodepool.dev/virtual", "operator": "Exists"}]}));
        assert!(fits(wrong_value).is_some());
        assert_eq!(
            fits(pod(json!({"tolerations": [{"operator": "Exists"}]}))),
            None
        );
    }

    #[test]
    fn the_toleration_rule_is_the_schedulers() {
        let taint = Taint {
            key: "k".into(),
            value: Some("v".into()),
            effect: "NoExecute".into(),
            time_added: None,
        };
        let t = |v: serde_json::Value| tolerates(&serde_json::from_value(v).unwrap(), &taint);
        assert!(t(json!({"key": "k", "value": "v"})));
        assert!(t(
            json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})
        ));
        assert!(!t(
            json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"})
        ));
        assert!(!t(json!({"key": "k", "value": "w"})));
        assert!(!t(json!({"key": "j", "operator": "Exists"})));
        assert!(t(json!({"operator": "Exists"})));
        assert!(!t(json!({"value": "v"})), "an empty key needs Exists");
    }

    fn node(name: &str, created: i64, pods: &[f64]) -> NodeLoad {
        NodeLoad {
            name: name.into(),
            ready: true,
            created,
            deleting: false,
            pods: pods.iter().map(|c| cpu(*c)).collect(),
        }
    }

    #[test]
    fn pending_pods_take_free_room_first_then_new_nodes() {
        let nodes = [node("a", 1, &[1.0]), node("b", 2, &[1.5])];
        // 1 core fits in a's free room.
        assert_eq!(nodes_to_hold(&nodes, &[cpu(1.0)], NODE).nodes, 2);
        // 1.2 fits nowhere (a has 1, b 0.5 free): one new node.
        let p = nodes_to_hold(&nodes, &[cpu(1.2)], NODE);
        assert_eq!(p.nodes, 3);
        assert_eq!(p.why, "1 pods to place fit on 2 nodes only with 1 more");
        // Three of 1.2: each needs its own node; the sum (3.6 cores) would say 2.
        assert_eq!(
            nodes_to_hold(&[], &[cpu(1.2), cpu(1.2), cpu(1.2)], NODE).nodes,
            3
        );
        // Decreasing order packs 1.5+0.5 and 1.0+1.0 on two nodes.
        let mixed = [cpu(0.5), cpu(1.0), cpu(1.5), cpu(1.0)];
        assert_eq!(nodes_to_hold(&[], &mixed, NODE).nodes, 2);
        assert_eq!(nodes_to_hold(&[], &[], NODE).nodes, 0);
    }

    #[test]
    fn a_node_goes_only_when_its_pods_fit_on_the_nodes_that_stay() {
        // Three pods of 1.2 on three nodes: the sum (3.6 cores) fits two nodes, but no
        // node's pod fits in another's free 0.8. All three stay.
        let nodes = [
            node("a", 1, &[1.2]),
            node("b", 2, &[1.2]),
            node("c", 3, &[1.2]),
        ];
        let p = nodes_to_hold(&nodes, &[], NODE);
        assert_eq!(p.nodes, 3);
        assert_eq!(
            p.why,
            "the pods of the next node to go would not fit on the other 2"
        );
        // An empty node goes first (c), then no more.
        let nodes = [
            node("a", 1, &[1.2]),
            node("b", 2, &[1.2]),
            node("c", 3, &[]),
        ];
        assert_eq!(nodes_to_hold(&nodes, &[], NODE).nodes, 2);
        // Small pods move: 0.5 + 0.5 on b fit in a's free 1.0.
        let nodes = [
            node("a", 1, &[1.0]),
            node("b", 2, &[0.5, 0.5]),
            node("c", 3, &[]),
        ];
        assert_eq!(nodes_to_hold(&nodes, &[], NODE).nodes, 1);
        // The removal order is nodepool-operator's: fewest pods first, so b (one pod of 1.5)
        // goes before a (two of 0.25), and 1.5 fits in a's free 1.5.
        let nodes = [node("a", 5, &[0.25, 0.25]), node("b", 1, &[1.5])];
        assert_eq!(nodes_to_hold(&nodes, &[], NODE).nodes, 1);
        // A node being deleted is gone; its pods need a place.
        let mut gone = node("d", 4, &[1.5]);
        gone.deleting = true;
        let nodes = [node("a", 1, &[1.0]), gone];
        assert_eq!(nodes_to_hold(&nodes, &[], NODE).nodes, 2);
        // Nothing anywhere: no node is needed.
        assert_eq!(nodes_to_hold(&[node("a", 1, &[])], &[], NODE).nodes, 0);
    }

    #[test]
    fn the_pods_dimension_counts() {
        let small = Capacity { pods: 2.0, ..NODE };
        let nodes = [node("a", 1, &[0.1, 0.1]), node("b", 2, &[0.1])];
        assert_eq!(nodes_to_hold(&nodes, &[], small).nodes, 2);
        assert_eq!(nodes_to_hold(&nodes, &[cpu(0.1)], small).nodes, 2);
        assert_eq!(nodes_to_hold(&nodes, &[cpu(0.1), cpu(0.1)], small).nodes, 3);
    }

    /// Numbers below `n`, the same from the same seed (a linear congruential generator).
    fn numbers(mut seed: u64) -> impl FnMut(u64) -> u64 {
        move |n| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        }
    }

    #[test]
    fn the_room_tree_places_every_item_where_a_scan_would() {
        // A scan of every room, in order: the first fit the tree must match.
        fn scan(items: &[Demand], mut rooms: Vec<Demand>, capacity: Capacity) -> Vec<Demand> {
            for item in items {
                match rooms.iter_mut().find(|r| fits_in(item, r)) {
                    Some(r) => take(r, item),
                    None => {
                        let mut fresh = room(capacity, &[]);
                        take(&mut fresh, item);
                        rooms.push(fresh);
                    }
                }
            }
            rooms
        }
        let capacity = NODE;
        let mut next = numbers(7);
        for _ in 0..50 {
            let rooms: Vec<Demand> = (0..next(20))
                .map(|_| {
                    let used: Vec<Demand> = (0..next(4))
                        .map(|_| Demand {
                            cpu: next(5) as f64 * 0.1,
                            memory: next(4) as f64 * GI,
                            pods: 1.0,
                        })
                        .collect();
                    room(capacity, &used)
                })
                .collect();
            let items: Vec<Demand> = (0..next(200))
                .map(|_| Demand {
                    cpu: (1 + next(20)) as f64 * 0.1,
                    memory: next(8) as f64 * GI,
                    pods: 1.0,
                })
                .collect();
            let expected = scan(&items, rooms.clone(), capacity);
            let mut tree = Rooms::new(rooms, items.len());
            for item in &items {
                if !tree.take_first_fit(item) {
                    let mut fresh = room(capacity, &[]);
                    take(&mut fresh, item);
                    tree.push(fresh);
                }
            }
            let placed: Vec<Demand> = (0..tree.len).map(|i| tree.tree[tree.size + i]).collect();
            assert_eq!(placed, expected);
        }
    }

    #[test]
    fn the_search_for_nodes_that_can_go_matches_a_scan_of_every_count() {
        let mut next = numbers(11);
        for round in 0..200 {
            let nodes: Vec<NodeLoad> = (0..1 + next(12))
                .map(|i| {
                    // What a scheduler could have bound: within the node's 2 cpu.
                    let mut pods = Vec::new();
                    let mut used = 0.0;
                    for _ in 0..next(6) {
                        let c = (1 + next(8)) as f64 * 0.1;
                        if used + c <= NODE.cpu + 1e-9 {
                            used += c;
                            pods.push(c);
                        }
                    }
                    node(&format!("n{i}"), i as i64, &pods)
                })
                .collect();
            let pending: Vec<Demand> = (0..next(3))
                .map(|_| cpu((1 + next(10)) as f64 * 0.1))
                .collect();
            // The reference: try every number of nodes to remove, in the removal order.
            let mut live: Vec<&NodeLoad> = nodes.iter().collect();
            live.sort_by_cached_key(|n| {
                shared_crd::nodepool::removal_order(n.ready, n.pods.len(), n.created, &n.name)
            });
            let fits = |k: usize| {
                let items: Vec<&Demand> = live[..k]
                    .iter()
                    .flat_map(|n| &n.pods)
                    .chain(&pending)
                    .collect();
                let rooms = live[k..].iter().map(|n| room(NODE, &n.pods)).collect();
                pack(&items, rooms, NODE) == 0
            };
            if !fits(0) {
                continue;
            }
            let linear = live.len()
                - (0..=live.len())
                    .take_while(|k| fits(*k))
                    .last()
                    .unwrap_or(0);
            let got = nodes_to_hold(&nodes, &pending, NODE).nodes as usize;
            assert!(
                fits(live.len() - got),
                "round {round}: {got} nodes do not hold the pods"
            );
            assert!(got >= fewest_by_requests(&live, &pending.iter().collect::<Vec<_>>(), NODE));
            assert_eq!(
                got, linear,
                "round {round}: the search and a scan of every k differ"
            );
        }
    }
}
