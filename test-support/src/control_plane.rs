//! Starts etcd and kube-apiserver on free ports in a temporary directory, with one
//! admin identity and one identity per operator (static tokens), installs the CRDs
//! and hands out clients.
//!
//! Processes started for a test binary are supervised through a pipe: when the test
//! process ends, however it ends (panic, abort, kill), the pipe closes and a small
//! supervisor stops the process and removes its data. A control plane started with
//! [`ControlPlane::start_detached`] (`make cluster-up`) outlives its starter instead.
use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

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
        Self::start_in(&dir, Mode::Supervised, topology).await
    }

    /// Starts a control plane in `dir` that keeps running after this process exits
    /// (`make cluster-up`); [`ControlPlane::stop_detached`] stops it.
    pub async fn start_detached(dir: &Path) -> Result<Self> {
        Self::start_in(dir, Mode::Detached, Topology::from_env()).await
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

    async fn start_in(dir: &Path, mode: Mode, topology: Topology) -> Result<Self> {
        let assets = assets_dir()?;
        let mut last_error = None;
        // Free ports are picked by binding and releasing them; another process can take
        // one in between, so a failed start is retried on new ports.
        for _ in 0..3 {
            if dir.exists() {
                fs::remove_dir_all(dir)?;
            }
            fs::create_dir_all(dir)?;
            match Self::try_start(dir, &assets, mode, topology).await {
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
    ) -> std::result::Result<Self, (anyhow::Error, Vec<Child>)> {
        let mut children = Vec::new();
        match Self::boot(dir, assets, mode, topology, &mut children).await {
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

fn apiserver_minor(assets: &Path) -> Result<u32> {
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

/// Writes the service-account key pair and the static token file; returns the tokens.
fn write_credentials(dir: &Path) -> Result<BTreeMap<&'static str, String>> {
    let key = dir.join("sa.key");
    run(Command::new("openssl")
        .args(["genrsa", "-out"])
        .arg(&key)
        .arg("2048"))?;
    run(Command::new("openssl")
        .args(["rsa", "-pubout", "-in"])
        .arg(&key)
        .arg("-out")
        .arg(dir.join("sa.pub")))?;
    let mut tokens = BTreeMap::new();
    let mut csv = String::new();
    for (uid, identity) in Identity::ALL.iter().enumerate() {
        let token = format!("{:032x}", rand::random::<u128>());
        csv += &format!(
            "{token},{},{uid},\"{}\"\n",
            identity.name(),
            identity.groups()
        );
        tokens.insert(identity.name(), token);
    }
    fs::write(dir.join("tokens.csv"), csv)?;
    Ok(tokens)
}

fn kubeconfig_yaml(server: &str, tokens: &BTreeMap<&'static str, String>) -> String {
    let mut users = String::new();
    let mut contexts = String::new();
    for identity in Identity::ALL {
        let name = identity.name();
        users += &format!("- name: {name}\n  user:\n    token: {}\n", tokens[name]);
        contexts += &format!("- name: {name}\n  context:\n    cluster: local\n    user: {name}\n");
    }
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n{users}contexts:\n{contexts}current-context: admin\n"
    )
}

/// A client that sends each request once: a test sees what the server answered, with no
/// retry of a 429 or a 5xx hidden in between (kube's default client retries them).
fn plain_client(mut config: Config) -> Result<Client> {
    config.default_retry = false;
    Ok(Client::try_from(config)?)
}

fn spawn(mut cmd: Command, dir: &Path, name: &str, mode: Mode) -> Result<Child> {
    let log = fs::File::create(dir.join(format!("{name}.log")))?;
    cmd.stdout(log.try_clone()?).stderr(log);
    match mode {
        Mode::Detached => {
            use std::os::unix::process::CommandExt;
            cmd.stdin(Stdio::null()).process_group(0);
            cmd.spawn().with_context(|| format!("starting {name}"))
        }
        Mode::Supervised => {
            // bash runs the process, then waits for its stdin (our pipe) to close: that
            // happens when we drop the Child's stdin or when this process exits in any way.
            let program = cmd.get_program().to_owned();
            let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
            let mut supervisor = Command::new("bash");
            supervisor
                .arg("-c")
                .arg(SUPERVISOR)
                .arg("supervise")
                .arg(dir)
                .arg(program)
                .args(args)
                .stdin(Stdio::piped());
            let log = fs::OpenOptions::new()
                .append(true)
                .open(dir.join(format!("{name}.log")))?;
            supervisor.stdout(log.try_clone()?).stderr(log);
            supervisor
                .spawn()
                .with_context(|| format!("starting {name}"))
        }
    }
}

/// `$1` is the data directory, the rest the command. Stops the command when stdin
/// closes (the last supervisor to finish, etcd's, removes the data directory), and
/// restarts it on a `restart <seconds>` line.
const SUPERVISOR: &str = r#"
dir="$1"; shift
"$@" </dev/null &
pid=$!
stop() {
  kill "$pid" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
}
# `restart <seconds>`: stop, stay down that long, start again. End of input: stop.
while read -r command seconds; do
  case "$command" in
    restart) stop; echo "supervisor: restarting after ${seconds}s down"; sleep "$seconds"; "$@" </dev/null & pid=$! ;;
    *) break ;;
  esac
done
stop
case "$(basename "$1")" in etcd) rm -rf "$dir" ;; esac
"#;

fn stop_children(children: Vec<Child>) {
    // kube-apiserver first (it was started last), then etcd, which removes the directory.
    for mut child in children.into_iter().rev() {
        match child.stdin.take() {
            Some(stdin) => drop(stdin),
            None => {
                let _ = child.kill();
            }
        }
        let _ = child.wait();
    }
}

/// Fails when one of the control plane's processes has exited, pointing at the logs.
fn none_exited(children: &mut [Child], dir: &Path) -> Result<()> {
    for child in children.iter_mut() {
        if let Some(status) = child.try_wait()? {
            bail!(
                "a control-plane process exited ({status}); see logs in {}",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Waits until the token controller has given `default/default` its token: before that,
/// the `ServiceAccount` admission plugin refuses pods in `default`.
async fn wait_for_default_service_account(
    client: &Client,
    dir: &Path,
    children: &mut [Child],
) -> Result<()> {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(sa)) = accounts.get_opt("default").await
            && sa.secrets.is_some_and(|s| !s.is_empty())
        {
            return Ok(());
        }
        none_exited(children, dir)?;
        if Instant::now() > deadline {
            bail!(
                "no token for the default ServiceAccount after 60s; see kube-controller-manager.log in {}",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_ready(client: &Client, dir: &Path, children: &mut [Child]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let req = http_get("/readyz");
        match client.request_text(req).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            _ => {}
        }
        none_exited(children, dir)?;
        if Instant::now() > deadline {
            let log = fs::read_to_string(dir.join("kube-apiserver.log")).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(20).collect();
            bail!(
                "kube-apiserver not ready after 60s; last log lines:\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn http_get(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path)
        .body(Vec::new())
        .expect("a valid request")
}

/// Gives each operator identity the ClusterRole its Helm chart grants (rendered with
/// `helm template`), so tests run the operators with exactly those permissions.
pub async fn grant_chart_roles(client: &Client, assets: &Path) -> Result<()> {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};
    use serde::Deserialize;

    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    let params = kube::api::PatchParams::apply("nodepool-e2e").force();
    for identity in [Identity::NodepoolOperator, Identity::AutoscalerOperator] {
        let chart = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../charts")
            .join(identity.name());
        let out = Command::new(assets.join("helm"))
            .args(["template", "e2e"])
            .arg(&chart)
            .output()?;
        if !out.status.success() {
            bail!(
                "helm template {}: {}",
                chart.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8(out.stdout)?;
        let mut role = None;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc)?;
            if value["kind"] == "ClusterRole" {
                role = Some(serde_json::from_value::<ClusterRole>(value)?);
            }
        }
        let mut role =
            role.with_context(|| format!("no ClusterRole in chart {}", chart.display()))?;
        let name = format!("e2e-{}", identity.name());
        role.metadata = kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        };
        roles
            .patch(&name, &params, &kube::api::Patch::Apply(&role))
            .await?;
        let binding = ClusterRoleBinding {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".into(),
                kind: "ClusterRole".into(),
                name: name.clone(),
            },
            subjects: Some(vec![Subject {
                kind: "User".into(),
                name: identity.name().into(),
                api_group: Some("rbac.authorization.k8s.io".into()),
                namespace: None,
            }]),
        };
        bindings
            .patch(&name, &params, &kube::api::Patch::Apply(&binding))
            .await?;
    }
    Ok(())
}

/// Installs (creates or replaces) both CRDs and waits until they are Established.
///
/// Not server-side apply: servers before 1.25 reject an applied CRD that carries the
/// CEL rule (`x-kubernetes-validations` is not in their typed schema), while a plain
/// create or update drops the unknown field, so the same YAML installs everywhere.
pub async fn install_crds(client: &Client) -> Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in shared_crd::crd::all() {
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_already_exists() => {
                let mut updated = crd.clone();
                updated.metadata.resource_version =
                    crds.get(&name).await?.metadata.resource_version;
                crds.replace(&name, &PostParams::default(), &updated)
                    .await
                    .with_context(|| format!("updating CRD {name}"))?;
            }
            Err(e) => return Err(e).with_context(|| format!("installing CRD {name}")),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    for crd in shared_crd::crd::all() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        loop {
            let current = crds.get(&name).await?;
            let established = current
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if established {
                break;
            }
            if Instant::now() > deadline {
                bail!("CRD {name} not Established after 30s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
