//! The CRDs on a real API server: installed, established, and behaving as the
//! operators rely on (generation vs resourceVersion, scale subresource, validation).
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use shared_crd::{Autoscaler, NodePool};
use test_support::{fixtures, shared, unique_name};

#[tokio::test]
async fn crds_are_installed_and_established() {
    let client = shared().client().await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client);
    for name in ["nodepools.nodepool.dev", "autoscalers.nodepool.dev"] {
        let crd = crds.get(name).await.unwrap();
        let conditions = crd.status.unwrap().conditions.unwrap_or_default();
        assert!(
            conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True"),
            "{name} not established: {conditions:?}"
        );
    }
}

#[tokio::test]
async fn the_documented_crd_install_command_works_here() {
    // README: `kubectl apply --validate=false -f deploy/crds/`, for old and new servers
    // alike (kubectl's own schema check refuses `x-kubernetes-validations` on 1.20).
    let cp = shared();
    let assets = test_support::control_plane::assets_dir().unwrap();
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/crds");
    let out = std::process::Command::new(assets.join("kubectl"))
        .arg("--kubeconfig")
        .arg(cp.kubeconfig())
        .args(["apply", "--validate=false", "-f"])
        .arg(&crds)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["nodepools.nodepool.dev", "autoscalers.nodepool.dev"] {
        assert!(stdout.contains(name), "{stdout}");
    }
}

#[tokio::test]
async fn status_write_bumps_resource_version_but_not_generation() {
    let client = shared().client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client);
    let name = unique_name("gen");
    let created = pools
        .create(&PostParams::default(), &fixtures::nodepool(&name, 1))
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    let status = json!({"status": {"replicas": 1, "readyReplicas": 0}});
    let after_status = pools
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    assert_eq!(
        after_status.metadata.generation,
        Some(1),
        "status write changed generation"
    );
    assert_ne!(after_status.resource_version(), created.resource_version());

    let spec = json!({"spec": {"replicas": 2}});
    let after_spec = pools
        .patch(&name, &PatchParams::default(), &Patch::Merge(&spec))
        .await
        .unwrap();
    assert_eq!(
        after_spec.metadata.generation,
        Some(2),
        "spec write kept generation"
    );
    assert_ne!(
        after_spec.resource_version(),
        after_status.resource_version()
    );

    // A write to the main resource cannot change status, and vice versa.
    assert_eq!(after_spec.status.unwrap().replicas, 1);
    pools.delete(&name, &Default::default()).await.unwrap();
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_replicas() {
    let client = shared().client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client);
    let name = unique_name("scale");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&name, 1))
        .await
        .unwrap();
    let selector = json!({"status": {"replicas": 1, "selector": NodePool::node_selector(&name)}});
    pools
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&selector))
        .await
        .unwrap();

    let scale: Scale = pools.get_scale(&name).await.unwrap();
    assert_eq!(scale.spec.as_ref().unwrap().replicas, Some(1));
    assert_eq!(
        scale.status.as_ref().unwrap().selector.as_deref(),
        Some(&*NodePool::node_selector(&name))
    );

    let patch = json!({"spec": {"replicas": 3}});
    pools
        .patch_scale(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert_eq!(pools.get(&name).await.unwrap().spec.replicas, 3);
    pools.delete(&name, &Default::default()).await.unwrap();
}

#[tokio::test]
async fn a_huge_replicas_is_rejected_with_a_clear_message() {
    let client = shared().client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client);
    for replicas in [shared_crd::MAX_REPLICAS + 1, i32::MAX] {
        let err = pools
            .create(
                &PostParams::default(),
                &fixtures::nodepool(&unique_name("huge"), replicas),
            )
            .await
            .unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("expected an API error, got {err:?}")
        };
        assert!(status.is_invalid(), "{status:?}");
        assert!(
            status.message.contains("spec.replicas")
                && status.message.contains("less than or equal to 5000"),
            "{}",
            status.message
        );
    }
}

#[tokio::test]
async fn negative_replicas_are_rejected_with_a_clear_message() {
    let client = shared().client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client);
    let err = pools
        .create(
            &PostParams::default(),
            &fixtures::nodepool(&unique_name("neg"), -1),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert!(status.is_invalid(), "{status:?}");
    assert!(
        status.message.contains("spec.replicas"),
        "{}",
        status.message
    );
    assert!(
        status.message.contains("greater than or equal to 0"),
        "{}",
        status.message
    );
}

#[tokio::test]
async fn autoscaler_bounds_are_validated_by_the_schema() {
    let client = shared().client().await.unwrap();
    let autoscalers: Api<Autoscaler> = Api::all(client);
    let mut bad = fixtures::autoscaler(&unique_name("as"), "pool", 0, 5);
    bad.spec.max_replicas = 0;
    let err = autoscalers
        .create(&PostParams::default(), &bad)
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("expected an API error, got {err:?}")
    };
    assert!(
        status.is_invalid() && status.message.contains("spec.maxReplicas"),
        "{status:?}"
    );

    // min > max passes the 1.20 schema (no CEL there): the operator has to catch it.
    let inverted = fixtures::autoscaler(&unique_name("as"), "pool", 5, 2);
    let result = autoscalers.create(&PostParams::default(), &inverted).await;
    if let Err(kube::Error::Api(status)) = &result {
        // A server with CEL (1.25+) rejects it with the rule's message.
        assert!(
            status
                .message
                .contains("minReplicas must not exceed maxReplicas"),
            "{status:?}"
        );
    } else {
        let created = result.unwrap();
        autoscalers
            .delete(&created.name_any(), &Default::default())
            .await
            .unwrap();
    }
}

