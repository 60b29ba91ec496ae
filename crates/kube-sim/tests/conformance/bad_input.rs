//! Bad input: every rejection is a `Status` with the right code and reason, and nothing changes.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use serde_json::{Value, json};

use crate::crud::cm;
use crate::support::{TestServer, assert_status_body, cause_fields, create, expect_status, raw};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

async fn unchanged(api: &Api<ConfigMap>, before: &ConfigMap) {
    let after = api
        .get(before.metadata.name.as_deref().unwrap())
        .await
        .unwrap();
    assert_eq!(
        after.metadata.resource_version, before.metadata.resource_version,
        "the stored object is unchanged"
    );
    assert_eq!(after.data, before.data);
}

#[tokio::test]
async fn malformed_json_body_is_400() {
    let s = TestServer::start().await;
    let (code, body) = raw(
        &s.client,
        "POST",
        CMS,
        "application/json",
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"#,
    )
    .await;
    assert_status_body(code, &body, 400, "BadRequest");
    let (code, body) = raw(&s.client, "POST", CMS, "application/json", "[1, 2, 3]").await;
    assert_status_body(code, &body, 400, "BadRequest");
}

#[tokio::test]
async fn malformed_yaml_body_is_400() {
    let s = TestServer::start().await;
    let (code, body) = raw(
        &s.client,
        "POST",
        CMS,
        "application/yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: [unclosed\n  name: x\n",
    )
    .await;
    assert_status_body(code, &body, 400, "BadRequest");
}

#[tokio::test]
async fn yaml_body_is_accepted() {
    let s = TestServer::start().await;
    let (code, body) = raw(
        &s.client,
        "POST",
        CMS,
        "application/yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n",
    )
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["data"]["k"], "v");
}

#[tokio::test]
async fn wrong_kind_for_the_url_is_400() {
    let s = TestServer::start().await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringData": {"a": "b"}});
    let (code, body) = raw(
        &s.client,
        "POST",
        CMS,
        "application/json",
        serde_json::to_vec(&secret).unwrap(),
    )
    .await;
    assert_status_body(code, &body, 400, "BadRequest");
    let api: Api<ConfigMap> = s.default_ns();
    assert!(api.get_opt("x").await.unwrap().is_none());
}

#[tokio::test]
async fn namespace_mismatch_between_body_and_url_is_400() {
    let s = TestServer::start().await;
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "kube-system"}});
    let (code, body) = raw(
        &s.client,
        "POST",
        CMS,
        "application/json",
        serde_json::to_vec(&obj).unwrap(),
    )
    .await;
    assert_status_body(code, &body, 400, "BadRequest");
}

#[tokio::test]
async fn name_mismatch_on_update_is_400() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let before = create(&api, &cm("real", json!({"a": "1"}))).await;
    let mut other = before.clone();
    other.metadata.name = Some("other".into());
    let (code, body) = raw(
        &s.client,
        "PUT",
        &format!("{CMS}/real"),
        "application/json",
        serde_json::to_vec(&other).unwrap(),
    )
    .await;
    assert_status_body(code, &body, 400, "BadRequest");
    unchanged(&api, &before).await;
}

#[tokio::test]
async fn invalid_names_are_422() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    for bad in ["Upper_Case", "-leading-dash", "has space", &"x".repeat(254)] {
        let st = expect_status(
            api.create(&PostParams::default(), &cm(bad, json!({})))
                .await,
            422,
            "Invalid",
        );
        assert!(
            cause_fields(&st).iter().any(|f| f == "metadata.name"),
            "name {bad:?}: {st:?}"
        );
    }
    // Namespaces are DNS-1123 labels: no dots.
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(s.client.clone());
    let st = expect_status(
        nss.create(
            &PostParams::default(),
            &crate::support::from_json(json!({"metadata": {"name": "a.b"}})),
        )
        .await,
        422,
        "Invalid",
    );
    assert!(
        cause_fields(&st).iter().any(|f| f == "metadata.name"),
        "{st:?}"
    );
}

#[tokio::test]
async fn missing_name_is_422() {
    let s = TestServer::start().await;
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}});
    let (code, body) = raw(
        &s.client,
        "POST",
        CMS,
        "application/json",
        serde_json::to_vec(&obj).unwrap(),
    )
    .await;
    assert_status_body(code, &body, 422, "Invalid");
    let fields: Vec<&str> = body["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert!(fields.contains(&"metadata.name"), "{body}");
}

#[tokio::test]
async fn oversized_object_is_rejected() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let big = "x".repeat(2 * 1024 * 1024);
    let st = api_error_of(
        api.create(&PostParams::default(), &cm("big", json!({"blob": big})))
            .await,
    );
    assert_eq!(
        (st.code, st.reason.as_str()),
        (413, "RequestEntityTooLarge"),
        "{}",
        st.message
    );
    assert!(api.get_opt("big").await.unwrap().is_none());

    // Growing an existing object past the limit leaves it as it was.
    let before = create(&api, &cm("grow", json!({"a": "1"}))).await;
    let st = api_error_of(
        api.patch(
            "grow",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"data": {"blob": "y".repeat(2 * 1024 * 1024)}})),
        )
        .await,
    );
    assert_eq!(st.code, 413, "{}", st.message);
    unchanged(&api, &before).await;
}

