//! Namespace deletion: Terminating, content removal, then the namespace itself.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::crud::{cm, deployment};
use crate::support::{TestServer, create, expect_status, from_json, wait_for};

#[tokio::test]
async fn deleting_a_namespace_terminates_then_removes_everything() {
    let s = TestServer::start().await;
    let nss: Api<Namespace> = Api::all(s.client.clone());
    create(&nss, &from_json(json!({"metadata": {"name": "doomed"}}))).await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "doomed");
    let secrets: Api<Secret> = Api::namespaced(s.client.clone(), "doomed");
    let deploys: Api<Deployment> = Api::namespaced(s.client.clone(), "doomed");
    create(&cms, &cm("plain", json!({"a": "b"}))).await;
    // A finalizer keeps the namespace observably Terminating until the test releases it.
    create(
        &cms,
        &from_json(json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})),
    )
    .await;
    create(
        &secrets,
        &from_json(json!({"metadata": {"name": "s"}, "stringData": {"k": "v"}})),
    )
    .await;
    create(
        &deploys,
        &deployment("d", json!([{"name": "c", "image": "nginx"}])),
    )
    .await;

    nss.delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    let ns = nss.get("doomed").await.unwrap();
    assert!(ns.metadata.deletion_timestamp.is_some());
    assert_eq!(
        ns.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );

    // New content is refused while terminating.
    let st = expect_status(
        cms.create(&PostParams::default(), &cm("late", json!({})))
            .await,
        403,
        "Forbidden",
    );
    assert!(
        st.message.contains("being terminated"),
        "message: {}",
        st.message
    );

    wait_for("the namespace's content to be deleted", async || {
        let plain = cms.get_opt("plain").await.unwrap();
        let secret = secrets.get_opt("s").await.unwrap();
        let deploy = deploys.get_opt("d").await.unwrap();
        let held = cms.get("held").await.unwrap();
        (plain.is_none()
            && secret.is_none()
            && deploy.is_none()
            && held.metadata.deletion_timestamp.is_some())
        .then_some(())
    })
    .await;
    assert!(
        nss.get_opt("doomed").await.unwrap().is_some(),
        "namespace waits for the held object"
    );

    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    wait_for("the namespace to be deleted", async || {
        nss.get_opt("doomed").await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn empty_namespace_is_deleted() {
    let s = TestServer::start().await;
    let nss: Api<Namespace> = Api::all(s.client.clone());
    create(
        &nss,
        &from_json(json!({"metadata": {"name": "short-lived"}})),
    )
    .await;
    nss.delete("short-lived", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the namespace to be deleted", async || {
        nss.get_opt("short-lived")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
}
