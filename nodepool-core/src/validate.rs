//! A NodePool's spec checked as a whole before anything is done for it, and read into the
//! rules the controller acts on. The CRD schema catches what a schema can (patterns,
//! enums, ranges); what it cannot (a cron expression, a time zone, a label key the API
//! would refuse on a Node, a pool name too long for its node names) is caught here, and
//! the error names the field. A pool that fails is `Ready=False InvalidSpec`, with a
//! Warning event; nothing is created for it, and no other pool is affected.
use std::time::Duration;

use jiff::Timestamp;
use kube_core::ResourceExt;
use shared_crd::{DisruptionBudget, DisruptionReason, NodePool, NodeTemplate};

use crate::schedule::Window;

/// Longest pool name: its node names (`<pool>-<5 chars>`) are also the value of their
/// `kubernetes.io/hostname` label, which holds at most 63 characters.
pub const MAX_POOL_NAME: usize = 63 - 6;

/// The budget a pool without budgets gets, as in Karpenter.
pub const DEFAULT_BUDGET: &str = "10%";

/// How long a node may be NotReady before it is repaired, by default.
pub const DEFAULT_REPAIR_AFTER: Duration = Duration::from_secs(600);

/// What a valid pool's spec says about disruption, read into values.
#[derive(Clone, Debug)]
pub struct Rules {
    /// `spec.template.expireAfter`; `None`: never.
    pub expire_after: Option<Duration>,
    /// `spec.disruption.repairAfter`; `None`: never.
    pub repair_after: Option<Duration>,
    /// `spec.template.terminationGracePeriodSeconds`.
    pub termination_grace: Option<Duration>,
    pub budgets: Vec<Budget>,
}

/// One disruption budget, read.
#[derive(Clone, Debug)]
pub struct Budget {
    nodes: Nodes,
    /// Empty: every reason.
    reasons: Vec<DisruptionReason>,
    window: Option<Window>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Nodes {
    Count(usize),
    Percent(u32),
}

impl Budget {
    /// Nodes it lets go at once in a pool of `pool_nodes`: a percentage rounds up.
    pub fn nodes(&self, pool_nodes: usize) -> usize {
        match self.nodes {
            Nodes::Count(n) => n,
            Nodes::Percent(p) => (pool_nodes * p as usize).div_ceil(100),
        }
    }

    pub fn covers(&self, reason: DisruptionReason) -> bool {
        self.reasons.is_empty() || self.reasons.contains(&reason)
    }

    pub fn is_active(&self, now: Timestamp) -> bool {
        self.window.as_ref().is_none_or(|w| w.is_active(now))
    }
}

impl Rules {
    /// Most nodes of a pool of `pool_nodes` that may be disrupted at once for `reason` at
    /// `now`: the strictest active budget that covers it. With budgets given and none of
    /// them active, there is no limit (as in Karpenter).
    pub fn limit(&self, reason: DisruptionReason, pool_nodes: usize, now: Timestamp) -> usize {
        self.budgets
            .iter()
            .filter(|b| b.covers(reason) && b.is_active(now))
            .map(|b| b.nodes(pool_nodes))
            .min()
            .unwrap_or(usize::MAX)
    }

