//! Which of a pool's nodes go, and when: replacement of Unhealthy, Expired and Drifted
//! nodes, removal of surplus ones (ScaleDown), within the disruption budgets and around
//! `do-not-disrupt`. The plan is a function of what the caches show and the clock, and of
//! nothing remembered: a restart, or a new leader, makes the same plan.
//!
//! - A node to replace gets its replacement first: the pool's desired size is
//!   `replicas` plus one per node being replaced.
//! - A node being replaced is deleted (cordoned and drained by its finalizer) only while
//!   the pool keeps at least `replicas` Ready, schedulable nodes without it: its
//!   replacement is Ready.
//! - Disrupted at once: the nodes being deleted plus those being replaced, at most the
//!   strictest active budget for the reason. The pool therefore never has more than
//!   `replicas` plus the budget's nodes.
//! - `do-not-disrupt` (on the node, or on a pod running there) holds a node back from
//!   every voluntary reason; an Expired node past `expireAfter` plus the pool's
//!   `terminationGracePeriodSeconds` goes anyway, as in Karpenter.
//! - Repair stops while more than 20% of the pool's nodes (rounded up) are unhealthy or
//!   on their way there.
use std::cmp::Reverse;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Node;
use kube_core::ResourceExt;
use shared_crd::condition::ConditionStatus;
use shared_crd::nodepool::removal_order;
use shared_crd::{DisruptionReason, reason};

use crate::nodes::{is_ready, ready_condition};
use crate::template::hash_of;
use crate::validate::Rules;

/// Percent of a pool's nodes that may be unhealthy, rounded up, before repair stops.
pub const UNHEALTHY_LIMIT_PERCENT: usize = 20;

/// One live node of the pool (not being deleted), with what the plan needs of its pods.
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    pub node: &'a Node,
    /// Pods bound to it.
    pub pods: usize,
    /// It, or a pod running on it, carries `nodepool.dev/do-not-disrupt: "true"`.
    pub do_not_disrupt: bool,
}

/// What a plan is made from.
pub struct Inputs<'a> {
    pub replicas: usize,
    pub rules: &'a Rules,
    /// The pool's current template hash.
    pub template_hash: &'a str,
    pub live: &'a [Observed<'a>],
    /// The pool's nodes being deleted (draining): they count against the budgets.
    pub terminating: usize,
    pub now: Timestamp,
}

/// A node and why it goes.
#[derive(Clone, Copy, Debug)]
pub struct Disrupted<'a> {
    pub node: &'a Node,
    pub reason: DisruptionReason,
}

impl Disrupted<'_> {
    pub fn name(&self) -> String {
        self.node.name_any()
    }
}

/// Why a node that should go stays for now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The budget for its reason: `limit` nodes at once, all taken.
    Budget { limit: usize },
    /// `do-not-disrupt` on the node or on one of its running pods.
    DoNotDisrupt,
    /// More of the pool's nodes are unhealthy than repair may touch.
    RepairBlocked { unhealthy: usize, allowed: usize },
}

/// What to do with a pool's nodes now.
#[derive(Debug)]
pub struct Plan<'a> {
    /// Nodes the pool should have, not counting those being deleted: `replicas`, plus one
    /// replacement per node in `replacing`.
    pub desired: usize,
    /// Nodes being replaced, first to go first. Each has a replacement on the way.
    pub replacing: Vec<Disrupted<'a>>,
    /// Nodes to delete now: replaced ones whose replacements are Ready, and surplus ones.
    pub delete: Vec<Disrupted<'a>>,
    /// Nodes that should go and wait, and why.
    pub held: Vec<(Disrupted<'a>, Hold)>,
    /// Live nodes on the current template.
    pub updated: usize,
    /// When the plan may change with time alone: a node expires or turns Unhealthy, or a
    /// budget's window opens or closes.
    pub next_check: Option<Timestamp>,
}

