//! A real Kubernetes control plane (etcd + kube-apiserver, as envtest runs them) for
//! tests and development, or an existing cluster named by `E2E_KUBECONFIG` (e.g. kind).
#![forbid(unsafe_code)]

pub mod control_plane;

pub use control_plane::{ControlPlane, Identity, shared, unique_name};
pub mod fixtures;
pub mod report;
pub mod timeline;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what` and the
/// last value seen by `describe`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() > deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
