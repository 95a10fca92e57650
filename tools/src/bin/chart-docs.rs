//! Writes each chart's README.md from its values.yaml and values.schema.json
//! (`make chart-docs`).
use std::path::Path;

fn main() -> anyhow::Result<()> {
    let charts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts");
    for name in ["nodepool-operator", "autoscaler-operator"] {
        let dir = charts.join(name);
        std::fs::write(dir.join("README.md"), tools::chart_docs::render(&dir)?)?;
        println!("charts/{name}/README.md");
    }
    Ok(())
}
