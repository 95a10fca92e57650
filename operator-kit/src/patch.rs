//! Typed bodies for the patches an operator sends besides its [`crate::Change`]s: a
//! strategic or merge patch names only the fields it sets, so it can never drop what a
//! cache trimmed; a JSON patch that removes a finalizer tests the list first, so it fails
//! rather than clobbers when someone changed the list meanwhile.
use json_patch::{Patch, PatchOperation, ReplaceOperation, TestOperation};
use serde::Serialize;

/// `{"spec": ...}`: a patch of an object's spec.
#[derive(Debug, Serialize)]
pub struct SpecPatch<T> {
    pub spec: T,
}

/// `{"status": ...}`: a patch of an object's status (for the status subresource).
#[derive(Debug, Serialize)]
pub struct StatusPatch<T> {
    pub status: T,
}

/// A JSON patch that removes `finalizer` from `finalizers` (the object's current list),
/// keeping the others in their order.
pub fn finalizer_removal(finalizers: &[String], finalizer: &str) -> Patch {
    let kept: Vec<&String> = finalizers.iter().filter(|f| *f != finalizer).collect();
    let path = || "/metadata/finalizers".parse().expect("a JSON pointer");
    Patch(vec![
        PatchOperation::Test(TestOperation {
            path: path(),
            value: serde_json::to_value(finalizers).expect("strings are JSON"),
        }),
        PatchOperation::Replace(ReplaceOperation {
            path: path(),
            value: serde_json::to_value(kept).expect("strings are JSON"),
        }),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_finalizer_removal_keeps_the_others_and_tests_the_list_first() {
        let list = vec!["other".to_owned(), "nodepool.dev/nodes".to_owned()];
        let patch = serde_json::to_value(finalizer_removal(&list, "nodepool.dev/nodes")).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/finalizers", "value": ["other", "nodepool.dev/nodes"]},
                {"op": "replace", "path": "/metadata/finalizers", "value": ["other"]},
            ])
        );
    }

    #[test]
    fn spec_and_status_bodies_name_only_their_fields() {
        #[derive(Serialize)]
        struct Cordon {
            unschedulable: bool,
        }
        let body = SpecPatch {
            spec: Cordon {
                unschedulable: true,
            },
        };
        assert_eq!(
            serde_json::to_value(body).unwrap(),
            json!({"spec": {"unschedulable": true}})
        );
        let body = StatusPatch { status: [1, 2] };
        assert_eq!(
            serde_json::to_value(body).unwrap(),
            json!({"status": [1, 2]})
        );
    }
}
