//! An operator binary run as a process against a test control plane, as a Deployment's
//! pod would run it: its own flags, identity and metrics port, its log in a file.
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::http_get;

pub struct OperatorProcess {
    child: tokio::process::Child,
    name: String,
    /// `nodepool_operator` or `autoscaler_operator`: the metrics prefix.
    prefix: String,
    addr: String,
    log: PathBuf,
}

impl OperatorProcess {
    /// Starts `binary` (`nodepool-operator` or `autoscaler-operator`, from
    /// [`crate::operator_bin_dir`]) with `args`, as the kubeconfig context `context` (the
    /// current one when `None`), logging to `<logs>/<name>.log`, and waits until it is
    /// Ready (its caches synced).
    pub async fn start(
        binary: &str,
        name: &str,
        kubeconfig: &Path,
        context: Option<&str>,
        logs: &Path,
        args: &[&str],
    ) -> Result<Self> {
        std::fs::create_dir_all(logs)?;
        let addr = format!("127.0.0.1:{}", crate::control_plane::free_port()?);
        let log = logs.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let mut cmd = tokio::process::Command::new(crate::operator_bin_dir().join(binary));
        cmd.args(["--metrics-addr", &addr, "--log-format", "json"])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", name)
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true);
        if let Some(context) = context {
            cmd.args(["--context", context]);
        }
        let mut child = cmd.spawn().with_context(|| format!("starting {binary}"))?;
        crate::wait_until_ready(name, &mut child, &addr, &log, Duration::from_secs(30)).await?;
        Ok(Self {
            child,
            name: name.to_owned(),
            prefix: binary.replace('-', "_"),
            addr,
            log,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its `/metrics` text.
    pub fn metrics(&self) -> Result<String> {
        http_get(&self.addr, "/metrics")
    }

    /// The sum of the samples of `<prefix>_<family>` whose labels contain every one of
    /// `labels` (`key="value"`), or 0.
    pub fn metric(&self, family: &str, labels: &[&str]) -> f64 {
        let name = format!("{}_{family}", self.prefix);
        sum_samples(&self.metrics().unwrap_or_default(), &name, labels)
    }

    /// Whether it holds the leader Lease (its `leader` gauge).
    pub fn leading(&self) -> bool {
        self.metric("leader", &[]) == 1.0
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL: gone without a word, as a crashed pod.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Sums the samples of metric `name` (exactly; `_total` and the like are part of it)
/// whose label set contains each of `labels`.
pub fn sum_samples(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            (metric == name && labels.iter().all(|want| rest.contains(want)))
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_summed_by_name_and_labels() {
        let text = "# HELP x\nnp_requests_total{verb=\"create\",code=\"201\"} 3\n\
                    np_requests_total{verb=\"create\",code=\"409\"} 2\n\
                    np_requests_total_other 7\nnp_leader 1\n";
        assert_eq!(sum_samples(text, "np_requests_total", &[]), 5.0);
        assert_eq!(
            sum_samples(text, "np_requests_total", &["code=\"201\""]),
            3.0
        );
        assert_eq!(sum_samples(text, "np_leader", &[]), 1.0);
        assert_eq!(sum_samples(text, "np_missing", &[]), 0.0);
    }
}
