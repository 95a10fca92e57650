//! The autoscaler's decisions, as functions of what the caches hold: no client can be named
//! here (this crate depends on `kube-core`, not `kube`), so every rule is unit-tested
//! without an API server. autoscaler-operator observes, calls these, and writes.
//!
//! The modules import downwards only:
//! `resources` (what pods ask, nodes offer) <- `fit` (where a pod can run, how few nodes
//! hold a pool's pods) <- `demand` (a pool's usage and pending pods) <- `decide` (the
//! HPA's decision) <- `status` (the conditions that report it); `check` (before a
//! decision), `routing` (which pool a pod is demand of) and `history` (the stabilization
//! memory) beside them; `pod` and `node` are the cached views all of them read.
#![forbid(unsafe_code)]

pub mod check;
pub mod decide;
pub mod demand;
pub mod fit;
pub mod history;
pub mod node;
pub mod pod;
pub mod policy;
pub mod resources;
pub mod routing;
pub mod status;
