//! Discovery and OpenAPI through kubectl: `version`, `api-resources`, `api-versions`, `explain`.

use crate::manifests::GADGET_CRD;
use crate::support::{Cluster, has_row};

#[tokio::test]
async fn version_and_api_versions() {
    let k = Cluster::start().await;
    let v = k.ok(&["version", "-o", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert!(
        v["serverVersion"]["gitVersion"]
            .as_str()
            .is_some_and(|g| g.starts_with("v1.")),
        "{v}"
    );
    let versions = k.ok(&["api-versions"]).await;
    for gv in [
        "v1",
        "apps/v1",
        "apiextensions.k8s.io/v1",
        "coordination.k8s.io/v1",
        "rbac.authorization.k8s.io/v1",
    ] {
        assert!(
            versions.lines().any(|l| l == gv),
            "{gv} in api-versions:\n{versions}"
        );
    }
}

#[tokio::test]
async fn api_resources_lists_builtins_and_crds() {
    let k = Cluster::start().await;
    k.ok(&[
        "apply",
        "-f",
        k.file("crd.yaml", GADGET_CRD).to_str().unwrap(),
    ])
    .await;
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=15s",
        "crd/gadgets.kubectl.kube-sim.dev",
    ])
    .await;
    let out = k.ok(&["api-resources"]).await;
    let header: Vec<&str> = out
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"],
        "{out}"
    );
    for row in [
        &["deployments", "deploy", "apps/v1", "true", "Deployment"][..],
        &["configmaps", "cm", "v1", "true", "ConfigMap"],
        &["namespaces", "ns", "v1", "false", "Namespace"],
        &[
            "customresourcedefinitions",
            "crd,crds",
            "apiextensions.k8s.io/v1",
            "false",
            "CustomResourceDefinition",
        ],
        &["leases", "coordination.k8s.io/v1", "true", "Lease"],
        &["gadgets", "gd", "kubectl.kube-sim.dev/v1", "true", "Gadget"],
    ] {
        assert!(has_row(&out, row), "row {row:?} in api-resources:\n{out}");
    }
    let apps = k
        .ok(&["api-resources", "--api-group=apps", "-o", "name"])
        .await;
    assert!(apps.lines().any(|l| l == "deployments.apps"), "{apps}");
    let wide = k.ok(&["api-resources", "-o", "wide"]).await;
    assert!(
        has_row(&wide, &["configmaps", "cm", "v1", "true", "ConfigMap"]),
        "{wide}"
    );
    assert!(
        wide.lines().next().unwrap_or_default().contains("VERBS"),
        "{wide}"
    );
}

#[tokio::test]
async fn explain_uses_openapi() {
    let k = Cluster::start().await;
    let out = k.ok(&["explain", "configmap.data"]).await;
    assert!(out.contains("KIND:") && out.contains("ConfigMap"), "{out}");
    assert!(out.contains("FIELD:") && out.contains("data"), "{out}");
    assert!(out.contains("map[string]string"), "{out}");
    let out = k.ok(&["explain", "deployment.spec.replicas"]).await;
    assert!(out.contains("<integer>"), "{out}");
    let bad = k.run(&["explain", "configmap.nope"]).await;
    assert_ne!(bad.code, 0, "{bad:?}");

    // Custom resources are explained from their schema.
    k.ok(&[
        "apply",
        "-f",
        k.file("crd.yaml", GADGET_CRD).to_str().unwrap(),
    ])
    .await;
    k.ok(&[
        "wait",
        "--for=condition=Established",
        "--timeout=15s",
        "crd/gadgets.kubectl.kube-sim.dev",
    ])
    .await;
    let out = k.ok(&["explain", "gadget.spec"]).await;
    assert!(out.contains("color") && out.contains("replicas"), "{out}");
}

#[tokio::test]
async fn explain_with_openapi_v2() {
    // client-go fetches /openapi/v2 as protobuf (application/com.github.proto-openapi.spec.v2@v1.0+protobuf);
    // kubectl also falls back to it for validation when a group is missing from its v3 index.
    let k = Cluster::start().await;
    let out = k
        .ok(&["explain", "configmap.data", "--output=plaintext-openapiv2"])
        .await;
    assert!(
        out.contains("FIELD:") && out.contains("data") && out.contains("map[string]string"),
        "{out}"
    );
}

#[tokio::test]
async fn missing_object_is_exit_1_with_not_found() {
    let k = Cluster::start().await;
    let out = k.run(&["get", "configmap", "missing"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("NotFound"), "{out:?}");
    assert!(
        out.stderr.contains("configmaps \"missing\" not found"),
        "{out:?}"
    );
    let out = k.run(&["get", "nosuchkind"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr
            .contains("the server doesn't have a resource type \"nosuchkind\""),
        "{out:?}"
    );
    let out = k.run(&["delete", "configmap", "missing"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("NotFound"), "{out:?}");
}
