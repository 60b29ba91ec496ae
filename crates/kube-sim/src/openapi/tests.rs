use std::path::PathBuf;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod};
use serde_json::{Value, json};

use super::*;

fn cluster_schema() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/reference/crds/cluster-api-v1.14/cluster.x-k8s.io_clusters.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let crd: Value = serde_saphyr::from_str(&text).unwrap();
    crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1beta2")
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
        .unwrap()
}

fn builder() -> OpenApiBuilder {
    let mut b = OpenApiBuilder::new();
    b.add_builtin::<ConfigMap>()
        .add_builtin::<Pod>()
        .add_builtin::<Namespace>()
        .add_builtin::<Deployment>();
    b.add_crd(CrdVersion {
        group: "cluster.x-k8s.io",
        version: "v1beta2",
        kind: "Cluster",
        plural: "clusters",
        namespaced: true,
        schema: &cluster_schema(),
        status: true,
        scale: false,
    });
    b
}

/// What kubectl's `supportsQueryParamV3` checks: a PATCH operation for the GVK
/// with a `fieldValidation` query parameter.
fn supports_field_validation(doc: &Value, group: &str, version: &str, kind: &str) -> bool {
    let want = json!({"group": group, "kind": kind, "version": version});
    doc["paths"].as_object().unwrap().values().any(|item| {
        let patch = &item["patch"];
        patch["x-kubernetes-group-version-kind"] == want
            && patch["parameters"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
    })
}

/// Every `$ref` of the document resolves inside it.
fn assert_refs_resolve(doc: &Value, prefix: &str, defs: &Value) {
    let mut refs = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    if k == "$ref" {
                        out.push(c.as_str().unwrap().to_string());
                    } else {
                        walk(c, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|c| walk(c, out)),
            _ => {}
        }
    }
    walk(doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("foreign ref {r}"));
        assert!(defs.get(name).is_some(), "unresolved {r}");
    }
}

#[test]
fn v3_index_links_every_group_version_with_a_hash() {
    let b = builder();
    let index = b.v3_index();
    let paths = index["paths"].as_object().unwrap();
    let keys: Vec<&str> = paths.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["api/v1", "apis/apps/v1", "apis/cluster.x-k8s.io/v1beta2"]
    );
    let url = paths["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
    let hash = b.v3_hash("apis/apps/v1").unwrap();
    assert_eq!(url, format!("/openapi/v3/apis/apps/v1?hash={hash}"));
    assert_eq!(hash.len(), 128);
    // The URL as given resolves to the document.
    assert!(b.v3_group_version(url).is_some());
    assert!(b.v3_group_version("apis/nope/v1").is_none());
}

#[test]
fn builtin_document_has_gvk_schemas_and_patchable_paths() {
    let b = builder();
    let doc = b.v3_group_version("api/v1").unwrap();
    // Parses as JSON after serialization (what the server sends).
    let text = serde_json::to_string(&doc).unwrap();
    let reparsed: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(reparsed["openapi"], "3.0.0");

    let schemas = &doc["components"]["schemas"];
    let cm = &schemas["io.k8s.api.core.v1.ConfigMap"];
    assert_eq!(
        cm["x-kubernetes-group-version-kind"],
        json!([{"group": "", "kind": "ConfigMap", "version": "v1"}])
    );
    assert!(
        cm.get("required").is_none(),
        "metadata must not be required: {}",
        cm["required"]
    );
    assert_eq!(
        schemas["io.k8s.api.core.v1.ConfigMapList"]["x-kubernetes-group-version-kind"],
        json!([{"group": "", "kind": "ConfigMapList", "version": "v1"}])
    );
    assert!(schemas.get(OBJECT_META).is_some());
    assert_refs_resolve(&doc, V3_PREFIX, schemas);

    assert!(supports_field_validation(&doc, "", "v1", "ConfigMap"));
    assert!(supports_field_validation(&doc, "", "v1", "Pod"));
    assert!(supports_field_validation(&doc, "", "v1", "Namespace"));
    assert!(!supports_field_validation(&doc, "apps", "v1", "Deployment"));

    let item = &doc["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"];
    let content = item["patch"]["requestBody"]["content"].as_object().unwrap();
    assert!(content.contains_key("application/strategic-merge-patch+json"));
    assert!(content.contains_key("application/apply-patch+yaml"));
    assert_eq!(item["patch"]["x-kubernetes-action"], "patch");
    assert!(doc["paths"].get("/api/v1/configmaps").is_some());
    // Cluster-scoped.
    assert!(doc["paths"].get("/api/v1/namespaces/{name}").is_some());
    assert!(
        doc["paths"]["/api/v1/namespaces/{name}/status"]
            .get("patch")
            .is_some()
    );
    assert!(
        doc["paths"]
            .get("/api/v1/namespaces/{namespace}/configmaps/{name}/status")
            .is_none()
    );
}

#[test]
fn builtin_lists_carry_merge_keys() {
    let b = builder();
    let doc = b.v3_group_version("apis/apps/v1").unwrap();
    let schemas = &doc["components"]["schemas"];
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    let finalizers = &schemas[OBJECT_META]["properties"]["finalizers"];
    assert_eq!(finalizers["x-kubernetes-patch-strategy"], "merge");
    // The scale subresource is documented with the autoscaling/v1 Scale kind.
    let scale =
        &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"]["patch"];
    assert_eq!(
        scale["x-kubernetes-group-version-kind"],
        json!({"group": "autoscaling", "kind": "Scale", "version": "v1"})
    );
    assert!(schemas.get(SCALE).is_some());
}

