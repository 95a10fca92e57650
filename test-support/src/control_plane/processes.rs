//! The control plane's processes: each one started under a supervisor that stops it when
//! the test process ends, and the waits until they serve.
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::api::Api;

use super::Mode;

pub(super) fn spawn(mut cmd: Command, dir: &Path, name: &str, mode: Mode) -> Result<Child> {
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

pub(super) fn stop_children(children: Vec<Child>) {
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
pub(super) fn none_exited(children: &mut [Child], dir: &Path) -> Result<()> {
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
pub(super) async fn wait_for_default_service_account(
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

pub(super) async fn wait_ready(client: &Client, dir: &Path, children: &mut [Child]) -> Result<()> {
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

pub(super) fn http_get(path: &str) -> http::Request<Vec<u8>> {
    http::Request::get(path)
        .body(Vec::new())
        .expect("a valid request")
}

pub(super) fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}
