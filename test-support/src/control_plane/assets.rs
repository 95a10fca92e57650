//! The control plane's binaries and ports.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

/// The directory with etcd, kube-apiserver, kubectl and helm (built or found by
/// `hack/control-plane.sh`, which honours `KUBEBUILDER_ASSETS`).
pub fn assets_dir() -> Result<PathBuf> {
    static ASSETS: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = ASSETS.get() {
        return Ok(dir.clone());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/control-plane.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} failed ({})", script.display(), out.status);
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    Ok(ASSETS.get_or_init(|| dir).clone())
}

pub(super) fn apiserver_minor(assets: &Path) -> Result<u32> {
    let out = Command::new(assets.join("kube-apiserver"))
        .arg("--version")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "Kubernetes v1.20.2"
    text.trim()
        .rsplit('v')
        .next()
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse().ok())
        .with_context(|| format!("unexpected kube-apiserver --version output {text:?}"))
}

/// A loopback port free right now (another process may take it before it is used).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
