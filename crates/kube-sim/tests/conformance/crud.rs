//! Create, read, update, delete through `kube::Api`, and resourceVersion semantics.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, GetParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::params::Preconditions;
use serde_json::json;

use crate::support::{TestServer, create, expect_status, from_json};

pub fn cm(name: &str, data: serde_json::Value) -> ConfigMap {
    from_json(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}),
    )
}

pub fn deployment(name: &str, containers: serde_json::Value) -> Deployment {
    from_json(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": containers}}
        }
    }))
}

fn rv<K: kube::Resource>(o: &K) -> String {
    o.meta()
        .resource_version
        .clone()
        .expect("resourceVersion set")
}

#[tokio::test]
async fn configmap_create_get_list_replace_delete() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let created = create(&api, &cm("one", json!({"a": "1"}))).await;
    let meta = &created.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("default"));
    assert!(
        meta.uid.as_deref().is_some_and(|u| !u.is_empty()),
        "uid assigned"
    );
    assert!(
        meta.creation_timestamp.is_some(),
        "creationTimestamp assigned"
    );

    let got = api.get("one").await.unwrap();
    assert_eq!(got.data.unwrap()["a"], "1");
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert!(
        listed
            .items
            .iter()
            .any(|c| c.metadata.name.as_deref() == Some("one"))
    );
    assert!(
        listed.metadata.resource_version.is_some(),
        "list carries a resourceVersion"
    );

    let mut changed = created.clone();
    changed.data = Some([("a".to_string(), "2".to_string())].into());
    let replaced = api
        .replace("one", &PostParams::default(), &changed)
        .await
        .unwrap();
    assert_eq!(replaced.data.as_ref().unwrap()["a"], "2");
    assert_ne!(
        rv(&replaced),
        rv(&created),
        "an update changes the resourceVersion"
    );
    assert_eq!(replaced.metadata.uid, created.metadata.uid);

    api.delete("one", &DeleteParams::default()).await.unwrap();
    expect_status(api.get("one").await, 404, "NotFound");
    assert!(api.get_opt("one").await.unwrap().is_none());
}

#[tokio::test]
async fn create_twice_is_already_exists() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    create(&api, &cm("dup", json!({}))).await;
    let st = expect_status(
        api.create(&PostParams::default(), &cm("dup", json!({})))
            .await,
        409,
        "AlreadyExists",
    );
    let details = st.details.expect("details");
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("dup", "configmaps")
    );
}

#[tokio::test]
async fn not_found_status_names_the_object() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let st = expect_status(api.get("missing").await, 404, "NotFound");
    assert!(
        st.message.contains("\"missing\" not found"),
        "message: {}",
        st.message
    );
    let details = st.details.expect("details");
    assert_eq!(
        (details.name.as_str(), details.kind.as_str()),
        ("missing", "configmaps")
    );
    expect_status(
        api.delete("missing", &DeleteParams::default()).await,
        404,
        "NotFound",
    );
}

#[tokio::test]
async fn generate_name_assigns_a_unique_name() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let obj: ConfigMap = from_json(json!({"metadata": {"generateName": "gen-"}}));
    let a = create(&api, &obj).await;
    let b = create(&api, &obj).await;
    let (na, nb) = (a.metadata.name.unwrap(), b.metadata.name.unwrap());
    assert!(
        na.starts_with("gen-") && na.len() > 4,
        "generated name {na}"
    );
    assert_ne!(na, nb);
}

#[tokio::test]
async fn cluster_scoped_namespace_crud() {
    let s = TestServer::start().await;
    let api: Api<Namespace> = Api::all(s.client.clone());
    let names: Vec<_> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for initial in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            names.iter().any(|n| n == initial),
            "initial namespace {initial} in {names:?}"
        );
    }
    let ns = create(&api, &from_json(json!({"metadata": {"name": "team-a"}}))).await;
    assert!(ns.metadata.namespace.is_none());
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    assert!(
        ns.spec
            .and_then(|s| s.finalizers)
            .unwrap_or_default()
            .contains(&"kubernetes".to_string())
    );
}

