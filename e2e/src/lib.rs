//! A real Kubernetes control plane (etcd + kube-apiserver, as envtest runs them) for
//! tests and development, or an existing cluster named by `E2E_KUBECONFIG` (e.g. kind).
#![forbid(unsafe_code)]

pub mod control_plane;

pub use control_plane::{ControlPlane, Identity, shared, unique_name};
pub mod fixtures;
