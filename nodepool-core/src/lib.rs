//! nodepool-operator's decisions, as functions of what the caches hold: no client can be
//! named here (this crate depends on `kube-core`, not `kube`), so every rule is
//! unit-tested without an API server. nodepool-operator observes, calls these, and writes.
//!
//! - `nodes`: a node's readiness and its pool (by controller reference);
//! - `sizing`: the template's validity, how many nodes to add, which to remove first;
//! - `status`: the NodePool status this operator owns;
//! - `naming`: node names and the stable hash under them;
//! - `quota`: `--max-nodes` reserved atomically across reconciles;
//! - `ready`: the `NodePoolReady` condition on Autoscalers;
//! - `pod`: the Pod as this operator caches it (`BoundPod`);
//! - `drain`: which pods a drain moves, what a refusal means, when it tries again.
#![forbid(unsafe_code)]

pub mod deletions;
pub mod disruption;
pub mod drain;
pub mod naming;
pub mod nodes;
pub mod pod;
pub mod quota;
pub mod ready;
pub mod schedule;
pub mod sizing;
pub mod status;
pub mod template;
pub mod validate;