    /// The next time a budget's window opens or closes.
    pub fn next_window_change(&self, now: Timestamp) -> Option<Timestamp> {
        self.budgets
            .iter()
            .filter_map(|b| b.window.as_ref()?.next_change(now))
            .min()
    }
}

/// Checks the whole spec of `pool` and reads its disruption rules; the error names the
/// field and says why.
pub fn validate(pool: &NodePool) -> Result<Rules, String> {
    let name = pool.name_any();
    if name.len() > MAX_POOL_NAME {
        return Err(format!(
            "metadata.name: {} characters; a pool name has at most {MAX_POOL_NAME}, so that \
             its node names (<pool>-<5 characters>) fit the 63 of a hostname label",
            name.len()
        ));
    }
    let template = &pool.spec.template;
    validate_template(template)?;
    let expire_after = duration_or_never(
        "spec.template.expireAfter",
        template.expire_after.as_deref(),
    )?;
    let disruption = pool.spec.disruption.clone().unwrap_or_default();
    let repair_after = match disruption.repair_after.as_deref() {
        None => Some(DEFAULT_REPAIR_AFTER),
        Some(text) => duration_or_never("spec.disruption.repairAfter", Some(text))?,
    };
    let default_budget = [DisruptionBudget {
        nodes: DEFAULT_BUDGET.into(),
        ..Default::default()
    }];
    let budgets = if disruption.budgets.is_empty() {
        &default_budget[..]
    } else {
        &disruption.budgets[..]
    };
    let budgets = budgets
        .iter()
        .enumerate()
        .map(|(i, b)| budget(&format!("spec.disruption.budgets[{i}]"), b))
        .collect::<Result<_, _>>()?;
    Ok(Rules {
        expire_after,
        repair_after,
        termination_grace: template
            .termination_grace_period_seconds
            .map(|s| Duration::from_secs(s.max(0) as u64)),
        budgets,
    })
}

/// Checks what every Node made from `template` must carry: positive quantities (and a
/// whole number of pods), label keys and values the API accepts, taints with a known
/// effect.
pub fn validate_template(template: &NodeTemplate) -> Result<(), String> {
    let capacity = template.capacity.values()?;
    if capacity.pods.fract() != 0.0 {
        return Err(format!(
            "spec.template.capacity.pods: {:?} is not a whole number of pods",
            template.capacity.pods.0
        ));
    }
    for (key, value) in &template.labels {
        qualified_name(key).map_err(|why| format!("spec.template.labels: key {key:?} {why}"))?;
        label_value(value)
            .map_err(|why| format!("spec.template.labels[{key:?}]: value {value:?} {why}"))?;
    }
    for (i, taint) in template.taints.iter().enumerate() {
        let field = format!("spec.template.taints[{i}]");
        qualified_name(&taint.key).map_err(|why| format!("{field}.key: {:?} {why}", taint.key))?;
        if let Some(value) = &taint.value {
            label_value(value).map_err(|why| format!("{field}.value: {value:?} {why}"))?;
        }
        if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&taint.effect.as_str()) {
            return Err(format!(
                "{field}.effect: {:?} is not NoSchedule, PreferNoSchedule or NoExecute",
                taint.effect
            ));
        }
    }
    Ok(())
}

fn budget(field: &str, b: &DisruptionBudget) -> Result<Budget, String> {
    let nodes = match b.nodes.strip_suffix('%') {
        Some(p) => p.parse().ok().filter(|p| *p <= 100).map(Nodes::Percent),
        None => b.nodes.parse().ok().map(Nodes::Count),
    }
    .ok_or_else(|| {
        format!(
            "{field}.nodes: {:?} is neither a number of nodes nor a percentage from 0% to 100%",
            b.nodes
        )
    })?;
    let window = match (&b.schedule, &b.duration) {
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            return Err(format!(
                "{field}: schedule and duration go together; give both or neither"
            ));
        }
        (Some(schedule), Some(duration)) => {
            let duration = parse_duration(&format!("{field}.duration"), duration)?;
            let window = Window::new(schedule, duration, b.time_zone.as_deref());
            Some(window.map_err(|why| {
                let which = if why.contains("time zone") {
                    "timeZone"
                } else {
                    "schedule"
                };
                format!("{field}.{which}: {why}")
            })?)
        }
    };
    if b.time_zone.is_some() && window.is_none() {
        return Err(format!(
            "{field}.timeZone: only a budget with a schedule has one"
        ));
    }
    Ok(Budget {
        nodes,
        reasons: b.reasons.clone(),
        window,
    })
}

fn duration_or_never(field: &str, text: Option<&str>) -> Result<Option<Duration>, String> {
    match text {
        None | Some("Never") => Ok(None),
        Some(text) => parse_duration(field, text).map(Some),
    }
}

/// A Go duration (`"720h"`, `"1h30m"`, `"40s"`), not negative.
fn parse_duration(field: &str, text: &str) -> Result<Duration, String> {
    let parsed: kube_core::duration::Duration = text.parse().map_err(|e| {
        format!("{field}: {text:?} is not a duration such as \"720h\" or \"40s\" ({e})")
    })?;
    if parsed.is_negative() {
        return Err(format!("{field}: {text:?} is negative"));
    }
    Ok(parsed.into())
}

/// A label or taint key: an optional DNS subdomain prefix and `/`, then a name of at most
/// 63 characters (alphanumerics, `-`, `_`, `.`, alphanumeric at both ends).
fn qualified_name(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        let dns = prefix.len() <= 253
            && prefix.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            });
        if !dns {
            return Err("has a prefix that is not a DNS subdomain".into());
        }
    }
    if name.is_empty() {
        return Err("has an empty name".into());
    }
    label_value(name).map_err(|why| why.replace("is ", "has a name that is "))
}