/// Why `node` should be replaced now, if it should, and when that may change.
fn reason_of(node: &Node, input: &Inputs) -> (Option<DisruptionReason>, Option<Timestamp>) {
    let now = input.now;
    let mut next: Option<Timestamp> = None;
    let mut soonest = |t: Timestamp| next = Some(next.map_or(t, |n| n.min(t)));
    let after = |since: Timestamp, d: Duration| since.checked_add(d).ok();

    let mut reason = None;
    if let Some(repair_after) = input.rules.repair_after
        && !is_ready(node)
    {
        let since = ready_condition(node)
            .and_then(|c| c.last_transition_time.as_ref())
            .or(node.metadata.creation_timestamp.as_ref())
            .map(|t| t.0);
        if let Some(due) = since.and_then(|s| after(s, repair_after)) {
            if due <= now {
                reason = Some(DisruptionReason::Unhealthy);
            } else {
                soonest(due);
            }
        }
    }
    if let Some(expire_after) = input.rules.expire_after
        && let Some(created) = node.metadata.creation_timestamp.as_ref()
        && let Some(due) = after(created.0, expire_after)
    {
        if due <= now {
            reason = reason.or(Some(DisruptionReason::Expired));
        } else {
            soonest(due);
        }
    }
    if hash_of(node).is_some_and(|h| h != input.template_hash) {
        reason = reason.or(Some(DisruptionReason::Drifted));
    }
    (reason, next)
}

/// When an Expired node's `do-not-disrupt` stops holding it back, as in Karpenter, where
/// expiry is forceful: at `expireAfter`, when the pool sets a
/// `terminationGracePeriodSeconds`. Its drain then waits for the do-not-disrupt pods until
/// that grace period, so the node lives at most `expireAfter` plus the grace period. A pool
/// without one keeps such a node until its pods end: nothing would bound the drain.
fn expiry_overrides_at(node: &Node, rules: &Rules) -> Option<Timestamp> {
    let created = node.metadata.creation_timestamp.as_ref()?.0;
    rules.termination_grace?;
    created.checked_add(rules.expire_after?).ok()
}

/// How long after its creation a node's NotReady still means it is starting.
const STARTING: Duration = Duration::from_secs(10);

/// NotReady (or Unknown) since a moment clearly after the node was made: it was up and
/// failed, rather than still starting.
fn failed_after_start(node: &Node) -> bool {
    if is_ready(node) {
        return false;
    }
    let since = ready_condition(node).and_then(|c| c.last_transition_time.as_ref());
    let created = node.metadata.creation_timestamp.as_ref();
    match (since, created) {
        (Some(since), Some(created)) => created
            .0
            .checked_add(STARTING)
            .is_ok_and(|started| since.0 > started),
        _ => false,
    }
}

