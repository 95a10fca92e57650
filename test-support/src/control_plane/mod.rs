//! Starts etcd and kube-apiserver on free ports in a temporary directory, with one
//! admin identity and one identity per operator (static tokens), installs the CRDs
//! and hands out clients.
//!
//! Processes started for a test binary are supervised through a pipe: when the test
//! process ends, however it ends (panic, abort, kill), the pipe closes and a small
//! supervisor stops the process and removes its data. A control plane started with
//! [`ControlPlane::start_detached`] (`make cluster-up`) outlives its starter instead.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

mod assets;
mod credentials;
mod install;
mod processes;

use assets::apiserver_minor;
pub use assets::{assets_dir, free_port};
use credentials::{kubeconfig_yaml, write_credentials};
pub use install::{grant_chart_roles, install_crds};
use processes::{http_get, spawn, stop_children, wait_for_default_service_account, wait_ready};

/// Who a client acts as. Each operator has its own identity, so a test can run it
/// with exactly the permissions its chart grants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// `system:masters`: everything.
    Admin,
    /// The user nodepool-operator runs as.
    NodepoolOperator,
    /// The user autoscaler-operator runs as.
    AutoscalerOperator,
    /// `system:kube-scheduler`, which the 1.20 RBAC bootstrap roles bind.
    KubeScheduler,
}

impl Identity {
    pub const ALL: [Identity; 4] = [
        Identity::Admin,
        Identity::NodepoolOperator,
        Identity::AutoscalerOperator,
        Identity::KubeScheduler,
    ];

    /// Kubeconfig context and user name.
    pub fn name(self) -> &'static str {
        match self {
            Identity::Admin => "admin",
            Identity::NodepoolOperator => "nodepool-operator",
            Identity::AutoscalerOperator => "autoscaler-operator",
            Identity::KubeScheduler => "system:kube-scheduler",
        }
    }

    fn groups(self) -> &'static str {
        match self {
            Identity::Admin => "system:masters",
            Identity::KubeScheduler => "",
            _ => "nodepool.dev:operators",
        }
    }
}

/// What runs besides etcd and kube-apiserver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Topology {
    /// etcd and kube-apiserver only, as envtest runs them: nothing schedules pods,
    /// collects garbage or watches node health, and the `ServiceAccount` admission plugin
    /// is off (no token controller). For measurements that count every request the API
    /// server serves (`make bench-scale`).
    Bare,
    /// Also kube-scheduler (as `system:kube-scheduler`, bound by the bootstrap roles) and
    /// kube-controller-manager (as the admin: with `--use-service-account-credentials=false`
    /// its one identity needs every controller's permissions), as a kind cluster has
    /// them. No kubelet: the virtual nodes play it.
    Full,
}

impl Topology {
    /// `E2E_CONTROL_PLANE=bare` picks [`Topology::Bare`]; the default is [`Topology::Full`].
    pub fn from_env() -> Self {
        match std::env::var("E2E_CONTROL_PLANE").as_deref() {
            Ok("bare") => Topology::Bare,
            _ => Topology::Full,
        }
    }
}

/// The client rate limits of kube-scheduler and kube-controller-manager
/// (`--kube-api-qps`, `--kube-api-burst`). Their defaults, 50/100 and 20/30 in 1.20,
/// bound how fast the scheduler binds and the ReplicaSet controller creates pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ClientLimits {
    pub qps: u32,
    pub burst: u32,
}

/// A running control plane, or an existing cluster.
#[derive(Debug)]
pub struct ControlPlane {
    /// Kubeconfig with one context per [`Identity`] (an external one: as given).
    kubeconfig: PathBuf,
    /// Supervised processes (etcd, kube-apiserver, then with [`Topology::Full`]
    /// kube-scheduler and kube-controller-manager); kept so their pipes stay open while
    /// this lives. Writing `restart <seconds>` to one's stdin restarts it.
    children: std::sync::Mutex<Vec<Child>>,
    external: bool,
}

impl ControlPlane {
    /// Starts a control plane supervised by this process: it stops when this value is
    /// dropped or this process exits.
    pub async fn start() -> Result<Self> {
        Self::start_with(Topology::from_env()).await
    }

