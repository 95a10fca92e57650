//! Both images, built and run here (`make images`, then each image against the local
//! control plane), as a user deploys them:
//! - a Docker engine: the running one, or Debian's `docker.io` started (and stopped) here;
//! - `hack/images.sh` builds both images through the one Dockerfile; with no registry
//!   reachable, it compiles the static binaries here and packages them FROM scratch;
//! - each image: a numeric non-root user, no shell, nothing but the binary, small;
//! - each chart installed for real; its operator pod cannot run here (no kubelet), so the
//!   test runs the pod's container itself with `docker run`: the image, the args the
//!   chart rendered, the chart's security settings (read-only root, no capabilities, no
//!   privilege escalation), and the chart ServiceAccount's token mounted where the
//!   in-cluster config reads it;
//! - they reconcile: a NodePool gets its nodes from the nodepool-operator image, and an
//!   Autoscaler writes the pool's `spec.replicas` from the autoscaler-operator image.
//!
//! Own binary and control plane: no operator runs here but the two containers.
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use shared_crd::{Autoscaler, NodePool};
use test_support::docker::Engine;
use test_support::{chart, eventually, fixtures, helm, shared, unique_name};

const OPERATORS: [&str; 2] = ["nodepool-operator", "autoscaler-operator"];
const TAG: &str = "e2e";
/// The largest image we accept: the binary is about 10 MB.
const MAX_IMAGE_BYTES: u64 = 40 * 1024 * 1024;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// `make images`, with the binary compiled here (what it does with no registry).
fn build_images(engine: &Engine) -> Vec<String> {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("hack/images.sh"))
        .current_dir(repo())
        .env("IMAGE_TAG", TAG)
        .env("IMAGE_BINARY", "prebuilt")
        .env("DOCKER", &engine.client);
    if let Some(host) = &engine.host {
        cmd.env("DOCKER_HOST", host);
    }
    let out = cmd.output().expect("hack/images.sh runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "make images failed:\n{stderr}");
    let images: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(images.len(), 2, "{images:?}\n{stderr}");
    images
}