fn schedulable(node: &Node) -> bool {
    !node
        .spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

fn created(node: &Node) -> i64 {
    node.creation_timestamp()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}

/// The plan for one pool.
pub fn plan<'a>(input: &Inputs<'a>) -> Plan<'a> {
    let now = input.now;
    let rules = input.rules;
    let pool_nodes = input.live.len();
    let mut next_check = rules.next_window_change(now);
    let mut soonest = |t: Option<Timestamp>| {
        if let Some(t) = t {
            next_check = Some(next_check.map_or(t, |n| n.min(t)));
        }
    };

    // Which nodes should be replaced, and why. The repair stop counts the Unhealthy nodes
    // and those on their way there (NotReady since after they started), as Karpenter
    // counts every node with the condition: nodes that fail together are held back
    // together, not repaired one by one as each reaches `repairAfter`. A node still
    // starting is not counted: it is most often the replacement of a sick one, and
    // counting it would stop the very repair it serves.
    let mut candidates: Vec<(&Observed<'a>, DisruptionReason)> = Vec::new();
    let mut unhealthy = 0;
    for observed in input.live {
        let (reason, next) = reason_of(observed.node, input);
        soonest(next);
        if reason == Some(DisruptionReason::Unhealthy) || failed_after_start(observed.node) {
            unhealthy += 1;
        }
        if let Some(reason) = reason {
            candidates.push((observed, reason));
        }
    }
    let unhealthy_allowed = (pool_nodes * UNHEALTHY_LIMIT_PERCENT).div_ceil(100);

    // Unhealthy first, then Expired, then Drifted; within a reason the sick, the empty
    // and the old first.
    candidates.sort_by_cached_key(|(o, reason)| {
        (
            *reason,
            is_ready(o.node),
            o.pods,
            created(o.node),
            o.node.name_any(),
        )
    });

    let mut held = Vec::new();
    let mut replacing: Vec<Disrupted<'a>> = Vec::new();
    for (observed, reason) in candidates {
        let disrupted = Disrupted {
            node: observed.node,
            reason,
        };
        if reason == DisruptionReason::Unhealthy && unhealthy > unhealthy_allowed {
            let hold = Hold::RepairBlocked {
                unhealthy,
                allowed: unhealthy_allowed,
            };
            held.push((disrupted, hold));
            continue;
        }
        if reason.is_voluntary() && observed.do_not_disrupt {
            let overridden = reason == DisruptionReason::Expired
                && expiry_overrides_at(observed.node, rules).is_some_and(|t| {
                    soonest(Some(t));
                    t <= now
                });
            if !overridden {
                held.push((disrupted, Hold::DoNotDisrupt));
                continue;
            }
        }
        let limit = rules.limit(reason, pool_nodes, now);
        if input.terminating + replacing.len() >= limit {
            held.push((disrupted, Hold::Budget { limit }));
            continue;
        }
        replacing.push(disrupted);
    }
    let desired = input.replicas + replacing.len();

    // A node being replaced goes once the pool keeps `replicas` Ready, schedulable
    // nodes without it.
    let mut ready = input
        .live
        .iter()
        .filter(|o| is_ready(o.node) && schedulable(o.node))
        .count();
    let mut delete = Vec::new();
    for d in &replacing {
        let counted = usize::from(is_ready(d.node) && schedulable(d.node));
        if ready - counted >= input.replicas {
            ready -= counted;
            delete.push(*d);
        }
    }

    // Surplus nodes (`replicas` went down), in the removal order the autoscaler assumes,
    // within the ScaleDown budget.
    let surplus = pool_nodes.saturating_sub(desired);
    if surplus > 0 {
        let limit = rules.limit(DisruptionReason::ScaleDown, pool_nodes, now);
        let in_flight = input.terminating + replacing.len();
        let mut ranked: Vec<&Observed<'a>> = input
            .live
            .iter()
            .filter(|o| !replacing.iter().any(|d| std::ptr::eq(d.node, o.node)))
            .collect();
        ranked.sort_by_cached_key(|o| {
            removal_order(
                is_ready(o.node),
                o.pods,
                created(o.node),
                &o.node.name_any(),
            )
        });
        let mut removed = 0;
        for o in ranked {
            if removed == surplus {
                break;
            }
            let disrupted = Disrupted {
                node: o.node,
                reason: DisruptionReason::ScaleDown,
            };
            if o.do_not_disrupt {
                held.push((disrupted, Hold::DoNotDisrupt));
            } else if in_flight + removed >= limit {
                held.push((disrupted, Hold::Budget { limit }));
                removed += 1;
            } else {
                delete.push(disrupted);
                removed += 1;
            }
        }
    }

    let updated = input
        .live
        .iter()
        .filter(|o| hash_of(o.node) == Some(input.template_hash))
        .count();
    held.sort_by_key(|(d, _)| (d.reason, Reverse(is_ready(d.node)), d.node.name_any()));
    Plan {
        desired,
        replacing,
        delete,
        held,
        updated,
        next_check,
    }
}

/// Names for a message: the first few, then how many more.
fn listed(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text += &format!(" and {} more", names.len() - SHOWN);
    }
    text
}

