//! Built-in type semantics: create-on-update, uid preconditions, immutability, defaulting.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::crud::{cm, deployment};
use crate::support::{TestServer, cause_fields, create, expect_status, from_json};

#[tokio::test]
async fn update_of_a_missing_object_creates_only_where_allowed() {
    let s = TestServer::start().await;
    let cms: Api<ConfigMap> = s.default_ns();
    expect_status(
        cms.replace("nope", &PostParams::default(), &cm("nope", json!({})))
            .await,
        404,
        "NotFound",
    );
    // Leases allow create-on-update (as kube-apiserver's lease strategy does).
    let leases: Api<Lease> = s.default_ns();
    let lease: Lease =
        from_json(json!({"metadata": {"name": "l"}, "spec": {"holderIdentity": "me"}}));
    let out = leases
        .replace("l", &PostParams::default(), &lease)
        .await
        .unwrap();
    assert!(out.metadata.uid.is_some());
}

#[tokio::test]
async fn update_with_another_uid_conflicts() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let mut obj = create(&api, &cm("u", json!({"a": "1"}))).await;
    obj.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    obj.data = Some([("a".to_string(), "2".to_string())].into());
    expect_status(
        api.replace("u", &PostParams::default(), &obj).await,
        409,
        "Conflict",
    );
    assert_eq!(api.get("u").await.unwrap().data.unwrap()["a"], "1");
}

#[tokio::test]
async fn immutable_configmaps_and_secret_types() {
    let s = TestServer::start().await;
    let cms: Api<ConfigMap> = s.default_ns();
    create(
        &cms,
        &from_json(json!({"metadata": {"name": "frozen"}, "data": {"a": "1"}, "immutable": true})),
    )
    .await;
    let st = expect_status(
        cms.patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "2"}})),
        )
        .await,
        422,
        "Invalid",
    );
    assert!(cause_fields(&st).iter().any(|f| f == "data"), "{st:?}");
    // Metadata stays mutable.
    cms.patch(
        "frozen",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .unwrap();

    let secrets: Api<Secret> = s.default_ns();
    create(
        &secrets,
        &from_json(json!({"metadata": {"name": "typed"}, "stringData": {"a": "b"}})),
    )
    .await;
    let st = expect_status(
        secrets
            .patch(
                "typed",
                &PatchParams::default(),
                &Patch::Merge(json!({"type": "example.com/other"})),
            )
            .await,
        422,
        "Invalid",
    );
    assert!(cause_fields(&st).iter().any(|f| f == "type"), "{st:?}");
}

#[tokio::test]
async fn deployments_are_defaulted() {
    let s = TestServer::start().await;
    let api: Api<Deployment> = s.default_ns();
    let mut d = deployment(
        "defaults",
        json!([{"name": "c", "image": "nginx:1.27"}, {"name": "l", "image": "busybox"}]),
    );
    d.spec.replicas = None;
    let out = create(&api, &d).await;
    let spec = out.spec;
    assert_eq!(spec.replicas, Some(1));
    assert_eq!(spec.revision_history_limit, Some(10));
    assert_eq!(spec.progress_deadline_seconds, Some(600));
    let strategy = spec.strategy.expect("strategy defaulted");
    assert_eq!(strategy.type_.as_deref(), Some("RollingUpdate"));
    let pod = spec.template.spec.expect("pod spec");
    assert_eq!(pod.restart_policy.as_deref(), Some("Always"));
    assert_eq!(pod.dns_policy.as_deref(), Some("ClusterFirst"));
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    let policies: Vec<_> = pod
        .containers
        .iter()
        .map(|c| c.image_pull_policy.clone())
        .collect();
    assert_eq!(
        policies,
        [Some("IfNotPresent".to_string()), Some("Always".to_string())],
        "untagged images pull Always"
    );
}