/// Applies a status with conditions of `types` (and nothing else) as `manager`.
async fn apply_conditions<K>(api: &Api<K>, name: &str, manager: &str, types: &[&str]) -> K
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let conditions: Vec<_> = types
        .iter()
        .map(|t| {
            json!({"type": t, "status": "True", "reason": "Test", "message": "set by a test",
                   "lastTransitionTime": "2026-01-01T00:00:00Z"})
        })
        .collect();
    let body = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()),
                      "metadata": {"name": name}, "status": {"conditions": conditions}});
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(body),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn two_field_managers_each_own_their_condition_in_one_list() {
    let client = shared().client().await.unwrap();
    let autoscalers: Api<Autoscaler> = Api::all(client);
    let name = unique_name("lm");
    autoscalers
        .create(
            &PostParams::default(),
            &fixtures::autoscaler(&name, "pool", 1, 3),
        )
        .await
        .unwrap();
    apply_conditions(&autoscalers, &name, "autoscaler-operator", &["Active"]).await;
    apply_conditions(&autoscalers, &name, "nodepool-operator", &["NodePoolReady"]).await;
    // The autoscaler re-applies its own list: the other manager's entry stays.
    let after = apply_conditions(
        &autoscalers,
        &name,
        "autoscaler-operator",
        &["Active", "AbleToScale"],
    )
    .await;
    let types: Vec<_> = after
        .status
        .unwrap()
        .conditions
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(types, ["Active", "NodePoolReady", "AbleToScale"]);
    autoscalers
        .delete(&name, &Default::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn two_field_managers_each_own_their_condition_on_a_nodepool() {
    let client = shared().client().await.unwrap();
    let pools: Api<NodePool> = Api::all(client);
    let name = unique_name("lm-pool");
    pools
        .create(&PostParams::default(), &fixtures::nodepool(&name, 1))
        .await
        .unwrap();
    apply_conditions(&pools, &name, "auditor", &["Audited"]).await;
    let after = apply_conditions(&pools, &name, "nodepool-operator", &["Ready", "Scaling"]).await;
    let types: Vec<_> = after
        .status
        .unwrap()
        .conditions
        .iter()
        .map(|c| c.type_.clone())
        .collect();
    assert_eq!(types, ["Audited", "Ready", "Scaling"]);
}

#[tokio::test]
async fn each_operators_chart_rbac_refuses_what_it_must_not_do() {
    let cp = shared();
    if cp.is_external() {
        eprintln!("skipped: an external cluster's identities are its kubeconfig's");
        return;
    }
    let admin = cp.client().await.unwrap();
    let pool = unique_name("rbac");
    Api::<NodePool>::all(admin.clone())
        .create(&PostParams::default(), &fixtures::nodepool(&pool, 0))
        .await
        .unwrap();
    let scaler = unique_name("rbac");
    Api::<Autoscaler>::all(admin.clone())
        .create(
            &PostParams::default(),
            &fixtures::autoscaler(&scaler, &pool, 0, 2),
        )
        .await
        .unwrap();
    let forbidden = |result: kube::Result<serde_json::Value>, what: &str| match result {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    };
    let status = json!({"status": {"replicas": 7}});
    let spec = json!({"spec": {"maxReplicas": 9}});

    // autoscaler-operator writes a pool's spec.replicas, never its status.
    let autoscaler = cp
        .client_as(test_support::Identity::AutoscalerOperator)
        .await
        .unwrap();
    let pools: Api<NodePool> = Api::all(autoscaler);
    forbidden(
        pools
            .patch_status(&pool, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map(|p| serde_json::to_value(p).unwrap()),
        "autoscaler-operator writing NodePool status",
    );
    // nodepool-operator writes an Autoscaler's status (NodePoolReady), never its spec.
    let nodepool = cp
        .client_as(test_support::Identity::NodepoolOperator)
        .await
        .unwrap();
    let autoscalers: Api<Autoscaler> = Api::all(nodepool.clone());
    forbidden(
        autoscalers
            .patch(&scaler, &PatchParams::default(), &Patch::Merge(&spec))
            .await
            .map(|a| serde_json::to_value(a).unwrap()),
        "nodepool-operator writing an Autoscaler's spec",
    );
    // ...and each may do what it must: the other halves of the same objects.
    Api::<NodePool>::all(
        cp.client_as(test_support::Identity::AutoscalerOperator)
            .await
            .unwrap(),
    )
    .patch(
        &pool,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    autoscalers
        .patch_status(
            &scaler,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"observedGeneration": 1}})),
        )
        .await
        .unwrap();

    Api::<Autoscaler>::all(admin.clone())
        .delete(&scaler, &Default::default())
        .await
        .unwrap();
    Api::<NodePool>::all(admin)
        .delete(&pool, &Default::default())
        .await
        .unwrap();
}
