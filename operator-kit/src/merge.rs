//! What a server-side apply body does to an object, computed locally: the PUT strategies
//! and compare-before-write derive their change from the same body that apply sends, so
//! the two cannot drift.
//!
//! The rules are those of structured merge for the fields an operator owns: objects
//! merge key by key; a list whose items all carry a `type` key is a list-map (conditions)
//! and merges item by item; any other list, and any scalar, is replaced.
use serde_json::Value;

/// Merges `body` into `target`; returns whether `target` changed.
pub fn merge(target: &mut Value, body: &Value) -> bool {
    match (target, body) {
        (Value::Object(target), Value::Object(body)) => {
            let mut changed = false;
            for (key, value) in body {
                match target.get_mut(key) {
                    Some(existing) => changed |= merge(existing, value),
                    None => {
                        target.insert(key.clone(), value.clone());
                        changed = true;
                    }
                }
            }
            changed
        }
        (Value::Array(target), Value::Array(body)) if is_list_map(body) => {
            let mut changed = false;
            for item in body {
                let key = &item["type"];
                match target.iter_mut().find(|t| &t["type"] == key) {
                    Some(existing) => changed |= replace(existing, item),
                    None => {
                        target.push(item.clone());
                        changed = true;
                    }
                }
            }
            changed
        }
        (target, body) => replace(target, body),
    }
}

fn replace(target: &mut Value, body: &Value) -> bool {
    if target == body {
        false
    } else {
        *target = body.clone();
        true
    }
}

fn is_list_map(items: &[Value]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|i| i.get("type").is_some_and(Value::is_string))
}

/// Whether every field `body` sets has that value in `written` (list-map items matched by
/// `type`), leaving out the keys in `ignore`. An operator that just wrote `written` and
/// now wants `body` has nothing new to say.
pub fn is_within(body: &Value, written: &Value, ignore: &[&str]) -> bool {
    match (body, written) {
        (Value::Object(body), Value::Object(written)) => body.iter().all(|(key, value)| {
            ignore.contains(&key.as_str())
                || written
                    .get(key)
                    .is_some_and(|w| is_within(value, w, ignore))
        }),
        (Value::Array(body), Value::Array(written)) if is_list_map(body) => {
            body.iter().all(|item| {
                written
                    .iter()
                    .find(|w| w["type"] == item["type"])
                    .is_some_and(|w| is_within(item, w, ignore))
            })
        }
        (body, written) => body == written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_merge_and_unnamed_fields_stay() {
        let mut target = json!({"spec": {"replicas": 1, "template": {"x": 1}}, "status": {"a": 1}});
        assert!(merge(&mut target, &json!({"spec": {"replicas": 3}})));
        assert_eq!(
            target,
            json!({"spec": {"replicas": 3, "template": {"x": 1}}, "status": {"a": 1}})
        );
        assert!(!merge(&mut target, &json!({"spec": {"replicas": 3}})));
    }

    #[test]
    fn conditions_merge_by_type_and_keep_other_managers_entries() {
        let mut target = json!({"conditions": [
            {"type": "Active", "status": "True", "reason": "Theirs"},
            {"type": "Ready", "status": "False", "reason": "Old"}
        ]});
        let body = json!({"conditions": [{"type": "Ready", "status": "True", "reason": "New"}]});
        assert!(merge(&mut target, &body));
        assert_eq!(
            target["conditions"],
            json!([
                {"type": "Active", "status": "True", "reason": "Theirs"},
                {"type": "Ready", "status": "True", "reason": "New"}
            ])
        );
        assert!(
            !merge(&mut target, &body),
            "the same body again changes nothing"
        );
    }

    #[test]
    fn a_new_condition_is_appended_and_plain_lists_are_replaced() {
        let mut target = json!({"conditions": [{"type": "A", "status": "True"}], "taints": [1, 2]});
        assert!(merge(
            &mut target,
            &json!({"conditions": [{"type": "B", "status": "False"}], "taints": [3]})
        ));
        assert_eq!(target["conditions"].as_array().unwrap().len(), 2);
        assert_eq!(target["taints"], json!([3]));
    }

    #[test]
    fn within_ignores_named_keys_and_matches_conditions_by_type() {
        let written = json!({"status": {"replicas": 2, "lastScaleTime": "t1", "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": "t1"},
            {"type": "Scaling", "status": "False", "lastTransitionTime": "t1"}
        ]}});
        let later = json!({"status": {"replicas": 2, "conditions": [
            {"type": "Scaling", "status": "False", "lastTransitionTime": "t2"},
            {"type": "Ready", "status": "True", "lastTransitionTime": "t2"}
        ]}});
        assert!(is_within(&later, &written, &["lastTransitionTime"]));
        assert!(!is_within(&later, &written, &[]), "transition times differ");
        let changed = json!({"status": {"replicas": 3}});
        assert!(!is_within(&changed, &written, &["lastTransitionTime"]));
        let new_field = json!({"status": {"selector": "x"}});
        assert!(!is_within(&new_field, &written, &[]));
    }
}
