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

    // Merging conditions into a list (by type, the rest kept, no change for the same
    // body) is operator-kit's `merge`, tested there.

    #[test]
    fn transition_time_is_kept_when_the_status_is_unchanged() {
        let shown = [Condition::new(
            "Ready",
            ConditionStatus::True,
            "A",
            "",
            Some(1),
            at(10),
        )];
        let new = Condition::new("Ready", ConditionStatus::True, "B", "why", Some(2), at(20));
        let carried = carry_transition_time(new, &shown);
        assert_eq!(carried.reason, "B");
        assert_eq!(carried.last_transition_time, at(10));
    }

    #[test]
    fn transition_time_moves_when_the_status_flips() {
        let shown = [Condition::new(
            "Ready",
            ConditionStatus::True,
            "A",
            "",
            None,
            at(10),
        )];
        let new = Condition::new("Ready", ConditionStatus::False, "A", "", None, at(20));
        assert_eq!(
            carry_transition_time(new, &shown).last_transition_time,
            at(20)
        );
    }

    #[test]
    fn a_condition_of_a_new_type_keeps_its_own_time() {
        let shown = [Condition::new(
            "Active",
            ConditionStatus::True,
            "A",
            "",
            None,
            at(1),
        )];
        let new = Condition::new(
            "NodePoolReady",
            ConditionStatus::False,
            "AtQuota",
            "",
            None,
            at(2),
        );
        assert_eq!(
            carry_transition_time(new, &shown).last_transition_time,
            at(2)
        );
    }
}