    /// [`ControlPlane::start`] with the given topology.
    pub async fn start_with(topology: Topology) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("nodepool-cp-{}", unique_suffix()));
        Self::start_in(&dir, Mode::Supervised, topology, None).await
    }

    /// A supervised [`Topology::Full`] control plane whose scheduler and
    /// controller-manager have the given client limits instead of their defaults.
    pub async fn start_full_with(limits: ClientLimits) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("nodepool-cp-{}", unique_suffix()));
        Self::start_in(&dir, Mode::Supervised, Topology::Full, Some(limits)).await
    }

    /// Starts a control plane in `dir` that keeps running after this process exits
    /// (`make cluster-up`); [`ControlPlane::stop_detached`] stops it.
    pub async fn start_detached(dir: &Path) -> Result<Self> {
        Self::start_in(dir, Mode::Detached, Topology::from_env(), None).await
    }

    /// Uses an existing cluster (e.g. kind): admin identity only, CRDs installed.
    pub async fn external(kubeconfig: &Path) -> Result<Self> {
        let cp = Self {
            kubeconfig: kubeconfig.to_owned(),
            children: Default::default(),
            external: true,
        };
        install_crds(&cp.client().await?).await?;
        Ok(cp)
    }

    /// Stops a control plane started with [`ControlPlane::start_detached`] and removes `dir`.
    pub fn stop_detached(dir: &Path) -> Result<()> {
        let pids = fs::read_to_string(dir.join("pids")).unwrap_or_default();
        let alive = |pid: &str| Path::new(&format!("/proc/{pid}")).exists();
        // Each runs in a process group of its own: signal the group, TERM then KILL.
        for signal in ["-TERM", "-KILL"] {
            for pid in pids.split_whitespace().filter(|pid| alive(pid)) {
                let _ = Command::new("kill")
                    .arg(signal)
                    .arg("--")
                    .arg(format!("-{pid}"))
                    .status();
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while pids.split_whitespace().any(alive) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        Ok(())
    }

    async fn start_in(
        dir: &Path,
        mode: Mode,
        topology: Topology,
        limits: Option<ClientLimits>,
    ) -> Result<Self> {
        let assets = assets_dir()?;
        let mut last_error = None;
        // Free ports are picked by binding and releasing them; another process can take
        // one in between, so a failed start is retried on new ports.
        for _ in 0..3 {
            if dir.exists() {
                fs::remove_dir_all(dir)?;
            }
            fs::create_dir_all(dir)?;
            match Self::try_start(dir, &assets, mode, topology, limits).await {
                Ok(cp) => return Ok(cp),
                Err((e, children)) => {
                    stop_children(children);
                    last_error = Some(e);
                }
            }
        }
        let _ = fs::remove_dir_all(dir);
        Err(last_error.expect("at least one attempt"))
    }

    async fn try_start(
        dir: &Path,
        assets: &Path,
        mode: Mode,
        topology: Topology,
        limits: Option<ClientLimits>,
    ) -> std::result::Result<Self, (anyhow::Error, Vec<Child>)> {
        let mut children = Vec::new();
        match Self::boot(dir, assets, mode, topology, limits, &mut children).await {
            Ok(kubeconfig) => Ok(Self {
                kubeconfig,
                children: std::sync::Mutex::new(children),
                external: false,
            }),
            Err(e) => Err((e, children)),
        }
    }

    async fn boot(
        dir: &Path,
        assets: &Path,
        mode: Mode,
        topology: Topology,
        limits: Option<ClientLimits>,
        children: &mut Vec<Child>,
    ) -> Result<PathBuf> {
        let (etcd_client, etcd_peer, secure) = (free_port()?, free_port()?, free_port()?);
        let tokens = write_credentials(dir)?;

        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let mut etcd = Command::new(assets.join("etcd"));
        etcd.args(["--data-dir", &dir.join("etcd").to_string_lossy()])
            .args([
                "--listen-client-urls",
                &etcd_url,
                "--advertise-client-urls",
                &etcd_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .args(["--unsafe-no-fsync"]);
        children.push(spawn(etcd, dir, "etcd", mode)?);

        let mut apiserver = Command::new(assets.join("kube-apiserver"));
        apiserver
            .arg(format!("--etcd-servers={etcd_url}"))
            .args([
                "--bind-address=127.0.0.1",
                &format!("--secure-port={secure}"),
            ])
            .arg(format!("--cert-dir={}", dir.join("certs").display()))
            .args([
                "--service-cluster-ip-range=10.96.0.0/24",
                "--authorization-mode=RBAC",
            ])
            .arg(format!(
                "--token-auth-file={}",
                dir.join("tokens.csv").display()
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg(format!(
                "--service-account-key-file={}",
                dir.join("sa.pub").display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                dir.join("sa.key").display()
            ))
            .arg("--allow-privileged=true");
        if topology == Topology::Bare {
            // No token controller runs to give the default ServiceAccounts their tokens.
            apiserver.arg("--disable-admission-plugins=ServiceAccount");
        }
        if apiserver_minor(assets)? < 24 {
            // The insecure port (8080) was on by default in old releases and would collide.
            apiserver.arg("--insecure-port=0");
        }
        children.push(spawn(apiserver, dir, "kube-apiserver", mode)?);
        let write_pids = |children: &[Child]| -> Result<()> {
            if mode == Mode::Detached {
                let pids: Vec<String> = children.iter().map(|c| c.id().to_string()).collect();
                fs::write(dir.join("pids"), pids.join(" "))?;
            }
            Ok(())
        };
        write_pids(children)?;

        let server = format!("https://127.0.0.1:{secure}");
        let kubeconfig = dir.join("kubeconfig");
        fs::write(&kubeconfig, kubeconfig_yaml(&server, &tokens))?;

        let client = Self::client_for_kubeconfig(&kubeconfig, Identity::Admin).await?;
        wait_ready(&client, dir, children).await?;
        install_crds(&client).await?;
        grant_chart_roles(&client, assets).await?;
        if topology == Topology::Full {
            let as_scheduler = dir.join("kube-scheduler.kubeconfig");
            fs::write(
                &as_scheduler,
                kubeconfig_yaml(&server, &tokens).replace(
                    "current-context: admin",
                    &format!("current-context: {}", Identity::KubeScheduler.name()),
                ),
            )?;
            let kubeconfigs = |cmd: &mut Command, path: &Path| {
                for flag in [
                    "kubeconfig",
                    "authentication-kubeconfig",
                    "authorization-kubeconfig",
                ] {
                    cmd.arg(format!("--{flag}={}", path.display()));
                }
                cmd.args([
                    "--leader-elect=false",
                    "--bind-address=127.0.0.1",
                    "--secure-port=0",
                    "--port=0",
                ]);
                if let Some(l) = limits {
                    cmd.arg(format!("--kube-api-qps={}", l.qps))
                        .arg(format!("--kube-api-burst={}", l.burst));
                }
            };
            let mut scheduler = Command::new(assets.join("kube-scheduler"));
            kubeconfigs(&mut scheduler, &as_scheduler);
            children.push(spawn(scheduler, dir, "kube-scheduler", mode)?);
            let mut manager = Command::new(assets.join("kube-controller-manager"));
            kubeconfigs(&mut manager, &kubeconfig);
            manager
                .arg(format!(
                    "--service-account-private-key-file={}",
                    dir.join("sa.key").display()
                ))
                .arg(format!(
                    "--root-ca-file={}",
                    dir.join("certs/apiserver.crt").display()
                ))
                .arg("--use-service-account-credentials=false");
            children.push(spawn(manager, dir, "kube-controller-manager", mode)?);
            write_pids(children)?;
            wait_for_default_service_account(&client, dir, children).await?;
        }
        Ok(kubeconfig)
    }

    /// Path of a kubeconfig with one context per identity (`admin` is the current one).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Whether this is an existing cluster rather than one started here.
    pub fn is_external(&self) -> bool {
        self.external
    }

    /// A client acting as the admin.
    pub async fn client(&self) -> Result<Client> {
        self.client_as(Identity::Admin).await
    }

    /// A client acting as `identity`. On an external cluster every identity is the
    /// kubeconfig's current context.
    pub async fn client_as(&self, identity: Identity) -> Result<Client> {
        if self.external {
            let config = Config::from_custom_kubeconfig(
                Kubeconfig::read_from(&self.kubeconfig)?,
                &KubeConfigOptions::default(),
            )
            .await?;
            return plain_client(config);
        }
        Self::client_for_kubeconfig(&self.kubeconfig, identity).await
    }

    /// The client configuration of `identity` (on an external cluster: the current
    /// context), e.g. to point it at a [`crate::proxy::FaultProxy`].
    pub async fn config_as(&self, identity: Identity) -> Result<Config> {
        let options = KubeConfigOptions {
            context: (!self.external).then(|| identity.name().to_owned()),
            ..Default::default()
        };
        Ok(
            Config::from_custom_kubeconfig(Kubeconfig::read_from(&self.kubeconfig)?, &options)
                .await?,
        )
    }

    /// A client acting as `identity` from a kubeconfig this harness wrote.
    pub async fn client_for_kubeconfig(kubeconfig: &Path, identity: Identity) -> Result<Client> {
        plain_client(Self::config_for_kubeconfig(kubeconfig, identity).await?)
    }

    /// The client configuration of `identity` from a kubeconfig this harness wrote (on an
    /// external cluster: its current context): what an operator run in-process builds its
    /// own client from, as its `main` would.
    pub async fn config_for_kubeconfig(kubeconfig: &Path, identity: Identity) -> Result<Config> {
        let external = std::env::var_os("E2E_KUBECONFIG").is_some();
        let options = KubeConfigOptions {
            context: (!external).then(|| identity.name().to_owned()),
            ..Default::default()
        };
        Ok(Config::from_custom_kubeconfig(Kubeconfig::read_from(kubeconfig)?, &options).await?)
    }

    /// Stops `component` (SIGTERM, as a rolling restart would), keeps it down for `down`,
    /// starts it again with the same flags and data directory, and waits until the API
    /// server is ready again.
    pub async fn restart(&self, component: Component, down: Duration) -> Result<()> {
        use std::io::Write;
        if self.external {
            bail!("an external cluster's {component:?} cannot be restarted from here");
        }
        let client = self.client().await?;
        {
            let mut children = self.children.lock().expect("not poisoned");
            let child = children
                .get_mut(component as usize)
                .context("no such control-plane process")?;
            let stdin = child
                .stdin
                .as_mut()
                .context("a detached control plane cannot be restarted")?;
            writeln!(stdin, "restart {}", down.as_secs_f64())?;
            stdin.flush()?;
        }
        let ready = || async {
            matches!(client.request_text(http_get("/readyz")).await, Ok(b) if b.trim() == "ok")
        };
        // Down (or not ready) first, then ready again.
        let deadline = Instant::now() + Duration::from_secs(20);
        while ready().await && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let deadline = Instant::now() + down + Duration::from_secs(60);
        while !ready().await {
            if Instant::now() > deadline {
                bail!("the API server is not ready again after restarting {component:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Releases the processes so they outlive this value (detached mode).
    pub fn detach(mut self) {
        self.children.get_mut().expect("not poisoned").clear();
        std::mem::forget(self);
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        stop_children(std::mem::take(
            self.children.get_mut().unwrap_or_else(|e| e.into_inner()),
        ));
    }
}

/// A process of the control plane, in the order it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    Etcd = 0,
    KubeApiserver = 1,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Supervised,
    Detached,
}

/// The control plane every test of one test binary shares, started on first use.
/// With `E2E_KUBECONFIG` set, that cluster is used instead.
pub fn shared() -> &'static ControlPlane {
    // A failed start is remembered, so the other tests fail at once with the same reason.
    static SHARED: OnceLock<std::result::Result<ControlPlane, String>> = OnceLock::new();
    let started = SHARED.get_or_init(|| {
        // Tests run on their own runtimes; start on a private one in a thread of its own.
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                match std::env::var_os("E2E_KUBECONFIG") {
                    Some(path) => ControlPlane::external(Path::new(&path)).await,
                    None => ControlPlane::start().await,
                }
            })
        })
        .join()
        .map_err(|_| "control plane start-up panicked".to_owned())?
        .map_err(|e| format!("{e:#}"))
    });
    match started {
        Ok(cp) => cp,
        Err(e) => panic!("starting the test control plane: {e}"),
    }
}

/// A name no other test (or earlier run on a reused cluster) has used: `prefix-<suffix>`.
pub fn unique_name(prefix: &str) -> String {
    format!("{prefix}-{}", unique_suffix())
}

fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:06x}{n:x}", rand::random::<u32>() & 0x00ff_ffff)
}

/// A client that sends each request once: a test sees what the server answered, with no
/// retry of a 429 or a 5xx hidden in between (kube's default client retries them).
fn plain_client(mut config: Config) -> Result<Client> {
    config.default_retry = false;
    Ok(Client::try_from(config)?)
}