/// What a user cannot see from outside but the issue asks for: user, size, no shell,
/// nothing but the binary, and that it runs (FROM scratch: only a static binary does).
fn check_image(engine: &Engine, image: &str) {
    let inspect = engine
        .run(&[
            "image",
            "inspect",
            "-f",
            "{{.Config.User}} {{.Size}}",
            image,
        ])
        .unwrap();
    let (user, size) = inspect.trim().split_once(' ').unwrap();
    assert_eq!(
        user, "65532:65532",
        "{image} runs as a numeric non-root user"
    );
    let size: u64 = size.parse().unwrap();
    assert!(size < MAX_IMAGE_BYTES, "{image} is {size} bytes");
    eprintln!("{image}: {:.1} MB, user {user}", size as f64 / 1e6);

    let shell = engine
        .output(&[
            "run",
            "--rm",
            "--entrypoint",
            "/bin/sh",
            image,
            "-c",
            "true",
        ])
        .unwrap();
    assert!(!shell.status.success(), "{image} has a shell");

    let container = engine.run(&["create", image]).unwrap();
    let container = container.trim();
    let export = engine
        .command()
        .args(["export", container])
        .output()
        .unwrap();
    engine.run(&["rm", container]).unwrap();
    assert!(export.status.success());
    let mut listing = Command::new("tar")
        .args(["-tv"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        listing
            .stdin
            .take()
            .unwrap()
            .write_all(&export.stdout)
            .unwrap();
    }
    let listing = String::from_utf8(listing.wait_with_output().unwrap().stdout).unwrap();
    // Regular files with content: the binary only (the engine adds empty mount points
    // such as etc/hosts and .dockerenv to every container).
    let files: Vec<&str> = listing
        .lines()
        .filter(|l| l.starts_with('-'))
        .filter(|l| l.split_whitespace().nth(2).is_some_and(|size| size != "0"))
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    assert_eq!(files, ["operator"], "{image} holds:\n{listing}");

    let help = engine.output(&["run", "--rm", image, "--help"]).unwrap();
    assert!(
        help.status.success(),
        "{image} --help: {}",
        String::from_utf8_lossy(&help.stderr)
    );
}

/// The chart's ServiceAccount token, CA and namespace, in a directory to mount where a
/// pod has them (`/var/run/secrets/kubernetes.io/serviceaccount`), readable by the
/// image's user.
async fn service_account_dir(client: &Client, ns: &str, sa: &str, dir: &Path) {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    // The token controller (kube-controller-manager) makes the token Secret of 1.20.
    let secret = eventually(
        "the ServiceAccount's token",
        Duration::from_secs(60),
        || async {
            let account = accounts.get(sa).await.map_err(|e| e.to_string())?;
            let name = account
                .secrets
                .unwrap_or_default()
                .first()
                .and_then(|s| s.name.clone())
                .ok_or("no token Secret yet")?;
            secrets.get(&name).await.map_err(|e| e.to_string())
        },
    )
    .await;
    let data = secret.data.unwrap_or_default();
    std::fs::create_dir_all(dir).unwrap();
    for (file, key) in [
        ("token", "token"),
        ("ca.crt", "ca.crt"),
        ("namespace", "namespace"),
    ] {
        let value = &data
            .get(key)
            .unwrap_or_else(|| panic!("{key} in the token Secret"))
            .0;
        let path = dir.join(file);
        std::fs::write(&path, value).unwrap();
        set_mode(&path, 0o644);
    }
    set_mode(dir, 0o755);
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn both_images_build_and_reconcile_as_their_charts_service_accounts() {
    let cp = shared();
    if cp.is_external() {
        eprintln!("skipped: on kind, `make kind-deploy` loads and runs the images");
        return;
    }
    let client = cp.client().await.unwrap();
    let engine = tokio::task::spawn_blocking(Engine::ensure)
        .await
        .unwrap()
        .expect("a Docker engine");
    eprintln!(
        "docker engine: {} ({})",
        engine.host.as_deref().unwrap_or("the running one"),
        if engine.started_here() {
            "started here"
        } else {
            "already running"
        }
    );
    let (engine, images) = tokio::task::spawn_blocking(move || {
        let images = build_images(&engine);
        for image in &images {
            check_image(&engine, image);
        }
        (engine, images)
    })
    .await
    .unwrap();

    // The charts, installed for real, and each operator pod's container run by docker.
    let server = cp
        .config_as(test_support::Identity::Admin)
        .await
        .unwrap()
        .cluster_url;
    let (host, port) = (
        server.host().unwrap().to_owned(),
        server.port_u16().unwrap().to_string(),
    );
    let ns = unique_name("images");
    let scratch = tempdir(&ns);
    let mut containers = Vec::new();
    for (operator, image) in OPERATORS.iter().zip(&images) {
        let release = format!("{operator}-img");
        let metrics_port = test_support::control_plane::free_port().unwrap();
        let (repository, _) = image.rsplit_once(':').unwrap();
        helm(
            cp.kubeconfig(),
            &[
                "install",
                &release,
                &chart(operator).to_string_lossy(),
                "--namespace",
                &ns,
                "--create-namespace",
                "--skip-crds",
                "--server-side=false",
                "--set",
                &format!("image.repository={repository}"),
                "--set",
                &format!("image.tag={TAG}"),
                "--set",
                &format!("metricsPort={metrics_port}"),
                "--set",
                "replicas=1",
            ],
        );
        let deployment: Deployment = Api::namespaced(client.clone(), &ns)
            .get(&format!("{release}-{operator}"))
            .await
            .unwrap();
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some(image.as_str()));
        let sa = pod.service_account_name.unwrap();
        let secrets = scratch.join(operator);
        service_account_dir(&client, &ns, &sa, &secrets).await;

        let name = unique_name(operator);
        let mut run: Vec<String> = [
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "--read-only",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            "-v",
            &format!(
                "{}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
                secrets.display()
            ),
            "-e",
            &format!("KUBERNETES_SERVICE_HOST={host}"),
            "-e",
            &format!("KUBERNETES_SERVICE_PORT={port}"),
            "-e",
            &format!("POD_NAME={name}"),
            image,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        run.extend(container.args.clone().unwrap_or_default());
        let args: Vec<&str> = run.iter().map(String::as_str).collect();
        engine.run(&args).unwrap();
        containers.push(name.clone());
        let addr = format!("127.0.0.1:{metrics_port}");
        let logs = |engine: &Engine| {
            let out = engine.output(&["logs", &name]).unwrap();
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        };
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while !test_support::http_get(&addr, "/readyz").is_ok_and(|b| b.trim() == "ok") {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
        .await;
        assert!(
            ready.is_ok(),
            "{operator} container not ready:\n{}",
            logs(&engine)
        );
    }

    // They reconcile: the pool gets 2 nodes from one container, the Autoscaler (min 3)
    // writes its size from the other, and the first makes the third node.
    let pools: Api<NodePool> = Api::all(client.clone());
    let autoscalers: Api<Autoscaler> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let pool = unique_name("img");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 2))
        .await
        .unwrap();
    let ready = |want: usize| {
        let (nodes, pool) = (nodes.clone(), pool.clone());
        async move {
            eventually(
                &format!("{want} Ready nodes"),
                Duration::from_secs(90),
                || async {
                    let ready = test_support::ready_nodes(&nodes, &pool).await;
                    (ready == want)
                        .then_some(())
                        .ok_or(format!("{ready} ready"))
                },
            )
            .await
        }
    };
    ready(2).await;
    let scaler = unique_name("img");
    autoscalers
        .create(
            &PostParams::default(),
            &fixtures::autoscaler(&scaler, &pool, 3, 4),
        )
        .await
        .unwrap();
    ready(3).await;
    let written = pools.get(&pool).await.unwrap();
    assert_eq!(written.spec.replicas, 3);
    let managers: Vec<String> = written
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers
            .iter()
            .any(|m| m == shared_crd::field_manager::AUTOSCALER_OPERATOR),
        "spec.replicas written by {managers:?}"
    );

    // Cleanup: the containers, the objects, the releases; the engine stops on drop if it
    // was started here.
    autoscalers
        .delete(&scaler, &DeleteParams::default())
        .await
        .unwrap();
    pools.delete(&pool, &DeleteParams::default()).await.unwrap();
    eventually("the pool's nodes gone", Duration::from_secs(60), || async {
        let (left, _, _) = test_support::pool_node_counts(&nodes, &pool).await;
        (left == 0).then_some(()).ok_or(format!("{left} left"))
    })
    .await;
    for name in &containers {
        engine.run(&["rm", "-f", name]).unwrap();
    }
    for operator in OPERATORS {
        helm(
            cp.kubeconfig(),
            &["uninstall", &format!("{operator}-img"), "--namespace", &ns],
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    drop(engine);
}

fn tempdir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    set_mode(&dir, 0o755);
    dir
}