/// The pool's `Disrupting` condition for `plan`, with `terminating` of its nodes draining
/// and `blocked_drains` naming those whose drain PodDisruptionBudgets block: what is
/// replaced or removed and why, and what holds the rest back. True while a disruption
/// is under way (a node being replaced or removed, or draining while others wait); False
/// with the hold as its reason when nodes wait and nothing moves; False `UpToDate`
/// otherwise. A function of the state alone, so that a reconcile with nothing new
/// writes nothing.
pub fn condition(
    plan: &Plan,
    terminating: usize,
    blocked_drains: &[String],
) -> (ConditionStatus, &'static str, String) {
    let mut parts = Vec::new();
    for reason in DisruptionReason::ALL {
        let names: Vec<String> = plan
            .replacing
            .iter()
            .filter(|d| d.reason == reason)
            .map(Disrupted::name)
            .collect();
        if !names.is_empty() {
            parts.push(format!("replacing {} ({reason})", listed(&names)));
        }
    }
    let removing: Vec<String> = plan
        .delete
        .iter()
        .filter(|d| d.reason == DisruptionReason::ScaleDown)
        .map(Disrupted::name)
        .collect();
    if !removing.is_empty() {
        parts.push(format!("removing {} (ScaleDown)", listed(&removing)));
    }
    if terminating > 0 {
        parts.push(format!("{terminating} node(s) draining"));
    }
    if !blocked_drains.is_empty() {
        parts.push(format!(
            "the drain of {} is blocked by PodDisruptionBudgets",
            listed(blocked_drains)
        ));
    }
    let held = |pick: &dyn Fn(&Hold) -> bool| -> Vec<String> {
        plan.held
            .iter()
            .filter(|(_, h)| pick(h))
            .map(|(d, _)| d.name())
            .collect()
    };
    for reason in DisruptionReason::ALL {
        let waiting: Vec<(usize, String)> = plan
            .held
            .iter()
            .filter_map(|(d, h)| match h {
                Hold::Budget { limit } if d.reason == reason => Some((*limit, d.name())),
                _ => None,
            })
            .collect();
        if let Some((limit, _)) = waiting.first() {
            let names: Vec<String> = waiting.iter().map(|(_, n)| n.clone()).collect();
            parts.push(format!(
                "{} {reason} wait for the budget ({limit} node(s) at once): {}",
                names.len(),
                listed(&names)
            ));
        }
    }
    let kept = held(&|h| *h == Hold::DoNotDisrupt);
    if !kept.is_empty() {
        parts.push(format!("do-not-disrupt keeps {}", listed(&kept)));
    }
    if let Some((_, Hold::RepairBlocked { unhealthy, allowed })) = plan
        .held
        .iter()
        .find(|(_, h)| matches!(h, Hold::RepairBlocked { .. }))
    {
        parts.push(format!(
            "repair stopped: {unhealthy} nodes unhealthy, more than the {allowed} \
             ({UNHEALTHY_LIMIT_PERCENT}% of the pool, rounded up) repair may replace"
        ));
    }

    let moving = plan.replacing.first().map(|d| d.reason).or_else(|| {
        plan.delete.first().map(|d| d.reason).or_else(|| {
            (terminating > 0)
                .then(|| plan.held.first().map(|(d, _)| d.reason))
                .flatten()
        })
    });
    let (status, reason) = match (moving, plan.held.first()) {
        (Some(reason), _) => (ConditionStatus::True, reason.as_str()),
        (None, Some((_, hold))) => (
            ConditionStatus::False,
            match hold {
                Hold::Budget { .. } => reason::BUDGET_EXHAUSTED,
                Hold::DoNotDisrupt => reason::DO_NOT_DISRUPT,
                Hold::RepairBlocked { .. } => reason::REPAIR_BLOCKED,
            },
        ),
        (None, None) => {
            // No count here: the plan counts the nodes before this reconcile creates any,
            // and a message that changed with them would cost a second status write
            // (`updatedReplicas` has the count).
            parts.insert(0, "every node is on the current template".to_owned());
            (ConditionStatus::False, reason::UP_TO_DATE)
        }
    };
    (status, reason, parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nodes::tests::node;
    use crate::validate::validate;
    use k8s_openapi::api::core::v1::NodeSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use shared_crd::{
        Disruption, DisruptionBudget, NodePool, NodePoolSpec, NodeTemplate,
        TEMPLATE_HASH_ANNOTATION,
    };

    const NOW: i64 = 100_000;

    fn rules(disruption: Disruption, template: NodeTemplate) -> Rules {
        validate(&NodePool::new(
            "p",
            NodePoolSpec {
                replicas: 3,
                template,
                disruption: Some(disruption),
            },
        ))
        .unwrap()
    }

    fn default_rules() -> Rules {
        rules(Disruption::default(), NodeTemplate::default())
    }

    fn budget(nodes: &str) -> Rules {
        rules(
            Disruption {
                budgets: vec![DisruptionBudget {
                    nodes: nodes.into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            NodeTemplate::default(),
        )
    }

    /// A Ready node made `age` seconds ago from template `hash`.
    fn made(name: &str, age: i64, hash: &str) -> Node {
        let mut n = node(name, NOW - age, true);
        n.metadata.annotations =
            Some([(TEMPLATE_HASH_ANNOTATION.to_owned(), hash.to_owned())].into());
        n
    }

    fn not_ready_since(mut n: Node, since: i64) -> Node {
        let c = &mut n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0];
        c.status = "Unknown".into();
        c.last_transition_time = Some(Time(Timestamp::from_second(since).unwrap()));
        n
    }

    fn observed(nodes: &[Node]) -> Vec<Observed<'_>> {
        nodes
            .iter()
            .map(|node| Observed {
                node,
                pods: 0,
                do_not_disrupt: false,
            })
            .collect()
    }

    fn run<'a>(
        rules: &'a Rules,
        replicas: usize,
        live: &'a [Observed<'a>],
        terminating: usize,
    ) -> Plan<'a> {
        plan(&Inputs {
            replicas,
            rules,
            template_hash: "new",
            live,
            terminating,
            now: Timestamp::from_second(NOW).unwrap(),
        })
    }

    /// Three Ready nodes on the old template, `a` the oldest.
    fn three_drifted() -> [Node; 3] {
        [
            made("a", 300, "old"),
            made("b", 200, "old"),
            made("c", 100, "old"),
        ]
    }

    fn names(v: &[Disrupted]) -> Vec<String> {
        v.iter().map(|d| d.name()).collect()
    }

    #[test]
    fn a_drift_replaces_one_node_at_a_time_replacement_first() {
        let rules = default_rules();
        // Three nodes on the old template: the oldest goes first, its replacement first.
        let nodes = three_drifted();
        let live = observed(&nodes);
        let p = run(&rules, 3, &live, 0);
        assert_eq!(names(&p.replacing), ["a"]);
        assert_eq!(p.desired, 4, "one replacement");
        assert!(p.delete.is_empty(), "no Ready replacement yet");
        assert_eq!(p.updated, 0);
        assert_eq!(p.held.len(), 2);
        assert!(
            p.held
                .iter()
                .all(|(d, h)| d.reason == DisruptionReason::Drifted
                    && *h == Hold::Budget { limit: 1 })
        );

        // The replacement exists, not Ready: nothing goes.
        let mut with_new = nodes.to_vec();
        let mut r = made("r", 1, "new");
        r = not_ready_since(r, NOW - 1);
        with_new.push(r);
        let live = observed(&with_new);
        let p = run(&rules, 3, &live, 0);
        assert_eq!((p.desired, p.delete.len(), p.updated), (4, 0, 1));

        // Ready: the old node goes.
        with_new[3] = made("r", 1, "new");
        let live = observed(&with_new);
        let p = run(&rules, 3, &live, 0);
        assert_eq!(names(&p.delete), ["a"]);

        // While it drains (terminating, out of `live`), nothing else starts.
        let draining: Vec<Node> = with_new
            .iter()
            .filter(|n| n.name_any() != "a")
            .cloned()
            .collect();
        let live = observed(&draining);
        let p = run(&rules, 3, &live, 1);
        assert!(p.replacing.is_empty() && p.delete.is_empty());
        assert_eq!(p.desired, 3, "no new replacement while the budget is taken");
    }

    #[test]
    fn a_budget_of_two_replaces_two_at_once_and_zero_holds_the_drift() {
        let nodes: Vec<Node> = (0..5)
            .map(|i| made(&format!("n{i}"), 100 + i, "old"))
            .collect();
        let live = observed(&nodes);
        let two = budget("2");
        let p = run(&two, 5, &live, 0);
        assert_eq!(p.replacing.len(), 2);
        assert_eq!(p.desired, 7);
        let p = run(&two, 5, &live, 1);
        assert_eq!(p.replacing.len(), 1, "one draining takes one of the two");

        let zero = budget("0");
        let p = run(&zero, 5, &live, 0);
        assert!(p.replacing.is_empty());
        assert_eq!((p.desired, p.updated, p.held.len()), (5, 0, 5));
        assert!(p.held.iter().all(|(_, h)| *h == Hold::Budget { limit: 0 }));
    }

    #[test]
    fn an_unhealthy_node_is_replaced_after_repair_after_and_repair_stops_past_20_percent() {
        let rules = rules(
            Disruption {
                repair_after: Some("30s".into()),
                ..Default::default()
            },
            NodeTemplate::default(),
        );
        let mut nodes = vec![
            made("a", 900, "new"),
            made("b", 900, "new"),
            made("c", 900, "new"),
        ];
        nodes[0] = not_ready_since(nodes[0].clone(), NOW - 20);
        let live = observed(&nodes);
        let p = run(&rules, 3, &live, 0);
        assert!(p.replacing.is_empty(), "NotReady for 20s of 30s");
        assert_eq!(
            p.next_check,
            Some(Timestamp::from_second(NOW + 10).unwrap())
        );

        nodes[0] = not_ready_since(nodes[0].clone(), NOW - 30);
        let live = observed(&nodes);
        let p = run(&rules, 3, &live, 0);
        assert_eq!(names(&p.replacing), ["a"]);
        assert_eq!(p.replacing[0].reason, DisruptionReason::Unhealthy);
        assert!(
            p.delete.is_empty(),
            "two Ready nodes of three: its replacement first"
        );

        // Its replacement, still starting, is no second sick node: the repair goes on
        // (counting it would stop the repair and remove the replacement as surplus).
        let mut starting = node("r", NOW - 1, false);
        starting
            .status
            .as_mut()
            .unwrap()
            .conditions
            .as_mut()
            .unwrap()[0]
            .last_transition_time = Some(Time(Timestamp::from_second(NOW - 1).unwrap()));
        nodes.push(starting);
        let live = observed(&nodes);
        let p = run(&rules, 3, &live, 0);
        assert_eq!((names(&p.replacing), p.desired), (vec!["a".to_owned()], 4));
        assert!(p.delete.is_empty() && p.held.is_empty(), "{:?}", p.held);
        nodes.pop();

        // With its replacement Ready it goes (it counted for nothing Ready).
        nodes.push(made("r", 1, "new"));
        let live = observed(&nodes);
        assert_eq!(names(&run(&rules, 3, &live, 0).delete), ["a"]);

        // Two of three unhealthy: more than 20% (rounded up: 1 node): repair stops.
        nodes.pop();
        nodes[1] = not_ready_since(nodes[1].clone(), NOW - 60);
        let live = observed(&nodes);
        let p = run(&rules, 3, &live, 0);
        assert!(p.replacing.is_empty());
        assert_eq!(p.held.len(), 2);
        assert!(p.held.iter().all(|(_, h)| *h
            == Hold::RepairBlocked {
                unhealthy: 2,
                allowed: 1
            }));
    }

    #[test]
    fn expiry_replaces_old_nodes_and_sets_the_clock_for_the_next() {
        let rules = rules(
            Disruption::default(),
            NodeTemplate {
                expire_after: Some("40s".into()),
                ..Default::default()
            },
        );
        let nodes = [made("old", 50, "new"), made("young", 10, "new")];
        let live = observed(&nodes);
        let p = run(&rules, 2, &live, 0);
        assert_eq!(names(&p.replacing), ["old"]);
        assert_eq!(p.replacing[0].reason, DisruptionReason::Expired);
        assert_eq!(
            p.next_check,
            Some(Timestamp::from_second(NOW + 30).unwrap()),
            "young expires in 30s"
        );
    }

    #[test]
    fn do_not_disrupt_holds_voluntary_reasons_and_expiry_overrides_it_with_a_grace_period() {
        let template = |grace| NodeTemplate {
            expire_after: Some("40s".into()),
            termination_grace_period_seconds: grace,
            ..Default::default()
        };
        // Without a grace period nothing overrides it: "kept" is Expired, and held.
        let no_grace = rules(Disruption::default(), template(None));
        let nodes = [made("kept", 50, "new"), made("b", 30, "old")];
        let mut live = observed(&nodes);
        live[0].do_not_disrupt = true;
        let p = run(&no_grace, 2, &live, 0);
        assert_eq!(names(&p.replacing), ["b"], "the other node goes");
        assert!(
            p.held
                .iter()
                .any(|(d, h)| d.name() == "kept" && *h == Hold::DoNotDisrupt)
        );
        // With one, expiry is forceful at expireAfter, as in Karpenter; the drain then
        // waits for the pod up to the grace period.
        let grace = rules(Disruption::default(), template(Some(60)));
        let nodes = [made("kept", 50, "new")];
        let mut live = observed(&nodes);
        live[0].do_not_disrupt = true;
        let p = run(&grace, 1, &live, 0);
        assert_eq!(names(&p.replacing), ["kept"]);
        // Drifted is not forceful: do-not-disrupt holds a drifted node that has not expired.
        let nodes = [made("kept", 30, "old")];
        let mut live = observed(&nodes);
        live[0].do_not_disrupt = true;
        let p = run(&grace, 1, &live, 0);
        assert!(p.replacing.is_empty(), "{:?}", names(&p.replacing));
        // Unhealthy is not voluntary: do-not-disrupt does not hold a repair.
        let rules = default_rules();
        let nodes = [
            not_ready_since(made("sick", 900, "new"), NOW - 700),
            made("b", 900, "new"),
            made("c", 900, "new"),
            made("d", 900, "new"),
            made("e", 900, "new"),
        ];
        let mut live = observed(&nodes);
        live[0].do_not_disrupt = true;
        assert_eq!(names(&run(&rules, 5, &live, 0).replacing), ["sick"]);
    }

    #[test]
    fn a_scale_down_removes_within_its_budget_and_around_do_not_disrupt() {
        // 10 -> 2 with a budget of 1: one node at a time.
        let nodes: Vec<Node> = (0..10)
            .map(|i| made(&format!("n{i}"), 100 + i, "new"))
            .collect();
        let live = observed(&nodes);
        let one = budget("1");
        let p = run(&one, 2, &live, 0);
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.delete[0].reason, DisruptionReason::ScaleDown);
        assert_eq!(p.held.len(), 7);
        let p = run(&one, 2, &live, 1);
        assert!(p.delete.is_empty(), "one is still draining");
        // The newest goes first (the removal order), unless do-not-disrupt holds it.
        let mut live = observed(&nodes);
        live[0].do_not_disrupt = true; // n0, the newest
        let all = budget("100%");
        let p = run(&all, 9, &live, 0);
        assert_eq!(names(&p.delete), ["n1"]);
        assert!(
            p.held
                .iter()
                .any(|(d, h)| d.name() == "n0" && *h == Hold::DoNotDisrupt)
        );
    }

    #[test]
    fn a_rollout_never_leaves_fewer_ready_schedulable_nodes_than_replicas() {
        let rules = budget("2");
        let mut nodes = vec![
            made("a", 300, "old"),
            made("b", 200, "old"),
            made("c", 100, "old"),
        ];
        // Someone cordoned c: it counts for nothing schedulable.
        nodes[2].spec = Some(NodeSpec {
            unschedulable: Some(true),
            ..Default::default()
        });
        nodes.push(made("r1", 5, "new"));
        nodes.push(made("r2", 5, "new"));
        let live = observed(&nodes);
        let p = run(&rules, 3, &live, 0);
        // Ready and schedulable: a, b, r1, r2. Without a, three are left; without b too,
        // two: b waits for another replacement.
        assert_eq!(names(&p.replacing), ["a", "b"]);
        assert_eq!(names(&p.delete), ["a"]);
        let ready_left = nodes
            .iter()
            .filter(|n| !names(&p.delete).contains(&n.name_any()))
            .filter(|n| is_ready(n) && schedulable(n))
            .count();
        assert!(ready_left >= 3, "{ready_left}");
    }

    #[test]
    fn a_node_without_a_hash_is_not_drifted_and_a_steady_pool_plans_nothing() {
        let rules = default_rules();
        let mut legacy = node("legacy", NOW - 10, true);
        legacy.metadata.annotations = None;
        let nodes = [legacy, made("b", 10, "new")];
        let live = observed(&nodes);
        let p = run(&rules, 2, &live, 0);
        assert!(p.replacing.is_empty() && p.delete.is_empty() && p.held.is_empty());
        assert_eq!((p.desired, p.updated), (2, 1));
        assert_eq!(p.next_check, None);
    }

    #[test]
    fn the_condition_says_what_moves_and_what_holds_the_rest_back() {
        let rules = default_rules();
        let nodes = three_drifted();
        let live = observed(&nodes);
        let p = run(&rules, 3, &live, 0);
        let (status, why, message) = condition(&p, 0, &[]);
        assert_eq!((status, why), (ConditionStatus::True, "Drifted"));
        assert_eq!(
            message,
            "replacing a (Drifted); 2 Drifted wait for the budget (1 node(s) at once): b, c"
        );
        // a drains; b and c wait: still under way, and a blocked drain is named.
        let live = observed(&nodes[1..]);
        let p = run(&rules, 3, &live, 1);
        let (status, why, message) = condition(&p, 1, &["a".to_owned()]);
        assert_eq!((status, why), (ConditionStatus::True, "Drifted"));
        assert!(
            message.starts_with("1 node(s) draining; the drain of a is blocked"),
            "{message}"
        );
        // Nothing moves and a budget of 0 holds them.
        let zero = budget("0");
        let live = observed(&nodes);
        let p = run(&zero, 3, &live, 0);
        assert_eq!(condition(&p, 0, &[]).1, "BudgetExhausted");
        // All done.
        let fresh = [made("r", 1, "new")];
        let live = observed(&fresh);
        let p = run(&rules, 1, &live, 0);
        assert_eq!(
            condition(&p, 0, &[]),
            (
                ConditionStatus::False,
                "UpToDate",
                "every node is on the current template".to_owned()
            )
        );
    }

    /// Found by `make bench-scale` (1,000 pools, 2,000 status writes for a minimum of
    /// 1,000): the reconcile that creates a pool's nodes reports the condition from the
    /// plan made before them, so the condition must not change when they appear, or the
    /// next reconcile writes the status again.
    #[test]
    fn the_condition_is_the_same_before_and_after_the_nodes_of_a_scale_up_appear() {
        let rules = default_rules();
        let before = run(&rules, 2, &[], 0);
        let nodes = [made("a", 1, "new"), made("b", 1, "new")];
        let live = observed(&nodes);
        let after = run(&rules, 2, &live, 0);
        assert_eq!(condition(&before, 0, &[]), condition(&after, 0, &[]));
    }
}
