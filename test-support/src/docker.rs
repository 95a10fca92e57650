//! A Docker engine for the image tests: the one that runs, or one started here.
//!
//! When no engine answers, Debian's `docker.io` is installed if `dockerd` is missing
//! (`apt-get`, as root), and a `dockerd` is started with its own socket, data and exec
//! roots in a temporary directory, no iptables, no bridge and the `vfs` storage driver
//! (what works on these machines, `../docs/control-plane.md`). Dropping the [`Engine`]
//! stops the daemon it started, by its pid, and removes its directory. An engine that
//! was already running is left alone.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A Docker engine and the client to reach it.
pub struct Engine {
    /// The docker client: one that builds with BuildKit (see `hack/images.sh`).
    pub client: PathBuf,
    /// `DOCKER_HOST` for the client, when the engine was started here.
    pub host: Option<String>,
    started: Option<(Child, PathBuf)>,
}

impl Engine {
    /// The running engine, or a new one.
    pub fn ensure() -> Result<Self> {
        if let Ok(client) = client() {
            let running = Engine {
                client,
                host: None,
                started: None,
            };
            if running.answers() {
                return Ok(running);
            }
        }
        if which("dockerd").is_none() {
            install()?;
        }
        let client = self::client()?;
        let dir = std::env::temp_dir().join(format!("e2e-docker-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("docker.sock");
        let log = std::fs::File::create(dir.join("dockerd.log"))?;
        let child = Command::new("dockerd")
            .args(["--iptables=false", "--bridge=none", "--storage-driver=vfs"])
            .arg(format!("--host=unix://{}", socket.display()))
            .arg(format!("--data-root={}", dir.join("data").display()))
            .arg(format!("--exec-root={}", dir.join("exec").display()))
            .arg(format!("--pidfile={}", dir.join("dockerd.pid").display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dockerd")?;
        let mut engine = Engine {
            client,
            host: Some(format!("unix://{}", socket.display())),
            started: Some((child, dir.clone())),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !engine.answers() {
            if let Some((child, _)) = engine.started.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "dockerd exited ({status}); log: {}",
                    std::fs::read_to_string(dir.join("dockerd.log")).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "dockerd did not answer within 60 s; log in {}",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(engine)
    }

    /// Whether this engine started the daemon it uses.
    pub fn started_here(&self) -> bool {
        self.started.is_some()
    }

    fn answers(&self) -> bool {
        self.command()
            .arg("info")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// A docker command aimed at this engine.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.client);
        if let Some(host) = &self.host {
            cmd.env("DOCKER_HOST", host);
        }
        cmd
    }

    /// Runs `docker <args>`; its output, whether it succeeded or not.
    pub fn output(&self, args: &[&str]) -> Result<Output> {
        self.command()
            .args(args)
            .output()
            .with_context(|| format!("docker {args:?}"))
    }

    /// Runs `docker <args>` and returns its standard output; fails with its error output.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!(
                "docker {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8(out.stdout)?)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Some((mut child, dir)) = self.started.take() {
            // SIGTERM, then wait: dockerd stops its containers and its containerd.
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
            remove_dir(&dir);
        }
    }
}

/// Unmounts what dockerd left mounted under `dir` (its default network namespace), then
/// removes it.
fn remove_dir(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut under: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for mount in under {
        let _ = Command::new("umount").arg("-l").arg(mount).status();
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        eprintln!("could not remove {}: {e}", dir.display());
    }
}

/// The docker client `hack/images.sh` builds with (`DOCKER` if set, else one that builds
/// with BuildKit): the script's `--print-client` says which, so the rule is written once.
fn client() -> Result<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../hack/images.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--print-client")
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    if !out.status.success() {
        bail!("{} found no docker client", script.display());
    }
    Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.exists())
    })
}

/// `apt-get install -y docker.io`, as the control-plane notes say.
fn install() -> Result<()> {
    eprintln!("no dockerd: installing Debian's docker.io");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .context("running apt-get (as root)")
    };
    if apt(&["install", "-y", "-q", "docker.io"])?.success() {
        return Ok(());
    }
    // A fresh machine may have no package lists yet.
    apt(&["update", "-q"])?;
    let status = apt(&["install", "-y", "-q", "docker.io"])?;
    if !status.success() {
        bail!("apt-get install docker.io failed ({status})");
    }
    Ok(())
}
