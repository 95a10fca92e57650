//! The standard Kubernetes condition shape, stored as a list-map keyed by `type`
//! so that two field managers can each own their own entry in one list.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `True`, `False` or `Unknown`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One observation of an object's state (metav1.Condition).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type in CamelCase, such as `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    pub status: ConditionStatus,
    /// Machine-readable CamelCase reason for the last transition.
    pub reason: String,
    /// Human-readable details.
    // Left out when empty: a 1.20 server's server-side apply reads `""` as null, and it
    // rejects a schema default of `""` too.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(transform = without_default)]
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: Time,
    /// The `.metadata.generation` this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    pub fn new(
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
        observed_generation: Option<i64>,
        now: Time,
    ) -> Self {
        Self {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message: message.into(),
            last_transition_time: now,
            observed_generation,
        }
    }

    /// Same status, reason, message and generation: nothing a reader would see changed.
    pub fn same_state(&self, other: &Condition) -> bool {
        self.type_ == other.type_
            && self.status == other.status
            && self.reason == other.reason
            && self.message == other.message
            && self.observed_generation == other.observed_generation
    }
}

/// `new`, with the `lastTransitionTime` of the condition of its type in `previous` when
/// the status did not change (a condition's time moves only when its status flips).
pub fn carry_transition_time(mut new: Condition, previous: &[Condition]) -> Condition {
    if let Some(old) = find(previous, &new.type_)
        && old.status == new.status
    {
        new.last_transition_time = old.last_transition_time.clone();
    }
    new
}

fn without_default(schema: &mut schemars::Schema) {
    schema.remove("default");
}

/// Finds a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Puts `new` into `conditions`, keeping `lastTransitionTime` when the status did not
/// change (the meta.SetStatusCondition rule). Returns whether anything changed.
pub fn upsert(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) if existing.same_state(&new) => false,
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            *existing = new;
            true
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// A list-map keyed by `type`: the server merges entries by type under server-side apply.
pub(crate) fn list_map_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Condition>>();
    schema.insert("x-kubernetes-list-type".into(), "map".into());
    schema.insert(
        "x-kubernetes-list-map-keys".into(),
        serde_json::json!(["type"]),
    );
    schema
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn upsert_keeps_transition_time_when_status_is_unchanged() {
        let mut list = vec![Condition::new(
            "Ready",
            ConditionStatus::True,
            "A",
            "",
            Some(1),
            at(10),
        )];
        let changed = upsert(
            &mut list,
            Condition::new("Ready", ConditionStatus::True, "B", "why", Some(2), at(20)),
        );
        assert!(changed);
        assert_eq!(list[0].reason, "B");
        assert_eq!(list[0].last_transition_time, at(10));
    }

    #[test]
    fn upsert_moves_transition_time_when_status_flips() {
        let mut list = vec![Condition::new(
            "Ready",
            ConditionStatus::True,
            "A",
            "",
            None,
            at(10),
        )];
        assert!(upsert(
            &mut list,
            Condition::new("Ready", ConditionStatus::False, "A", "", None, at(20))
        ));
        assert_eq!(list[0].last_transition_time, at(20));
    }

    #[test]
    fn upsert_reports_no_change_for_the_same_state() {
        let mut list = vec![Condition::new(
            "Ready",
            ConditionStatus::True,
            "A",
            "m",
            None,
            at(10),
        )];
        let same = Condition::new("Ready", ConditionStatus::True, "A", "m", None, at(99));
        assert!(!upsert(&mut list, same));
        assert_eq!(list[0].last_transition_time, at(10));
    }

    #[test]
    fn upsert_appends_other_types_and_keeps_the_rest() {
        let mut list = vec![Condition::new(
            "Active",
            ConditionStatus::True,
            "A",
            "",
            None,
            at(1),
        )];
        assert!(upsert(
            &mut list,
            Condition::new(
                "NodePoolReady",
                ConditionStatus::False,
                "AtQuota",
                "",
                None,
                at(2)
            )
        ));
        assert_eq!(list.len(), 2);
        assert!(find(&list, "Active").is_some());
        assert!(find(&list, "NodePoolReady").is_some());
    }
}
