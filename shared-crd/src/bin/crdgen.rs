//! Writes the CRD YAML generated from the Rust types into a directory
//! (default `deploy/crds`), or prints it with `--stdout`.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "deploy/crds".into());
    let files = shared_crd::crd::yaml_files()?;
    if arg == "--stdout" {
        for (_, yaml) in files {
            print!("---\n{yaml}");
        }
        return Ok(());
    }
    let dir = PathBuf::from(arg);
    std::fs::create_dir_all(&dir)?;
    for (file, yaml) in files {
        std::fs::write(dir.join(&file), yaml)?;
        eprintln!("wrote {}", dir.join(file).display());
    }
    Ok(())
}
