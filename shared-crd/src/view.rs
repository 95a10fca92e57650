//! Read-only views of core/v1 kinds, for watch caches.
//!
//! An operator that caches every Pod of a cluster holds what it caches for as long as it
//! runs. A k8s-openapi `Pod`, even with every field it does not read emptied, keeps a slot
//! for each optional field of `PodSpec`, `Container` and `PodStatus` (2,176 bytes for the
//! `Pod`, 2,120 for each `Container`). A view is a struct with only the fields one
//! operator reads: the watch deserialises into it, serde skips the rest of the JSON, and
//! nothing else is allocated or cached. Each operator has its own views (its core crate
//! says what it reads); [`core_v1_view!`] makes one a [`kube::Resource`] of the kind it
//! narrows, so a watch of the view is a watch of that kind.
//!
//! A view is never written: writing one back would drop every field it does not hold.

/// Makes `$view` (with a `metadata: ObjectMeta` field) a [`kube::Resource`] of the
/// core/v1 kind `$kind` (plural `$plural`), scoped by `$scope`
/// (`k8s_openapi::NamespaceResourceScope` or `k8s_openapi::ClusterResourceScope`).
#[macro_export]
macro_rules! core_v1_view {
    ($view:ty, $kind:literal, $plural:literal, $scope:ty) => {
        impl $crate::view::__private::Resource for $view {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> $crate::view::__private::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> $crate::view::__private::Cow<'_, str> {
                "".into()
            }
            fn version(_: &()) -> $crate::view::__private::Cow<'_, str> {
                "v1".into()
            }
            fn plural(_: &()) -> $crate::view::__private::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &$crate::view::__private::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut $crate::view::__private::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

#[doc(hidden)]
pub mod __private {
    pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    pub use kube::core::Resource;
    pub use std::borrow::Cow;
}
