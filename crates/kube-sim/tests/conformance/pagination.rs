//! `limit`/`continue` pagination, consistent while writes happen.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::crud::cm;
use crate::support::{ROOT_CA, TestServer, create, expect_status};

async fn seed(api: &Api<ConfigMap>, n: usize) {
    for i in 0..n {
        create(api, &cm(&format!("cm-{i:02}"), json!({"v": "0"}))).await;
    }
}

#[tokio::test]
async fn pages_cover_everything_once() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    seed(&api, 25).await;
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let mut lp = ListParams::default().limit(10);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        sizes.push(page.items.len());
        seen.extend(page.items.into_iter().filter_map(|c| c.metadata.name));
        token = page.metadata.continue_.filter(|t| !t.is_empty());
        if token.is_none() {
            break;
        }
        assert!(sizes.len() < 10, "pagination does not terminate");
    }
    // 25 objects and the namespace's root CA ConfigMap.
    assert_eq!(sizes, [10, 10, 6]);
    let mut want: Vec<_> = (0..25).map(|i| format!("cm-{i:02}")).collect();
    want.push(ROOT_CA.into());
    assert_eq!(seen, want, "every object once, in name order");
}

#[tokio::test]
async fn remaining_item_count_is_reported() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    seed(&api, 7).await;
    let total = api.list(&ListParams::default()).await.unwrap().items.len() as i64;
    assert_eq!(total, 8, "seeded objects and {ROOT_CA}");
    let page = api.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(page.metadata.remaining_item_count, Some(total - 3));
}

#[tokio::test]
async fn continued_list_is_a_consistent_snapshot() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    seed(&api, 10).await;
    let first = api.list(&ListParams::default().limit(4)).await.unwrap();
    let snapshot_rv = first.metadata.resource_version.clone();
    let token = first.metadata.continue_.clone().expect("continue token");

    // Writes between pages: none of them may show up in the rest of this list.
    create(&api, &cm("cm-99", json!({}))).await;
    api.delete("cm-07", &DeleteParams::default()).await.unwrap();
    api.patch(
        "cm-08",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "1"}})),
    )
    .await
    .unwrap();

    let rest = api
        .list(&ListParams::default().continue_token(&token))
        .await
        .unwrap();
    assert_eq!(
        rest.metadata.resource_version, snapshot_rv,
        "all pages are served at the first page's resourceVersion"
    );
    let names: Vec<_> = first
        .items
        .iter()
        .chain(rest.items.iter())
        .filter_map(|c| c.metadata.name.clone())
        .collect();
    let mut want: Vec<_> = (0..10).map(|i| format!("cm-{i:02}")).collect();
    want.push(ROOT_CA.into());
    assert_eq!(
        names, want,
        "the deleted object is still listed, the new one is not"
    );
    let cm08 = rest
        .items
        .iter()
        .find(|c| c.metadata.name.as_deref() == Some("cm-08"))
        .unwrap();
    assert_eq!(
        cm08.data.as_ref().unwrap()["v"],
        "0",
        "objects are served as of the snapshot"
    );

    // A fresh list sees the writes.
    let now: Vec<_> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert!(now.contains(&"cm-99".to_string()) && !now.contains(&"cm-07".to_string()));
}

#[tokio::test]
async fn garbage_continue_token_is_rejected() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    expect_status(
        api.list(&ListParams::default().continue_token("not-a-token"))
            .await,
        400,
        "BadRequest",
    );
}

#[tokio::test]
async fn expired_continue_token_is_410() {
    let s = TestServer::start_with(crate::support::Options { watch_history: 5 }).await;
    let api: Api<ConfigMap> = s.default_ns();
    seed(&api, 6).await;
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    let token = first.metadata.continue_.clone().expect("continue token");
    for i in 0..10 {
        api.patch(
            "cm-05",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": i.to_string()}})),
        )
        .await
        .unwrap();
    }
    let st = expect_status(
        api.list(&ListParams::default().continue_token(&token))
            .await,
        410,
        "Expired",
    );
    assert!(st.message.contains("continue"), "message: {}", st.message);
}
