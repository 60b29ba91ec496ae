//! Merge, JSON and strategic merge patches.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::crud::{cm, deployment};
use crate::support::{TestServer, create, expect_status};

#[tokio::test]
async fn merge_patch_sets_and_removes_keys() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    create(
        &api,
        &cm("m", json!({"keep": "1", "drop": "2", "change": "3"})),
    )
    .await;
    let out = api
        .patch(
            "m",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"drop": null, "change": "33", "new": "4"}})),
        )
        .await
        .unwrap();
    let data = out.data.unwrap();
    assert_eq!(data.len(), 3, "{data:?}");
    assert_eq!(
        (
            data["keep"].as_str(),
            data["change"].as_str(),
            data["new"].as_str()
        ),
        ("1", "33", "4")
    );
}

#[tokio::test]
async fn json_patch_applies_operations_in_order() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    create(&api, &cm("j", json!({"a": "1", "b": "2"}))).await;
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/data/a", "value": "1"},
        {"op": "replace", "path": "/data/a", "value": "10"},
        {"op": "remove", "path": "/data/b"},
        {"op": "add", "path": "/data/c", "value": "3"},
        {"op": "copy", "from": "/data/c", "path": "/data/d"}
    ]))
    .unwrap();
    let out = api
        .patch("j", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    let data = out.data.unwrap();
    assert_eq!(data.len(), 3, "{data:?}");
    assert_eq!(
        (data["a"].as_str(), data["c"].as_str(), data["d"].as_str()),
        ("10", "3", "3")
    );
}

#[tokio::test]
async fn failing_json_patch_test_leaves_object_unchanged() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let before = create(&api, &cm("t", json!({"a": "1"}))).await;
    // The first operation would succeed; the failing `test` must roll it back.
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/data/a", "value": "changed"},
        {"op": "test", "path": "/data/a", "value": "something-else"}
    ]))
    .unwrap();
    expect_status(
        api.patch("t", &PatchParams::default(), &Patch::<()>::Json(ops))
            .await,
        422,
        "Invalid",
    );
    let after = api.get("t").await.unwrap();
    assert_eq!(after.data.unwrap()["a"], "1");
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "no write happened"
    );
}

#[tokio::test]
async fn strategic_merge_patch_merges_containers_by_name() {
    let s = TestServer::start().await;
    let api: Api<Deployment> = s.default_ns();
    create(
        &api,
        &deployment(
            "web",
            json!([
                {"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "sidecar", "image": "sidecar:1"},
                {"name": "old", "image": "old:1"}
            ]),
        ),
    )
    .await;
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "app", "image": "app:2", "env": [{"name": "B", "value": "2"}]},
        {"name": "old", "$patch": "delete"},
        {"name": "new", "image": "new:1"}
    ]}}}});
    let out = api
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let containers = out.spec.template.spec.unwrap().containers;
    let names: Vec<_> = containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for n in ["app", "sidecar", "new"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    let app = containers.iter().find(|c| c.name == "app").unwrap();
    assert_eq!(app.image.as_deref(), Some("app:2"));
    let env: Vec<_> = app
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        env.contains(&"A") && env.contains(&"B"),
        "env merged by name: {env:?}"
    );
    let sidecar = containers.iter().find(|c| c.name == "sidecar").unwrap();
    assert_eq!(
        sidecar.image.as_deref(),
        Some("sidecar:1"),
        "untouched container kept"
    );
}

#[tokio::test]
async fn merge_patch_replaces_lists_where_strategic_merges() {
    let s = TestServer::start().await;
    let api: Api<Deployment> = s.default_ns();
    create(
        &api,
        &deployment(
            "lists",
            json!([{"name": "a", "image": "a"}, {"name": "b", "image": "b"}]),
        ),
    )
    .await;
    let out = api
        .patch(
            "lists",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "c"}]}}}})),
        )
        .await
        .unwrap();
    let containers = out.spec.template.spec.unwrap().containers;
    assert_eq!(
        containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["c"]
    );
}

#[tokio::test]
async fn patch_of_missing_object_is_not_found() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    expect_status(
        api.patch(
            "ghost",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "b"}})),
        )
        .await,
        404,
        "NotFound",
    );
}

#[tokio::test]
async fn json_patch_test_of_null_matches_a_missing_path() {
    // kube-apiserver's JSON patch (evanphx/json-patch) treats a missing path as null in `test`;
    // kube-runtime's finalizer helper relies on it to add the first finalizer.
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    create(&api, &cm("fin", json!({}))).await;
    let ops: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["example.com/f"]}
    ]))
    .unwrap();
    let out = api
        .patch("fin", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(
        out.metadata.finalizers,
        Some(vec!["example.com/f".to_string()])
    );
    // ...while a non-null value on a missing path still fails.
    let ops: json_patch::Patch = serde_json::from_value(
        json!([{"op": "test", "path": "/metadata/annotations", "value": {"a": "b"}}]),
    )
    .unwrap();
    expect_status(
        api.patch("fin", &PatchParams::default(), &Patch::<()>::Json(ops))
            .await,
        422,
        "Invalid",
    );
}