fn api_error_of<T: std::fmt::Debug>(r: kube::Result<T>) -> Box<kube::core::Status> {
    crate::support::api_error(r)
}

#[tokio::test]
async fn unknown_resource_is_404() {
    let s = TestServer::start().await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("nope.example.com", "v1", "Nope"),
        "nopes",
    );
    let api: Api<DynamicObject> = Api::namespaced_with(s.client.clone(), "default", &ar);
    expect_status(api.list(&ListParams::default()).await, 404, "NotFound");
    let (code, body) = raw(
        &s.client,
        "GET",
        "/api/v1/namespaces/default/widgets",
        "application/json",
        "",
    )
    .await;
    assert_status_body(code, &body, 404, "NotFound");
}

#[tokio::test]
async fn invalid_label_selector_is_400() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    for sel in ["a in (", "=b", "a!!=b", "a in (x", "bad key!=1"] {
        expect_status(
            api.list(&ListParams::default().labels(sel)).await,
            400,
            "BadRequest",
        );
    }
}

#[tokio::test]
async fn bad_json_patches_are_rejected_and_change_nothing() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let before = create(&api, &cm("p", json!({"a": "1"}))).await;
    let path = format!("{CMS}/p");
    let cases: &[(Value, u16, &str)] = &[
        // Not a patch document at all: decoding fails.
        (json!({"op": "add"}), 400, "BadRequest"),
        // A valid document whose operation cannot apply.
        (
            json!([{"op": "remove", "path": "/data/missing"}]),
            422,
            "Invalid",
        ),
        (
            json!([{"op": "replace", "path": "/nope/deeper", "value": 1}]),
            422,
            "Invalid",
        ),
    ];
    for (patch, code, reason) in cases {
        let (got, body) = raw(
            &s.client,
            "PATCH",
            &path,
            "application/json-patch+json",
            serde_json::to_vec(patch).unwrap(),
        )
        .await;
        assert_status_body(got, &body, *code, reason);
        unchanged(&api, &before).await;
    }
    let (got, body) = raw(
        &s.client,
        "PATCH",
        &path,
        "application/merge-patch+json",
        "{not json",
    )
    .await;
    assert_status_body(got, &body, 400, "BadRequest");
    let (got, body) = raw(&s.client, "PATCH", &path, "text/plain", "{}").await;
    assert_status_body(got, &body, 415, "UnsupportedMediaType");
    unchanged(&api, &before).await;
}

#[tokio::test]
async fn invalid_builtin_objects_are_422() {
    use k8s_openapi::api::apps::v1::Deployment;
    let s = TestServer::start().await;
    let api: Api<Deployment> = s.default_ns();
    // The selector must match the template labels.
    let bad: Deployment = crate::support::from_json(json!({
        "metadata": {"name": "bad"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {"metadata": {"labels": {"app": "y"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    }));
    let st = expect_status(
        api.create(&PostParams::default(), &bad).await,
        422,
        "Invalid",
    );
    assert!(
        cause_fields(&st)
            .iter()
            .any(|f| f == "spec.template.metadata.labels"),
        "{st:?}"
    );
}

#[tokio::test]
async fn invalid_metadata_is_422_with_the_field() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let cases = [
        (
            json!({"name": "l1", "labels": {"ok": "not valid!"}}),
            "metadata.labels",
        ),
        (
            json!({"name": "l2", "labels": {"bad key!": "v"}}),
            "metadata.labels",
        ),
        (
            json!({"name": "a1", "annotations": {"big": "x".repeat(300 * 1024)}}),
            "metadata.annotations",
        ),
        (
            json!({"name": "o1", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": ""}]}),
            "metadata.ownerReferences.uid",
        ),
        (
            json!({"name": "f1", "finalizers": ["not a finalizer"]}),
            "metadata.finalizers",
        ),
    ];
    for (meta, field) in cases {
        let obj: ConfigMap = crate::support::from_json(json!({"metadata": meta}));
        let st = expect_status(
            api.create(&PostParams::default(), &obj).await,
            422,
            "Invalid",
        );
        assert!(
            cause_fields(&st).iter().any(|f| f.starts_with(field)),
            "expected a cause for {field}: {st:?}"
        );
    }
    let names: Vec<_> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(names, [crate::support::ROOT_CA], "nothing was stored");
}

#[tokio::test]
async fn future_resource_version_reads_time_out_as_too_large() {
    let s = TestServer::start().await;
    // kube-rs retries 504s (with Retry-After) by default; look at the answer itself.
    let kc = kube::config::Kubeconfig::read_from(s.kubeconfig()).unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.default_retry = false;
    let api: Api<ConfigMap> = Api::namespaced(kube::Client::try_from(config).unwrap(), "default");
    // kube-apiserver waits briefly for the resourceVersion, then answers 504.
    let lp = ListParams::default()
        .at("99999999")
        .matching(kube::api::VersionMatch::NotOlderThan);
    let read = api.list(&lp);
    let st = api_error_of(
        crate::support::within("the too-large resourceVersion to be refused", read).await,
    );
    assert_eq!((st.code, st.reason.as_str()), (504, "Timeout"), "{st:?}");
    let causes = st.details.map(|d| d.causes).unwrap_or_default();
    assert!(
        causes.iter().any(|c| c.reason == "ResourceVersionTooLarge"),
        "{causes:?}"
    );
}
