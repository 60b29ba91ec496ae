//! Garbage collection: Background, Foreground, Orphan, blockOwnerDeletion, dangling owners.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::support::{TestServer, create, from_json, wait_for};

const HOLD: &str = "example.com/hold";

fn owner_ref(owner: &ConfigMap, block: Option<bool>) -> serde_json::Value {
    let mut r = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "name": owner.metadata.name.clone().unwrap(),
        "uid": owner.metadata.uid.clone().unwrap(),
    });
    if let Some(b) = block {
        r["blockOwnerDeletion"] = json!(b);
    }
    r
}

async fn dependent(
    api: &Api<ConfigMap>,
    name: &str,
    owner: &ConfigMap,
    block: Option<bool>,
    finalizers: &[&str],
) -> ConfigMap {
    create(
        api,
        &from_json(json!({"metadata": {"name": name, "ownerReferences": [owner_ref(owner, block)], "finalizers": finalizers}})),
    )
    .await
}

async fn release(api: &Api<ConfigMap>, name: &str) {
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
}

async fn gone(api: &Api<ConfigMap>, name: &str) {
    wait_for(&format!("configmap {name} to be deleted"), async || {
        api.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn background_deletion_collects_dependents() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let owner = create(&api, &from_json(json!({"metadata": {"name": "owner"}}))).await;
    dependent(&api, "dep-1", &owner, None, &[]).await;
    dependent(&api, "dep-2", &owner, Some(true), &[]).await;
    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    assert!(
        api.get_opt("owner").await.unwrap().is_none(),
        "background deletion removes the owner at once"
    );
    gone(&api, "dep-1").await;
    gone(&api, "dep-2").await;
}

#[tokio::test]
async fn foreground_deletion_waits_for_dependents() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let owner = create(&api, &from_json(json!({"metadata": {"name": "owner"}}))).await;
    dependent(&api, "dep", &owner, Some(true), &[HOLD]).await;
    api.delete("owner", &DeleteParams::foreground())
        .await
        .unwrap();

    let live = api.get("owner").await.unwrap();
    assert!(live.metadata.deletion_timestamp.is_some());
    assert!(
        live.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&"foregroundDeletion".to_string()),
        "foregroundDeletion finalizer on the owner"
    );
    wait_for("the dependent to be marked for deletion", async || {
        api.get("dep")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .map(|_| ())
    })
    .await;
    // The owner stays while its blocking dependent exists.
    assert!(api.get_opt("owner").await.unwrap().is_some());

    release(&api, "dep").await;
    gone(&api, "dep").await;
    gone(&api, "owner").await;
}

#[tokio::test]
async fn orphan_deletion_removes_owner_references() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let owner = create(&api, &from_json(json!({"metadata": {"name": "owner"}}))).await;
    let other = create(
        &api,
        &from_json(json!({"metadata": {"name": "other-owner"}})),
    )
    .await;
    create(
        &api,
        &from_json(json!({"metadata": {"name": "dep", "ownerReferences": [owner_ref(&owner, Some(true)), owner_ref(&other, None)]}})),
    )
    .await;
    api.delete("owner", &DeleteParams::orphan()).await.unwrap();
    gone(&api, "owner").await;
    let dep = api.get("dep").await.unwrap();
    assert!(
        dep.metadata.deletion_timestamp.is_none(),
        "orphaned dependent is not deleted"
    );
    let refs = dep.metadata.owner_references.unwrap_or_default();
    assert_eq!(
        refs.len(),
        1,
        "only the deleted owner's reference is removed: {refs:?}"
    );
    assert_eq!(refs[0].name, "other-owner");
}

#[tokio::test]
async fn block_owner_deletion_decides_what_foreground_waits_for() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let owner = create(&api, &from_json(json!({"metadata": {"name": "owner"}}))).await;
    dependent(&api, "blocking", &owner, Some(true), &[HOLD]).await;
    dependent(&api, "non-blocking", &owner, Some(false), &[HOLD]).await;
    api.delete("owner", &DeleteParams::foreground())
        .await
        .unwrap();
    wait_for("both dependents to be marked for deletion", async || {
        let a = api
            .get("blocking")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp;
        let b = api
            .get("non-blocking")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp;
        (a.is_some() && b.is_some()).then_some(())
    })
    .await;
    assert!(
        api.get_opt("owner").await.unwrap().is_some(),
        "a blocking dependent holds the owner"
    );

    release(&api, "blocking").await;
    gone(&api, "blocking").await;
    // The non-blocking dependent (still held by its own finalizer) does not hold the owner.
    gone(&api, "owner").await;
    assert!(
        api.get("non-blocking")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    release(&api, "non-blocking").await;
    gone(&api, "non-blocking").await;
}

#[tokio::test]
async fn dependents_of_a_missing_owner_are_collected() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let ghost: ConfigMap = from_json(
        json!({"metadata": {"name": "ghost", "uid": "00000000-0000-0000-0000-000000000001"}}),
    );
    dependent(&api, "orphan", &ghost, None, &[]).await;
    gone(&api, "orphan").await;
}

#[tokio::test]
async fn owner_reference_across_kinds_is_collected() {
    use k8s_openapi::api::core::v1::Secret;
    let s = TestServer::start().await;
    let secrets: Api<Secret> = s.default_ns();
    let cms: Api<ConfigMap> = s.default_ns();
    let owner = create(
        &secrets,
        &from_json(json!({"metadata": {"name": "owner-secret"}, "stringData": {"a": "b"}})),
    )
    .await;
    let r = json!({"apiVersion": "v1", "kind": "Secret", "name": "owner-secret", "uid": owner.metadata.uid.unwrap(), "controller": true});
    create(
        &cms,
        &from_json(json!({"metadata": {"name": "child", "ownerReferences": [r]}})),
    )
    .await;
    // Not collected while the owner exists.
    assert!(cms.get_opt("child").await.unwrap().is_some());
    secrets
        .delete("owner-secret", &DeleteParams::default())
        .await
        .unwrap();
    gone(&cms, "child").await;
}
