//! `make bench-decision`, second part: the heap one cached pod costs each operator, with no
//! API server. A Running Deployment pod, as a 1.20 API server sends it
//! (`tools/fixtures/running-pod.json`), is read 10,000 times into each type a watch cache
//! could hold, narrowed as the operator narrows it, and held behind an `Arc` as a reflector
//! store holds it. The heap those copies hold (counted by dhat's allocator), over the
//! number of pods, is the figure; the store's own map and the indexes are apart (they
//! cost the same whatever the type).
//!
//! Counted bytes are exact for this input and this build; they are not asserted anywhere.
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use kube::Resource;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const POD: &[u8] = include_bytes!("../../fixtures/running-pod.json");
const PODS: usize = 10_000;

/// Heap bytes per copy held: `PODS` copies of `read()`, each behind an `Arc`.
fn held<T>(read: impl Fn() -> T) -> usize {
    let before = dhat::HeapStats::get().curr_bytes;
    let copies: Vec<Arc<T>> = (0..PODS).map(|_| Arc::new(read())).collect();
    let after = dhat::HeapStats::get().curr_bytes;
    let bytes = after - before - copies.capacity() * std::mem::size_of::<Arc<T>>();
    drop(copies);
    bytes / PODS
}

fn read<T: serde::de::DeserializeOwned>() -> T {
    serde_json::from_slice(POD).expect("the fixture is a Pod")
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let full = held(|| {
        let mut pod: Pod = read();
        pod.meta_mut().managed_fields = None;
        pod
    });
    // Narrowed as it is read.
    let bound = held(read::<nodepool_core::pod::BoundPod>);
    let view = held(|| {
        let mut pod: autoscaler_core::pod::PodView = read();
        autoscaler_core::pod::trim(&mut pod);
        pod
    });
    println!(
        "heap per cached pod ({PODS} copies of tools/fixtures/running-pod.json, {} bytes of JSON)",
        POD.len()
    );
    println!("  {full:>6} B  k8s-openapi Pod, managedFields dropped (a watch with no view)");
    println!("  {bound:>6} B  nodepool_core::pod::BoundPod (nodepool-operator)");
    println!("  {view:>6} B  autoscaler_core::pod::PodView, trimmed (autoscaler-operator)");
}
