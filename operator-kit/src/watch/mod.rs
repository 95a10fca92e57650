//! Watches as the operators use them: one watch per kind, opened the one way
//! [`Watches`] does it, fanned out to every consumer with deletions included; indexes fed
//! by the same events; predicates that pass an object on only when the part a reconcile
//! reads changed; and the trimming of cached objects to what is read.
use std::borrow::Cow;

use kube::Resource;

mod caches;
mod fanout;
mod guard;
mod index;
mod predicate;

pub use caches::{Cache, Watch, Watches};
pub use fanout::{Fanout, Subscriptions};
pub use guard::{Guarded, Unreadable, guarded};
pub use index::{Feed, Index, feed_indexes};
pub use predicate::{changed_or_deleted, hash_of};

/// Drops what no reconcile reads from a cached object: `managedFields` and kubectl's
/// last-applied annotation are most of an object's size. (A write never starts from a
/// cached copy: see [`crate::write`].)
pub fn trim_metadata<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        if annotations.is_empty() {
            meta.annotations = None;
        }
    }
}

/// The kind of `K` as a `&'static str`, for metric labels and logs.
pub(crate) fn kind_of<K: Resource<DynamicType = ()>>() -> &'static str {
    match K::kind(&()) {
        Cow::Borrowed(kind) => kind,
        // No type of this project names its kind at run time; one that did would cost one
        // small leak per watch or controller, not per event.
        Cow::Owned(kind) => Box::leak(kind.into_boxed_str()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    pub(crate) fn cm(name: &str, key: &str) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c.metadata.namespace = Some("ns".into());
        c.metadata.labels = Some([("pool".to_owned(), key.to_owned())].into());
        c
    }

    #[test]
    fn trimming_drops_managed_fields_and_last_applied() {
        let mut c = cm("a", "p");
        c.metadata.managed_fields = Some(vec![Default::default()]);
        c.metadata.annotations = Some(
            [(
                "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                "{}".to_owned(),
            )]
            .into(),
        );
        trim_metadata(&mut c);
        assert!(c.metadata.managed_fields.is_none());
        assert!(c.metadata.annotations.is_none());
    }

    #[test]
    fn kinds_are_static() {
        assert_eq!(kind_of::<ConfigMap>(), "ConfigMap");
    }
}
