//! Server-side apply: creation, conflicts, forced ownership transfer, managedFields, removal.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::support::{TestServer, expect_status};

fn applied(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
}

/// The managers in `managedFields` with their operation and whether they own `data.<key>`.
fn owners(cm: &ConfigMap, key: &str) -> Vec<(String, String)> {
    let entries = cm.metadata.managed_fields.clone().unwrap_or_default();
    entries
        .into_iter()
        .filter(|e| {
            e.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer(&format!("/f:data/f:{key}")).is_some())
        })
        .map(|e| {
            (
                e.manager.unwrap_or_default(),
                e.operation.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn apply_creates_and_records_managed_fields() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let out = api
        .patch(
            "ssa",
            &PatchParams::apply("alpha"),
            &Patch::Apply(applied("ssa", json!({"a": "1"}))),
        )
        .await
        .unwrap();
    assert_eq!(out.data.as_ref().unwrap()["a"], "1");
    assert!(out.metadata.uid.is_some(), "apply created the object");
    let mf = out
        .metadata
        .managed_fields
        .clone()
        .expect("managedFields present");
    let entry = mf
        .iter()
        .find(|e| e.manager.as_deref() == Some("alpha"))
        .expect("entry for alpha");
    assert_eq!(entry.operation.as_deref(), Some("Apply"));
    assert_eq!(entry.api_version.as_deref(), Some("v1"));
    assert_eq!(entry.fields_type.as_deref(), Some("FieldsV1"));
    assert!(entry.time.is_some());
    assert_eq!(
        owners(&out, "a"),
        [("alpha".to_string(), "Apply".to_string())]
    );
}

#[tokio::test]
async fn conflicting_apply_is_409_naming_the_other_manager() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    api.patch(
        "c",
        &PatchParams::apply("alpha"),
        &Patch::Apply(applied("c", json!({"key": "1"}))),
    )
    .await
    .unwrap();
    let st = expect_status(
        api.patch(
            "c",
            &PatchParams::apply("beta"),
            &Patch::Apply(applied("c", json!({"key": "2"}))),
        )
        .await,
        409,
        "Conflict",
    );
    assert!(st.message.contains("conflict"), "message: {}", st.message);
    assert!(
        st.message.contains("\"alpha\""),
        "message names the other manager: {}",
        st.message
    );
    assert!(
        st.message.contains(".data.key"),
        "message names the field: {}",
        st.message
    );
    let causes = st.details.expect("details").causes;
    assert!(
        causes
            .iter()
            .any(|c| c.reason == "FieldManagerConflict" && c.field == ".data.key"),
        "causes: {causes:?}"
    );
    assert_eq!(
        api.get("c").await.unwrap().data.unwrap()["key"],
        "1",
        "rejected apply changed nothing"
    );

    // Applying the same value is not a conflict: ownership is shared.
    let shared = api
        .patch(
            "c",
            &PatchParams::apply("beta"),
            &Patch::Apply(applied("c", json!({"key": "1"}))),
        )
        .await
        .unwrap();
    let mut o = owners(&shared, "key");
    o.sort();
    assert_eq!(
        o,
        [
            ("alpha".to_string(), "Apply".to_string()),
            ("beta".to_string(), "Apply".to_string())
        ]
    );
}

#[tokio::test]
async fn forced_apply_transfers_ownership() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    api.patch(
        "f",
        &PatchParams::apply("alpha"),
        &Patch::Apply(applied("f", json!({"key": "1", "other": "x"}))),
    )
    .await
    .unwrap();
    let out = api
        .patch(
            "f",
            &PatchParams::apply("beta").force(),
            &Patch::Apply(applied("f", json!({"key": "2"}))),
        )
        .await
        .unwrap();
    assert_eq!(out.data.as_ref().unwrap()["key"], "2");
    assert_eq!(
        owners(&out, "key"),
        [("beta".to_string(), "Apply".to_string())]
    );
    assert_eq!(
        owners(&out, "other"),
        [("alpha".to_string(), "Apply".to_string())]
    );
    // alpha now conflicts if it re-applies its old value.
    let st = expect_status(
        api.patch(
            "f",
            &PatchParams::apply("alpha"),
            &Patch::Apply(applied("f", json!({"key": "1", "other": "x"}))),
        )
        .await,
        409,
        "Conflict",
    );
    assert!(st.message.contains("\"beta\""), "message: {}", st.message);
}

#[tokio::test]
async fn fields_no_longer_applied_are_removed() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    api.patch(
        "r",
        &PatchParams::apply("alpha"),
        &Patch::Apply(applied("r", json!({"a": "1", "b": "2"}))),
    )
    .await
    .unwrap();
    let out = api
        .patch(
            "r",
            &PatchParams::apply("alpha"),
            &Patch::Apply(applied("r", json!({"a": "1"}))),
        )
        .await
        .unwrap();
    let data = out.data.unwrap();
    assert!(!data.contains_key("b"), "b was removed: {data:?}");
    assert_eq!(data["a"], "1");
}

#[tokio::test]
async fn fields_shared_with_another_manager_survive_removal() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    api.patch(
        "sh",
        &PatchParams::apply("alpha"),
        &Patch::Apply(applied("sh", json!({"a": "1", "b": "2"}))),
    )
    .await
    .unwrap();
    api.patch(
        "sh",
        &PatchParams::apply("beta"),
        &Patch::Apply(applied("sh", json!({"b": "2"}))),
    )
    .await
    .unwrap();
    let out = api
        .patch(
            "sh",
            &PatchParams::apply("alpha"),
            &Patch::Apply(applied("sh", json!({"a": "1"}))),
        )
        .await
        .unwrap();
    assert_eq!(out.data.unwrap()["b"], "2", "beta still applies b");
}