#[test]
fn crd_document_has_gvk_schema_and_no_strategic_patch() {
    let b = builder();
    let doc = b.v3_group_version("apis/cluster.x-k8s.io/v1beta2").unwrap();
    let schemas = &doc["components"]["schemas"];
    let cluster = &schemas["io.x-k8s.cluster.v1beta2.Cluster"];
    assert_eq!(
        cluster["x-kubernetes-group-version-kind"],
        json!([{"group": "cluster.x-k8s.io", "kind": "Cluster", "version": "v1beta2"}])
    );
    assert_eq!(
        cluster["properties"]["metadata"]["allOf"][0]["$ref"],
        format!("{V3_PREFIX}{OBJECT_META}")
    );
    assert!(cluster["properties"]["spec"]["properties"]["topology"].is_object());
    assert_refs_resolve(&doc, V3_PREFIX, schemas);
    assert!(supports_field_validation(
        &doc,
        "cluster.x-k8s.io",
        "v1beta2",
        "Cluster"
    ));
    let item =
        &doc["paths"]["/apis/cluster.x-k8s.io/v1beta2/namespaces/{namespace}/clusters/{name}"];
    let content = item["patch"]["requestBody"]["content"].as_object().unwrap();
    assert!(!content.contains_key("application/strategic-merge-patch+json"));
    assert!(content.contains_key("application/merge-patch+json"));
    assert_eq!(
        item["patch"]["operationId"],
        "patchClusterXK8sIoV1beta2NamespacedCluster"
    );
    assert!(
        doc["paths"]
            .get("/apis/cluster.x-k8s.io/v1beta2/namespaces/{namespace}/clusters/{name}/status")
            .is_some()
    );
}

#[test]
fn v2_document_uses_definitions_refs() {
    let b = builder();
    let v2 = b.v2();
    assert_eq!(v2["swagger"], "2.0");
    let defs = &v2["definitions"];
    assert_eq!(
        defs["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
    );
    assert!(defs["io.x-k8s.cluster.v1beta2.Cluster"].is_object());
    assert_refs_resolve(&v2, V2_PREFIX, defs);
    let patch = &v2["paths"]["/api/v1/namespaces/{namespace}/configmaps/{name}"]["patch"];
    assert_eq!(patch["parameters"][0]["in"], "body");
    assert!(
        patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["type"] == "string")
    );
    assert!(serde_json::from_str::<Value>(&v2.to_string()).is_ok());
}

#[test]
fn removing_and_replacing_a_crd_updates_documents() {
    let mut b = builder();
    let before = b.v3_hash("apis/cluster.x-k8s.io/v1beta2").unwrap();
    b.add_crd_version(
        "cluster.x-k8s.io",
        "v1beta2",
        "Cluster",
        "clusters",
        true,
        &json!({"type": "object"}),
    );
    let after = b.v3_hash("apis/cluster.x-k8s.io/v1beta2").unwrap();
    assert_ne!(before, after);
    let doc = b.v3_group_version("apis/cluster.x-k8s.io/v1beta2").unwrap();
    assert!(
        doc["paths"]
            .get("/apis/cluster.x-k8s.io/v1beta2/namespaces/{namespace}/clusters/{name}/status")
            .is_none()
    );
    b.remove_kind("cluster.x-k8s.io", "v1beta2", "Cluster");
    assert!(
        b.v3_group_version("apis/cluster.x-k8s.io/v1beta2")
            .is_none()
    );
    assert!(
        b.v2()["definitions"]
            .get("io.x-k8s.cluster.v1beta2.Cluster")
            .is_none()
    );
    assert!(b.v3_index()["paths"].get("api/v1").is_some());
}

#[test]
fn inline_schema_prunes_unknown_fields_of_builtins() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let schema = inline_schema::<Deployment>();
    let text = serde_json::to_string(&schema).unwrap();
    assert!(!text.contains("$ref"));
    let mut obj = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "d", "labels": {"a": "b"}},
        "bogus": 1,
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"a": "b"}},
            "strategy": {"rollingUpdate": {"maxSurge": "25%"}},
            "template": {
                "metadata": {"labels": {"a": "b"}},
                "spec": {"containers": [{
                    "name": "c", "image": "nginx", "typo": true,
                    "env": [{"name": "X", "value": "1"}],
                    "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                    "ports": [{"containerPort": 80}]
                }]}
            }
        }
    });
    let expected = {
        let mut e = obj.clone();
        e.as_object_mut().unwrap().remove("bogus");
        e["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("typo");
        e
    };
    let pruned = crate::schema::prune(&mut obj, &schema);
    assert_eq!(
        pruned,
        vec!["bogus", "spec.template.spec.containers[0].typo"]
    );
    assert_eq!(obj, expected);

    // Recursive JSONSchemaProps terminates, and open schemas keep their content.
    let crd_schema = inline_schema::<CustomResourceDefinition>();
    let mut crd = json!({"spec": {"group": "g", "versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
        "type": "object", "properties": {"spec": {"type": "object", "properties": {"x": {"type": "string", "default": "d"}}}}
    }}}]}});
    let before = crd.clone();
    assert_eq!(
        crate::schema::prune(&mut crd, &crd_schema),
        Vec::<String>::new()
    );
    assert_eq!(crd, before);
}
