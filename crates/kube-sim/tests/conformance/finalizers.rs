//! Finalizers hold deletion; graceful deletion states.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::support::{TestServer, create, expect_status, from_json, wait_for};

#[tokio::test]
async fn finalizer_holds_the_object_until_removed() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    create(
        &api,
        &from_json(json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}})),
    )
    .await;
    let resp = api.delete("held", &DeleteParams::default()).await.unwrap();
    let pending = resp
        .left()
        .expect("delete returns the object while finalizers remain");
    assert!(pending.metadata.deletion_timestamp.is_some());

    let live = api.get("held").await.unwrap();
    assert!(
        live.metadata.deletion_timestamp.is_some(),
        "deletionTimestamp set"
    );
    assert_eq!(live.metadata.deletion_grace_period_seconds, Some(0));
    assert_eq!(
        live.metadata.finalizers.as_deref(),
        Some(&["example.com/hold".to_string()][..])
    );

    // Other changes are still allowed while deletion is pending...
    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"x": "y"}})),
    )
    .await
    .unwrap();
    // ...but no new finalizers.
    let st = expect_status(
        api.patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["example.com/hold", "example.com/new"]}}),
            ),
        )
        .await,
        422,
        "Invalid",
    );
    assert!(
        crate::support::cause_fields(&st)
            .iter()
            .any(|f| f == "metadata.finalizers"),
        "causes: {st:?}"
    );
    // Deleting again is accepted and changes nothing.
    api.delete("held", &DeleteParams::default()).await.unwrap();

    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    wait_for("the finalized object to disappear", async || {
        api.get_opt("held").await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn object_without_finalizers_is_deleted_at_once() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    create(&api, &from_json(json!({"metadata": {"name": "gone"}}))).await;
    let resp = api.delete("gone", &DeleteParams::default()).await.unwrap();
    // As kube-apiserver does for immediate deletions: a Success Status naming the object.
    let status = resp.right().expect("immediate deletion answers a Status");
    assert!(status.is_success(), "{status:?}");
    assert_eq!(
        status.details.as_ref().map(|d| d.name.as_str()),
        Some("gone")
    );
    assert!(api.get_opt("gone").await.unwrap().is_none());
}