/// A label value: empty, or at most 63 alphanumerics, `-`, `_` and `.`, with an
/// alphanumeric at both ends.
fn label_value(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err("is longer than 63 characters".into());
    }
    let allowed = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ends = |b: Option<u8>| b.is_none_or(|b| b.is_ascii_alphanumeric());
    if !allowed || !ends(value.bytes().next()) || !ends(value.bytes().last()) {
        return Err(
            "is not alphanumerics, '-', '_' and '.' with an alphanumeric at both ends".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Taint;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use shared_crd::{Disruption, NodeCapacity, NodePoolSpec};

    fn pool(template: NodeTemplate, disruption: Option<Disruption>) -> NodePool {
        NodePool::new(
            "web",
            NodePoolSpec {
                replicas: 3,
                template,
                disruption,
            },
        )
    }

    fn error(template: NodeTemplate) -> String {
        validate(&pool(template, None)).unwrap_err()
    }

    fn budgets(budgets: Vec<DisruptionBudget>) -> Result<Rules, String> {
        validate(&pool(
            NodeTemplate::default(),
            Some(Disruption {
                budgets,
                ..Default::default()
            }),
        ))
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn a_default_pool_repairs_after_10m_never_expires_and_lets_10_percent_go() {
        let rules = validate(&pool(NodeTemplate::default(), None)).unwrap();
        assert_eq!(rules.repair_after, Some(Duration::from_secs(600)));
        assert_eq!(rules.expire_after, None);
        let now = at("2026-12-02T00:00:00Z");
        // 10%, rounded up: 1 node for any pool up to 10 nodes, 2 for 11 to 20.
        for (nodes, limit) in [(1, 1), (3, 1), (10, 1), (11, 2), (20, 2), (0, 0)] {
            assert_eq!(
                rules.limit(DisruptionReason::Drifted, nodes, now),
                limit,
                "{nodes} nodes"
            );
        }
    }

    #[test]
    fn the_strictest_active_budget_for_the_reason_wins() {
        let rules = budgets(vec![
            DisruptionBudget {
                nodes: "2".into(),
                ..Default::default()
            },
            DisruptionBudget {
                nodes: "0".into(),
                reasons: vec![DisruptionReason::Drifted],
                ..Default::default()
            },
            DisruptionBudget {
                nodes: "50%".into(),
                reasons: vec![DisruptionReason::ScaleDown],
                ..Default::default()
            },
        ])
        .unwrap();
        let now = at("2026-12-02T00:00:00Z");
        assert_eq!(rules.limit(DisruptionReason::Drifted, 10, now), 0);
        assert_eq!(rules.limit(DisruptionReason::Expired, 10, now), 2);
        assert_eq!(rules.limit(DisruptionReason::ScaleDown, 3, now), 2);
        assert_eq!(rules.limit(DisruptionReason::ScaleDown, 1, now), 1);
    }

    #[test]
    fn a_scheduled_budget_binds_only_inside_its_window() {
        // No drift during business hours in Berlin; outside them nothing limits it.
        let rules = budgets(vec![DisruptionBudget {
            nodes: "0".into(),
            reasons: vec![DisruptionReason::Drifted],
            schedule: Some("0 9 * * mon-fri".into()),
            duration: Some("8h".into()),
            time_zone: Some("Europe/Berlin".into()),
        }])
        .unwrap();
        let (inside, outside) = (at("2026-12-02T10:00:00Z"), at("2026-12-02T18:00:00Z"));
        assert_eq!(rules.limit(DisruptionReason::Drifted, 5, inside), 0);
        assert_eq!(
            rules.limit(DisruptionReason::Drifted, 5, outside),
            usize::MAX
        );
        assert_eq!(
            rules.limit(DisruptionReason::Expired, 5, inside),
            usize::MAX,
            "a reason the budget does not name"
        );
        assert_eq!(
            rules.next_window_change(inside),
            Some(at("2026-12-02T16:00:00Z"))
        );
    }

    #[test]
    fn bad_disruption_settings_name_their_field() {
        let cases = [
            (
                DisruptionBudget {
                    nodes: "ten".into(),
                    ..Default::default()
                },
                "budgets[0].nodes: \"ten\"",
            ),
            (
                DisruptionBudget {
                    nodes: "150%".into(),
                    ..Default::default()
                },
                "budgets[0].nodes",
            ),
            (
                DisruptionBudget {
                    nodes: "1".into(),
                    schedule: Some("0 25 * * *".into()),
                    duration: Some("1h".into()),
                    ..Default::default()
                },
                "budgets[0].schedule: hour 25",
            ),
            (
                DisruptionBudget {
                    nodes: "1".into(),
                    schedule: Some("@daily".into()),
                    ..Default::default()
                },
                "schedule and duration go together",
            ),
            (
                DisruptionBudget {
                    nodes: "1".into(),
                    schedule: Some("@daily".into()),
                    duration: Some("1x".into()),
                    ..Default::default()
                },
                "budgets[0].duration: \"1x\"",
            ),
            (
                DisruptionBudget {
                    nodes: "1".into(),
                    schedule: Some("@daily".into()),
                    duration: Some("1h".into()),
                    time_zone: Some("Nowhere/Special".into()),
                    ..Default::default()
                },
                "budgets[0].timeZone: \"Nowhere/Special\" is not a known time zone",
            ),
        ];
        for (b, says) in cases {
            let e = budgets(vec![b]).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        let e = validate(&pool(
            NodeTemplate {
                expire_after: Some("soon".into()),
                ..Default::default()
            },
            None,
        ))
        .unwrap_err();
        assert!(e.starts_with("spec.template.expireAfter: \"soon\""), "{e}");
        let e = validate(&pool(
            NodeTemplate::default(),
            Some(Disruption {
                repair_after: Some("-5m".into()),
                ..Default::default()
            }),
        ))
        .unwrap_err();
        assert!(e.contains("spec.disruption.repairAfter"), "{e}");
    }

    #[test]
    fn invalid_or_non_positive_capacity_is_rejected_with_the_field() {
        let mut t = NodeTemplate::default();
        assert!(validate_template(&t).is_ok());
        t.capacity = NodeCapacity {
            cpu: Quantity("lots".into()),
            ..NodeCapacity::default()
        };
        assert!(validate_template(&t).unwrap_err().contains("capacity.cpu"));
        t.capacity = NodeCapacity {
            pods: Quantity("0".into()),
            ..NodeCapacity::default()
        };
        assert!(
            validate_template(&t)
                .unwrap_err()
                .contains("capacity.pods: must be positive")
        );
    }

    /// What a user meets: templates no Node can carry are refused before any create.
    #[test]
    fn a_template_no_node_can_carry_is_refused_with_the_field() {
        let e = error(NodeTemplate {
            labels: [("team name".to_owned(), "x".to_owned())].into(),
            ..Default::default()
        });
        assert!(
            e.starts_with("spec.template.labels: key \"team name\""),
            "{e}"
        );
        let e = error(NodeTemplate {
            labels: [("example.com/team".to_owned(), "-x".to_owned())].into(),
            ..Default::default()
        });
        assert!(e.contains("value \"-x\""), "{e}");
        let e = error(NodeTemplate {
            labels: [("Example.com/team".to_owned(), "x".to_owned())].into(),
            ..Default::default()
        });
        assert!(e.contains("not a DNS subdomain"), "{e}");
        let e = error(NodeTemplate {
            taints: vec![Taint {
                key: "dedicated".into(),
                value: Some("gpu".into()),
                effect: "NoWay".into(),
                time_added: None,
            }],
            ..Default::default()
        });
        assert!(
            e.starts_with("spec.template.taints[0].effect: \"NoWay\""),
            "{e}"
        );
        let e = error(NodeTemplate {
            capacity: NodeCapacity {
                pods: Quantity("1.5".into()),
                ..NodeCapacity::default()
            },
            ..Default::default()
        });
        assert!(
            e.contains("capacity.pods: \"1.5\" is not a whole number"),
            "{e}"
        );
        let long = NodePool::new(&"p".repeat(58), pool(NodeTemplate::default(), None).spec);
        assert!(
            validate(&long)
                .unwrap_err()
                .starts_with("metadata.name: 58")
        );
        let fits = NodePool::new(&"p".repeat(57), pool(NodeTemplate::default(), None).spec);
        assert!(validate(&fits).is_ok());
        // Keys the API takes.
        for key in [
            "a",
            "tier",
            "example.com/tier",
            "a.b-c_d",
            "kubernetes.io/arch",
        ] {
            assert!(qualified_name(key).is_ok(), "{key}");
        }
    }
}