#[tokio::test]
async fn stale_resource_version_update_conflicts() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let v1 = create(&api, &cm("occ", json!({"k": "1"}))).await;
    let mut first = v1.clone();
    first.data = Some([("k".to_string(), "2".to_string())].into());
    api.replace("occ", &PostParams::default(), &first)
        .await
        .unwrap();
    let mut stale = v1.clone();
    stale.data = Some([("k".to_string(), "3".to_string())].into());
    let st = expect_status(
        api.replace("occ", &PostParams::default(), &stale).await,
        409,
        "Conflict",
    );
    assert!(
        st.message.contains("the object has been modified"),
        "message: {}",
        st.message
    );
    assert_eq!(
        api.get("occ").await.unwrap().data.unwrap()["k"],
        "2",
        "the stale write was not applied"
    );

    // Without a resourceVersion the update is unconditional.
    let mut blind = v1;
    blind.metadata.resource_version = None;
    blind.data = Some([("k".to_string(), "4".to_string())].into());
    api.replace("occ", &PostParams::default(), &blind)
        .await
        .unwrap();
    assert_eq!(api.get("occ").await.unwrap().data.unwrap()["k"], "4");
}

#[tokio::test]
async fn resource_versions_increase_and_noop_writes_keep_them() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let a = create(&api, &cm("rv-a", json!({"k": "1"}))).await;
    let b = create(&api, &cm("rv-b", json!({"k": "1"}))).await;
    let (ra, rb): (u64, u64) = (rv(&a).parse().unwrap(), rv(&b).parse().unwrap());
    assert!(
        rb > ra,
        "later writes get larger resourceVersions ({ra} then {rb})"
    );

    // A write that changes nothing keeps the resourceVersion (as etcd-backed storage does).
    let same = api
        .replace("rv-a", &PostParams::default(), &a)
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&a), "no-op update keeps the resourceVersion");
    let same = api
        .patch(
            "rv-a",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "1"}})),
        )
        .await
        .unwrap();
    assert_eq!(rv(&same), rv(&a), "no-op patch keeps the resourceVersion");

    // The list resourceVersion is at least that of every item.
    let list = api.list(&ListParams::default()).await.unwrap();
    let list_rv: u64 = list.metadata.resource_version.unwrap().parse().unwrap();
    assert!(list_rv >= rb);
    // resourceVersion=0 ("any") and NotOlderThan reads are served.
    let any = api.get_with("rv-b", &GetParams::any()).await.unwrap();
    assert_eq!(any.metadata.uid, b.metadata.uid);
    let fresh = api
        .list(
            &ListParams::default()
                .at(&rv(&b))
                .matching(kube::api::VersionMatch::NotOlderThan),
        )
        .await
        .unwrap();
    assert_eq!(
        fresh
            .items
            .iter()
            .filter(|c| c.metadata.name.as_deref() != Some(crate::support::ROOT_CA))
            .count(),
        2
    );
}

#[tokio::test]
async fn delete_preconditions_are_checked() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let obj = create(&api, &cm("pre", json!({}))).await;
    let wrong = DeleteParams::default().preconditions(Preconditions {
        uid: Some("not-the-uid".into()),
        resource_version: None,
    });
    expect_status(api.delete("pre", &wrong).await, 409, "Conflict");
    let stale = DeleteParams::default().preconditions(Preconditions {
        uid: None,
        resource_version: Some("1".into()),
    });
    expect_status(api.delete("pre", &stale).await, 409, "Conflict");
    let right = DeleteParams::default().preconditions(Preconditions {
        uid: obj.metadata.uid.clone(),
        resource_version: None,
    });
    api.delete("pre", &right).await.unwrap();
    assert!(api.get_opt("pre").await.unwrap().is_none());
}

#[tokio::test]
async fn dry_run_create_persists_nothing() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let out = api
        .create(&pp, &cm("dry", json!({"a": "b"})))
        .await
        .unwrap();
    assert_eq!(out.metadata.name.as_deref(), Some("dry"));
    assert!(
        api.get_opt("dry").await.unwrap().is_none(),
        "dry-run object is not stored"
    );
}

#[tokio::test]
async fn generation_tracks_spec_changes_only() {
    let s = TestServer::start().await;
    let api: Api<Deployment> = s.default_ns();
    let d = create(
        &api,
        &deployment("gen", json!([{"name": "app", "image": "nginx:1"}])),
    )
    .await;
    assert_eq!(d.metadata.generation, Some(1));
    let labelled = api
        .patch(
            "gen",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        labelled.metadata.generation,
        Some(1),
        "metadata changes keep the generation"
    );
    let scaled = api
        .patch(
            "gen",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 3}})),
        )
        .await
        .unwrap();
    assert_eq!(
        scaled.metadata.generation,
        Some(2),
        "spec changes bump the generation"
    );
}

#[tokio::test]
async fn namespaced_object_in_missing_namespace_is_not_found() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = Api::namespaced(s.client.clone(), "nope");
    let st = expect_status(
        api.create(&PostParams::default(), &cm("x", json!({})))
            .await,
        404,
        "NotFound",
    );
    assert!(
        st.message.contains("nope"),
        "message names the namespace: {}",
        st.message
    );
}
