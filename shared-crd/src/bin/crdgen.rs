//! Writes the CRD YAML generated from the Rust types into each directory given
//! (default `deploy/crds`), or prints it with `--stdout`.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut dirs: Vec<String> = std::env::args().skip(1).collect();
    if dirs.is_empty() {
        dirs.push("deploy/crds".into());
    }
    let files = shared_crd::crd::yaml_files()?;
    if dirs == ["--stdout"] {
        for (_, yaml) in files {
            print!("---\n{yaml}");
        }
        return Ok(());
    }
    for dir in dirs.iter().map(PathBuf::from) {
        std::fs::create_dir_all(&dir)?;
        for (file, yaml) in &files {
            std::fs::write(dir.join(file), yaml)?;
            eprintln!("wrote {}", dir.join(file).display());
        }
    }
    Ok(())
}
