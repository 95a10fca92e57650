//! Both Helm charts installed for real on the local control plane: `helm install`,
//! `helm upgrade` with changed values, `helm uninstall`. The CRDs come from a chart's
//! `crds/` and survive the uninstall, as Helm does. No kubelet runs the operator pods
//! here (no image), so the test asserts on the objects the charts create, not on
//! `--wait`. Own binary: it removes the CRDs the harness installed, to see the chart
//! install them.
use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::{eventually, shared, unique_name};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;

const CRDS: [&str; 2] = ["nodepools.nodepool.dev", "autoscalers.nodepool.dev"];
const CHARTS: [&str; 2] = ["nodepool-operator", "autoscaler-operator"];

fn chart(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts")
        .join(name)
}

/// Runs helm against the test control plane; panics with its output if it fails.
fn helm(kubeconfig: &Path, args: &[&str]) -> String {
    let assets = e2e::control_plane::assets_dir().unwrap();
    let out = std::process::Command::new(assets.join("helm"))
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm {args:?}: {text}");
    text
}

async fn deployment(client: &kube::Client, ns: &str, name: &str) -> Deployment {
    Api::<Deployment>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("Deployment {ns}/{name}: {e}"))
}

fn args(d: &Deployment) -> Vec<String> {
    d.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap_or_default()
}

