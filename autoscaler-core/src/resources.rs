//! What pods ask and nodes offer: a pod's requests, a node's capacity. The leaf of the
//! decision's modules: `fit`, `demand` and `decide` all count in these units.
use crate::pod::PodView;

/// Requests of one pod or a sum of them (or, in packing, the room left on a node).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Demand {
    /// CPU cores.
    pub cpu: f64,
    /// Bytes.
    pub memory: f64,
    pub pods: f64,
}

impl Demand {
    pub fn add(&mut self, other: &Demand) {
        self.cpu += other.cpu;
        self.memory += other.memory;
        self.pods += other.pods;
    }
}

/// What one node offers (parsed from a pool's template with `NodeCapacity::values`).
pub use shared_crd::nodepool::CapacityValues as Capacity;

/// Whether a pod still needs room: not finished, not on its way out.
pub fn is_active(pod: &PodView) -> bool {
    let phase = pod.status.phase.as_deref();
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded") | Some("Failed"))
}

/// The requests of one pod (its containers' requests, summed as the pod was read; init
/// containers are not counted).
pub fn pod_demand(pod: &PodView) -> Demand {
    let r = pod.spec.requests;
    Demand {
        cpu: r.cpu,
        memory: r.memory,
        pods: 1.0,
    }
}

/// Why a pod asking `d` can run on no node of the pool, if it asks one resource for more
/// than a node offers: `"3 cores > 2 cores"`. No number of nodes runs it, so it is no
/// demand.
pub fn too_large(d: &Demand, capacity: Capacity) -> Option<String> {
    if d.cpu > capacity.cpu + 1e-9 {
        return Some(format!(
            "{} cores > {} cores",
            round(d.cpu),
            round(capacity.cpu)
        ));
    }
    if d.memory > capacity.memory + 1e-9 {
        return Some(format!(
            "{}Gi > {}Gi",
            round(d.memory / GI),
            round(capacity.memory / GI)
        ));
    }
    None
}

/// Whether a pod asking `d` fits on an empty node of `capacity`.
pub fn fits_a_node(d: &Demand, capacity: Capacity) -> bool {
    too_large(d, capacity).is_none()
}

pub(crate) const GI: f64 = 1024.0 * 1024.0 * 1024.0;

pub(crate) fn round(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A node of 2 cores, 8Gi and 110 pods (the template's default).
    pub(crate) const NODE: Capacity = Capacity {
        cpu: 2.0,
        memory: 8.0 * GI,
        pods: 110.0,
    };

    /// One pod asking `cores`.
    pub(crate) fn cpu(cores: f64) -> Demand {
        Demand {
            cpu: cores,
            memory: 0.0,
            pods: 1.0,
        }
    }

    #[test]
    fn a_pod_fits_a_node_unless_it_asks_more_of_one_resource() {
        assert!(fits_a_node(&cpu(2.0), NODE));
        assert!(!fits_a_node(&cpu(2.5), NODE));
        let memory = Demand {
            memory: 9.0 * GI,
            ..cpu(0.1)
        };
        assert_eq!(too_large(&memory, NODE).as_deref(), Some("9Gi > 8Gi"));
        assert_eq!(
            too_large(&cpu(3.0), NODE).as_deref(),
            Some("3 cores > 2 cores")
        );
    }
}
