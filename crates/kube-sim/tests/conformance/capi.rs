//! The upstream Cluster API, CAPV and Flux CRDs load, are Established, and validate objects.

use std::path::PathBuf;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use serde_json::{Value, json};

use crate::support::{TestServer, cause_fields, expect_status, from_json, within};

fn crd_dir() -> PathBuf {
    // The reference CRDs live next to the checkout (never copied into it); read at test time.
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference/crds")
}

fn load_crds() -> Vec<CustomResourceDefinition> {
    let mut out = Vec::new();
    for sub in ["cluster-api-v1.14", "capv-v1.17", "flux-v2"] {
        let dir = crd_dir().join(sub);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            let v: Value = serde_saphyr::from_str(&text)
                .unwrap_or_else(|e| panic!("parsing {}: {e}", f.display()));
            out.push(from_json(v));
        }
    }
    assert!(out.len() >= 15, "found {} CRDs", out.len());
    out
}

async fn install_all(s: &TestServer) {
    let crds: Api<CustomResourceDefinition> = Api::all(s.client.clone());
    for crd in load_crds() {
        crds.create(&PostParams::default(), &crd)
            .await
            .unwrap_or_else(|e| panic!("creating CRD {}: {e}", crd.name_any()));
    }
    for crd in load_crds() {
        let name = crd.name_any();
        within(
            &format!("CRD {name} to be Established"),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .unwrap();
    }
}

fn api(s: &TestServer, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    Api::namespaced_with(s.client.clone(), "default", &ar)
}

fn obj(api_version: &str, kind: &str, name: &str, spec: Value) -> DynamicObject {
    from_json(
        json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}, "spec": spec}),
    )
}

#[tokio::test]
async fn upstream_crds_load_and_validate() {
    let s = TestServer::start().await;
    install_all(&s).await;

    let clusters = api(&s, "cluster.x-k8s.io", "v1beta2", "Cluster", "clusters");
    let good = obj(
        "cluster.x-k8s.io/v1beta2",
        "Cluster",
        "good",
        json!({
            "clusterNetwork": {"pods": {"cidrBlocks": ["192.168.0.0/16"]}, "services": {"cidrBlocks": ["10.96.0.0/12"]}},
            "controlPlaneEndpoint": {"host": "10.0.0.10", "port": 6443}
        }),
    );
    let created = clusters
        .create(&PostParams::default(), &good)
        .await
        .unwrap();
    assert_eq!(created.data["spec"]["controlPlaneEndpoint"]["port"], 6443);
    let bad = obj(
        "cluster.x-k8s.io/v1beta2",
        "Cluster",
        "bad",
        json!({"paused": "yes", "controlPlaneEndpoint": {"host": "10.0.0.10", "port": 70000}}),
    );
    let st = expect_status(
        clusters.create(&PostParams::default(), &bad).await,
        422,
        "Invalid",
    );
    let fields = cause_fields(&st);
    for f in ["spec.paused", "spec.controlPlaneEndpoint.port"] {
        assert!(fields.iter().any(|x| x == f), "cause for {f} in {st:?}");
    }

    let vsphere = api(
        &s,
        "infrastructure.cluster.x-k8s.io",
        "v1beta2",
        "VSphereCluster",
        "vsphereclusters",
    );
    let good = obj(
        "infrastructure.cluster.x-k8s.io/v1beta2",
        "VSphereCluster",
        "good",
        json!({"server": "vcenter.example.com"}),
    );
    vsphere.create(&PostParams::default(), &good).await.unwrap();
    let bad = obj(
        "infrastructure.cluster.x-k8s.io/v1beta2",
        "VSphereCluster",
        "bad",
        json!({"thumbprint": "AA:BB"}),
    );
    let st = expect_status(
        vsphere.create(&PostParams::default(), &bad).await,
        422,
        "Invalid",
    );
    assert!(
        cause_fields(&st).iter().any(|f| f == "spec.server"),
        "{st:?}"
    );

    // An older served version is served too (same storage, no conversion needed for this read).
    let (code, body) = crate::support::raw(
        &s.client,
        "GET",
        "/apis/cluster.x-k8s.io/v1beta2/namespaces/default/clusters/good",
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["kind"], "Cluster");
}

#[tokio::test]
async fn machine_deployment_scale_and_status_subresources() {
    let s = TestServer::start().await;
    install_all(&s).await;
    let mds = api(
        &s,
        "cluster.x-k8s.io",
        "v1beta2",
        "MachineDeployment",
        "machinedeployments",
    );
    let md = obj(
        "cluster.x-k8s.io/v1beta2",
        "MachineDeployment",
        "workers",
        json!({
            "clusterName": "c1",
            "replicas": 2,
            "selector": {"matchLabels": {"pool": "workers"}},
            "template": {
                "metadata": {"labels": {"pool": "workers"}},
                "spec": {
                    "clusterName": "c1",
                    "version": "v1.32.0",
                    "bootstrap": {"configRef": {"apiGroup": "bootstrap.cluster.x-k8s.io", "kind": "KubeadmConfigTemplate", "name": "workers"}},
                    "infrastructureRef": {"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "VSphereMachineTemplate", "name": "workers"}
                }
            }
        }),
    );
    mds.create(&PostParams::default(), &md).await.unwrap();
    mds.patch_status(
        "workers",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"status": {"replicas": 1, "selector": "pool=workers"}})),
    )
    .await
    .unwrap();
    let scale = mds.get_scale("workers").await.unwrap();
    assert_eq!(scale.spec.and_then(|s| s.replicas), Some(2));
    let st = scale.status.unwrap();
    assert_eq!(
        (st.replicas, st.selector.as_deref()),
        (1, Some("pool=workers"))
    );
    mds.patch_scale(
        "workers",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"replicas": 5}})),
    )
    .await
    .unwrap();
    assert_eq!(
        mds.get("workers").await.unwrap().data["spec"]["replicas"],
        5
    );

    // The schema's patterns apply: an invalid reference kind is rejected.
    let mut bad = md.clone();
    bad.metadata.name = Some("bad".into());
    bad.data["spec"]["template"]["spec"]["infrastructureRef"]["kind"] = json!("9-not-a-kind");
    let st = expect_status(
        mds.create(&PostParams::default(), &bad).await,
        422,
        "Invalid",
    );
    assert!(
        cause_fields(&st)
            .iter()
            .any(|f| f == "spec.template.spec.infrastructureRef.kind"),
        "{st:?}"
    );
}