#[tokio::test]
async fn both_charts_install_upgrade_and_uninstall() {
    let cp = shared();
    if cp.is_external() {
        eprintln!("skipped: `make kind-deploy` installs the charts on kind");
        return;
    }
    let client = cp.client().await.unwrap();
    let kubeconfig = cp.kubeconfig();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // The chart installs the CRDs itself: start without them.
    for crd in CRDS {
        crds.delete(crd, &Default::default()).await.unwrap();
    }
    eventually("the CRDs gone", Duration::from_secs(60), || async {
        for crd in CRDS {
            if crds
                .get_opt(crd)
                .await
                .map_err(|e| e.to_string())?
                .is_some()
            {
                return Err(format!("{crd} still there"));
            }
        }
        Ok(())
    })
    .await;

    let ns = unique_name("charts");
    for name in CHARTS {
        let release = format!("{name}-test");
        helm(
            kubeconfig,
            &[
                "install",
                &release,
                &chart(name).to_string_lossy(),
                "--namespace",
                &ns,
                "--create-namespace",
                "--set",
                "image.tag=test",
                // Helm 4 applies server-side by default, which a server before 1.25
                // refuses for the CRD's `x-kubernetes-validations` (README).
                "--server-side=false",
            ],
        );
    }
    eventually("the CRDs established", Duration::from_secs(60), || async {
        for crd in CRDS {
            let c = crds.get(crd).await.map_err(|e| e.to_string())?;
            let established = c
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            if !established {
                return Err(format!("{crd} not established"));
            }
        }
        Ok(())
    })
    .await;

    for name in CHARTS {
        let object = format!("{name}-test-{name}");
        let d = deployment(&client, &ns, &object).await;
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2), "{name}: two replicas");
        let pod = spec.template.spec.as_ref().unwrap();
        let pod_security = pod.security_context.as_ref().unwrap();
        assert_eq!(pod_security.run_as_non_root, Some(true), "{name}");
        assert_eq!(
            pod_security
                .seccomp_profile
                .as_ref()
                .map(|s| s.type_.as_str()),
            Some("RuntimeDefault"),
            "{name}"
        );
        let container = &pod.containers[0];
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true), "{name}");
        assert_eq!(security.allow_privilege_escalation, Some(false), "{name}");
        assert_eq!(
            security.capabilities.as_ref().and_then(|c| c.drop.clone()),
            Some(vec!["ALL".to_owned()]),
            "{name}"
        );
        assert!(
            container
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .is_some()
        );
        assert!(
            container
                .image
                .as_deref()
                .is_some_and(|i| i.ends_with(":test")),
            "{:?}",
            container.image
        );
        let a = args(&d);
        assert!(a.contains(&"--leader-elect".to_owned()), "{a:?}");
        assert!(
            a.contains(&format!("--leader-elect-namespace={ns}")),
            "{a:?}"
        );
        Api::<ServiceAccount>::namespaced(client.clone(), &ns)
            .get(name)
            .await
            .unwrap();
        Api::<Service>::namespaced(client.clone(), &ns)
            .get(&format!("{object}-metrics"))
            .await
            .unwrap();
        Api::<ClusterRole>::all(client.clone())
            .get(&object)
            .await
            .unwrap();
        Api::<ClusterRoleBinding>::all(client.clone())
            .get(&object)
            .await
            .unwrap();
        let leader = format!("{object}-leader-election");
        Api::<Role>::namespaced(client.clone(), &ns)
            .get(&leader)
            .await
            .unwrap();
        Api::<RoleBinding>::namespaced(client.clone(), &ns)
            .get(&leader)
            .await
            .unwrap();
    }
    // The PodDisruptionBudget, in whichever policy version the server serves.
    let pdbs = helm(
        kubeconfig,
        &["get", "manifest", "nodepool-operator-test", "-n", &ns],
    );
    assert!(pdbs.contains("kind: PodDisruptionBudget"), "{pdbs}");

    // helm upgrade with changed values reaches the Deployment.
    helm(
        kubeconfig,
        &[
            "upgrade",
            "nodepool-operator-test",
            &chart("nodepool-operator").to_string_lossy(),
            "--namespace",
            &ns,
            "--reuse-values",
            "--server-side=false",
            "--set",
            "replicas=3",
            "--set",
            "conflictStrategy=retry",
        ],
    );
    let d = deployment(&client, &ns, "nodepool-operator-test-nodepool-operator").await;
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
    assert!(
        args(&d).contains(&"--conflict-strategy=retry".to_owned()),
        "{:?}",
        args(&d)
    );
    let history = helm(
        kubeconfig,
        &["history", "nodepool-operator-test", "-n", &ns],
    );
    assert!(history.lines().count() >= 3, "{history}");

    // helm uninstall removes what the releases made; the CRDs stay, as Helm leaves them.
    for name in CHARTS {
        helm(
            kubeconfig,
            &["uninstall", &format!("{name}-test"), "-n", &ns],
        );
    }
    for name in CHARTS {
        let object = format!("{name}-test-{name}");
        eventually(
            &format!("{object} gone"),
            Duration::from_secs(60),
            || async {
                let d = Api::<Deployment>::namespaced(client.clone(), &ns)
                    .get_opt(&object)
                    .await
                    .map_err(|e| e.to_string())?;
                let role = Api::<ClusterRole>::all(client.clone())
                    .get_opt(&object)
                    .await
                    .map_err(|e| e.to_string())?;
                (d.is_none() && role.is_none())
                    .then_some(())
                    .ok_or("still there".to_owned())
            },
        )
        .await;
    }
    for crd in CRDS {
        assert!(
            crds.get_opt(crd).await.unwrap().is_some(),
            "{crd} was removed"
        );
    }
    let _ = Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
        .delete(&ns, &Default::default())
        .await;
}

#[test]
fn a_wrong_value_fails_at_helm_time_not_at_run_time() {
    let assets = e2e::control_plane::assets_dir().unwrap();
    for name in CHARTS {
        let template = |set: &str| {
            std::process::Command::new(assets.join("helm"))
                .args(["template", "x"])
                .arg(chart(name))
                .args(["--set", set])
                .output()
                .unwrap()
        };
        assert!(template("conflictStrategy=retry").status.success());
        for (set, says) in [
            ("conflictStrategy=optimistic", "/conflictStrategy"),
            ("replicas=0", "/replicas"),
            ("logFormat=xml", "/logFormat"),
            ("extraArgs[0]=max-nodes=3", "/extraArgs/0"),
            ("leaderElection.leaseSecond=15", "leaseSecond"),
        ] {
            let out = template(set);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{name}: {set} accepted");
            assert!(stderr.contains(says), "{name}: {set}: {stderr}");
        }
    }
}
