//! The project's tools, each a `make` target: the two-operator timeline and its medians
//! (`timeline`, `report`: `make timeline`, `make bench`), the scale benchmark (`scale`:
//! `make bench-scale`), one big pool against the control plane's own limit (`envelope`:
//! `make bench-envelope`), and the chart READMEs (`chart_docs`: `make chart-docs`). The
//! local cluster of `make cluster-up` is `bin/local-cluster.rs`.
#![forbid(unsafe_code)]

pub mod chart_docs;
pub mod envelope;
pub mod report;
pub mod scale;
pub mod timeline;

/// `<results>/<kind>-<UTC time>`: where one run of a benchmark writes what it measured.
pub fn results_dir(results: &std::path::Path, kind: &str) -> std::path::PathBuf {
    let stamp = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y%m%d-%H%M%S")
        .to_string();
    results.join(format!("{kind}-{stamp}"))
}
