//! Both Helm charts installed for real on the local control plane: `helm install`,
//! `helm upgrade` with changed values, `helm uninstall`. The CRDs come from a chart's
//! `crds/` and survive the uninstall, as Helm does. No kubelet runs the operator pods
//! here (no image), so the test asserts on the objects the charts create, not on
//! `--wait`. Own binary: it removes the CRDs the harness installed, to see the chart
//! install them.
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use test_support::{chart, eventually, helm, shared, unique_name};

const CRDS: [&str; 2] = ["nodepools.nodepool.dev", "autoscalers.nodepool.dev"];
const CHARTS: [&str; 2] = ["nodepool-operator", "autoscaler-operator"];

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
            "--set",
            "retry.steps=7",
            "--set",
            "maxNodes=12",
            "--set",
            "provider.virtualTaint=false",
            "--set",
            "podLabels.team=infra",
            "--set",
            "priorityClassName=system-cluster-critical",
        ],
    );
    let d = deployment(&client, &ns, "nodepool-operator-test-nodepool-operator").await;
    assert_eq!(d.spec.as_ref().unwrap().replicas, Some(3));
    for flag in [
        "--conflict-strategy=retry",
        "--retry-steps=7",
        "--max-nodes=12",
        "--no-virtual-taint",
    ] {
        assert!(
            args(&d).contains(&flag.to_owned()),
            "{flag}: {:?}",
            args(&d)
        );
    }
    // Unset settings render no flag: the operator's own defaults apply.
    assert!(
        !args(&d).iter().any(|a| a.starts_with("--concurrency")),
        "{:?}",
        args(&d)
    );
    let template = d.spec.as_ref().unwrap().template.clone();
    let labels = template.metadata.unwrap().labels.unwrap_or_default();
    assert_eq!(labels.get("team").map(String::as_str), Some("infra"));
    let pod = template.spec.unwrap();
    assert_eq!(
        pod.priority_class_name.as_deref(),
        Some("system-cluster-critical")
    );
    // The token is mounted into the operator pod, which uses it, and nowhere else.
    assert_eq!(pod.automount_service_account_token, Some(true));
    let account = Api::<ServiceAccount>::namespaced(client.clone(), &ns)
        .get(pod.service_account_name.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(account.automount_service_account_token, Some(false));
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
    let assets = test_support::control_plane::assets_dir().unwrap();
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
        // The opt-in objects render when asked for.
        let opt_in = template("serviceMonitor.enabled=true,networkPolicy.enabled=true");
        let rendered = String::from_utf8_lossy(&opt_in.stdout);
        assert!(
            opt_in.status.success(),
            "{}",
            String::from_utf8_lossy(&opt_in.stderr)
        );
        assert!(rendered.contains("kind: ServiceMonitor"), "{name}");
        assert!(rendered.contains("kind: NetworkPolicy"), "{name}");
        let default = template("replicas=2");
        let rendered = String::from_utf8_lossy(&default.stdout);
        assert!(
            !rendered.contains("kind: ServiceMonitor") && !rendered.contains("kind: NetworkPolicy")
        );
        for (set, says) in [
            ("conflictStrategy=optimistic", "/conflictStrategy"),
            ("replicas=0", "/replicas"),
            ("logFormat=xml", "/logFormat"),
            ("extraArgs[0]=max-nodes=3", "/extraArgs/0"),
            ("leaderElection.leaseSecond=15", "leaseSecond"),
            ("concurrency=0", "/concurrency"),
            ("retry.steps=many", "/retry/steps"),
            ("serviceMonitor.enabled=yes", "/serviceMonitor/enabled"),
        ] {
            let out = template(set);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{name}: {set} accepted");
            assert!(stderr.contains(says), "{name}: {set}: {stderr}");
        }
    }
}