#[tokio::test]
async fn apply_conflicts_with_an_update_manager() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let pp = PostParams {
        field_manager: Some("kubectl-edit".into()),
        ..Default::default()
    };
    api.create(
        &pp,
        &serde_json::from_value(applied("u", json!({"key": "1"}))).unwrap(),
    )
    .await
    .unwrap();
    let got = api.get("u").await.unwrap();
    assert_eq!(
        owners(&got, "key"),
        [("kubectl-edit".to_string(), "Update".to_string())]
    );
    let st = expect_status(
        api.patch(
            "u",
            &PatchParams::apply("alpha"),
            &Patch::Apply(applied("u", json!({"key": "2"}))),
        )
        .await,
        409,
        "Conflict",
    );
    assert!(
        st.message.contains("\"kubectl-edit\""),
        "message: {}",
        st.message
    );
    // A merge patch by another manager takes the field over as an Update.
    let out = api
        .patch(
            "u",
            &PatchParams {
                field_manager: Some("patcher".into()),
                ..Default::default()
            },
            &Patch::Merge(json!({"data": {"key": "3"}})),
        )
        .await
        .unwrap();
    assert_eq!(
        owners(&out, "key"),
        [("patcher".to_string(), "Update".to_string())]
    );
}

#[tokio::test]
async fn apply_requires_a_field_manager() {
    let s = TestServer::start().await;
    let c = &s.client;
    let (code, body) = crate::support::raw(
        c,
        "PATCH",
        "/api/v1/namespaces/default/configmaps/nofm",
        "application/apply-patch+yaml",
        serde_json::to_vec(&applied("nofm", json!({}))).unwrap(),
    )
    .await;
    crate::support::assert_status_body(code, &body, 400, "BadRequest");
}

#[tokio::test]
async fn apply_merges_builtin_lists_by_key_across_managers() {
    use k8s_openapi::api::apps::v1::Deployment;
    let s = TestServer::start().await;
    let api: Api<Deployment> = s.default_ns();
    let dep = |containers: Value| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": {"app": "d"}},
                     "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": containers}}}
        })
    };
    api.patch(
        "d",
        &PatchParams::apply("app-team"),
        &Patch::Apply(dep(json!([{"name": "app", "image": "app:1"}]))),
    )
    .await
    .unwrap();
    let out = api
        .patch("d", &PatchParams::apply("mesh"), &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"template": {"spec": {"containers": [{"name": "proxy", "image": "proxy:1"}]}}}
        })))
        .await
        .unwrap();
    let names: Vec<_> = out
        .spec
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names.len(), 2, "containers merged by name: {names:?}");
    let mf = out.metadata.managed_fields.unwrap();
    let mesh = mf
        .iter()
        .find(|e| e.manager.as_deref() == Some("mesh"))
        .unwrap();
    let fields = &mesh.fields_v1.as_ref().unwrap().0;
    assert!(
        fields
            .pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"proxy\"}")
            .is_some(),
        "list items are keyed as k:{{\"name\":...}}: {fields}"
    );
    // The app team re-applies a new image: no conflict with the mesh's container.
    api.patch(
        "d",
        &PatchParams::apply("app-team"),
        &Patch::Apply(dep(json!([{"name": "app", "image": "app:2"}]))),
    )
    .await
    .unwrap();
    // Dry-run applies persist nothing.
    api.patch(
        "d",
        &PatchParams::apply("app-team").dry_run(),
        &Patch::Apply(dep(json!([{"name": "app", "image": "app:3"}]))),
    )
    .await
    .unwrap();
    let live = api.get("d").await.unwrap();
    let images: Vec<_> = live
        .spec
        .template
        .spec
        .unwrap()
        .containers
        .into_iter()
        .filter_map(|c| c.image)
        .collect();
    assert!(
        images.contains(&"app:2".to_string()) && images.contains(&"proxy:1".to_string()),
        "{images:?}"
    );
}

#[tokio::test]
async fn status_apply_records_the_status_subresource() {
    let s = TestServer::start().await;
    crate::controller::install_crd(&s.client, &crate::crd::gadget_crd()).await;
    let api: Api<kube::api::DynamicObject> =
        Api::namespaced_with(s.client.clone(), "default", &crate::crd::gadget_resource());
    api.create(
        &PostParams::default(),
        &crate::crd::gadget("g", json!({"color": "red"})),
    )
    .await
    .unwrap();
    let body = json!({"apiVersion": "conformance.kube-sim.dev/v1", "kind": "Gadget", "metadata": {"name": "g"}, "status": {"phase": "Ready"}});
    let out = api
        .patch_status(
            "g",
            &PatchParams::apply("status-writer").force(),
            &Patch::Apply(body),
        )
        .await
        .unwrap();
    assert_eq!(out.data["status"]["phase"], "Ready");
    let mf = out.metadata.managed_fields.unwrap();
    let entry = mf
        .iter()
        .find(|e| e.manager.as_deref() == Some("status-writer"))
        .expect("entry");
    assert_eq!(
        (entry.operation.as_deref(), entry.subresource.as_deref()),
        (Some("Apply"), Some("status"))
    );
    assert_eq!(out.metadata.generation, Some(1));
}
