//! Watches: raw event streams, kube-runtime `watcher` (with and without streaming lists),
//! 410 Gone with relist, and `reflector` stores.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use serde_json::json;

use crate::crud::cm;
use crate::support::{Options, TestServer, create, wait_for, within};

fn name(c: &ConfigMap) -> String {
    c.metadata.name.clone().unwrap_or_default()
}

#[tokio::test]
async fn raw_watch_delivers_added_modified_deleted_in_order() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let before = create(&api, &cm("pre", json!({}))).await;
    let rv = before.metadata.resource_version.clone().unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(20), &rv)
        .await
        .unwrap()
        .boxed();

    create(&api, &cm("w", json!({"a": "1"}))).await;
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"a": "2"}})),
    )
    .await
    .unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        match within("three watch events", stream.try_next())
            .await
            .unwrap()
        {
            Some(WatchEvent::Added(o)) => seen.push((
                "ADDED",
                name(&o),
                o.data.unwrap_or_default().get("a").cloned(),
            )),
            Some(WatchEvent::Modified(o)) => seen.push((
                "MODIFIED",
                name(&o),
                o.data.unwrap_or_default().get("a").cloned(),
            )),
            Some(WatchEvent::Deleted(o)) => seen.push((
                "DELETED",
                name(&o),
                o.data.unwrap_or_default().get("a").cloned(),
            )),
            Some(WatchEvent::Bookmark(_)) => {}
            other => panic!("unexpected watch item {other:?}"),
        }
    }
    let two = Some("2".to_string());
    assert_eq!(
        seen,
        [
            ("ADDED", "w".into(), Some("1".into())),
            ("MODIFIED", "w".into(), two.clone()),
            ("DELETED", "w".into(), two)
        ]
    );
}

#[tokio::test]
async fn raw_watch_honours_label_selectors() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let mut stream = api
        .watch(&WatchParams::default().labels("pick=yes").timeout(20), "0")
        .await
        .unwrap()
        .boxed();
    create(
        &api,
        &crate::support::from_json(json!({"metadata": {"name": "skip"}})),
    )
    .await;
    create(
        &api,
        &crate::support::from_json(
            json!({"metadata": {"name": "take", "labels": {"pick": "yes"}}}),
        ),
    )
    .await;
    loop {
        match within("the labelled object's event", stream.try_next())
            .await
            .unwrap()
        {
            Some(WatchEvent::Added(o)) => {
                assert_eq!(name(&o), "take", "only matching objects are sent");
                break;
            }
            Some(WatchEvent::Bookmark(_)) => {}
            other => panic!("unexpected watch item {other:?}"),
        }
    }
}

#[tokio::test]
async fn raw_watch_from_a_compacted_resource_version_gets_410() {
    let s = TestServer::start_with(Options { watch_history: 5 }).await;
    let api: Api<ConfigMap> = s.default_ns();
    let first = create(&api, &cm("old", json!({}))).await;
    for i in 0..12 {
        create(&api, &cm(&format!("later-{i}"), json!({}))).await;
    }
    let old_rv = first.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(20), &old_rv)
        .await
        .unwrap()
        .boxed();
    match within("the watch error", stream.try_next()).await {
        Ok(Some(WatchEvent::Error(e))) => {
            assert_eq!((e.code, e.reason.as_str()), (410, "Expired"), "{e:?}");
        }
        other => panic!("expected an ERROR event with 410, got {other:?}"),
    }
}

#[tokio::test]
async fn bookmarks_are_sent_when_requested() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let mut stream = api
        .watch(&WatchParams::streaming_lists().timeout(20), "")
        .await
        .unwrap()
        .boxed();
    create(&api, &cm("x", json!({}))).await;
    // A streaming list ends its initial events with a bookmark annotated initial-events-end.
    loop {
        match within("the initial-events-end bookmark", stream.try_next())
            .await
            .unwrap()
        {
            Some(WatchEvent::Bookmark(b)) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                assert!(!b.metadata.resource_version.is_empty());
                break;
            }
            Some(WatchEvent::Added(_)) => {}
            other => panic!("unexpected watch item {other:?}"),
        }
    }
}

/// Runs a watcher and checks the final set of names it reports.
async fn watcher_converges(config: watcher::Config) {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    create(&api, &cm("existing", json!({}))).await;
    let mut events = watcher(api.clone(), config).boxed();
    let mut state: BTreeMap<String, String> = BTreeMap::new();
    let mut init_buffer = BTreeMap::new();
    let mut wrote = false;
    loop {
        let ev = within("watcher events", events.try_next())
            .await
            .unwrap()
            .unwrap();
        match ev {
            watcher::Event::Init => init_buffer.clear(),
            watcher::Event::InitApply(o) => {
                init_buffer.insert(name(&o), o.metadata.resource_version.clone().unwrap());
            }
            watcher::Event::InitDone => {
                state = std::mem::take(&mut init_buffer);
                assert!(
                    state.contains_key("existing"),
                    "initial state lists existing objects: {state:?}"
                );
                if !wrote {
                    wrote = true;
                    create(&api, &cm("added", json!({}))).await;
                    create(&api, &cm("removed", json!({}))).await;
                    api.delete("removed", &DeleteParams::default())
                        .await
                        .unwrap();
                    api.patch(
                        "existing",
                        &PatchParams::default(),
                        &Patch::Merge(json!({"data": {"x": "y"}})),
                    )
                    .await
                    .unwrap();
                }
            }
            watcher::Event::Apply(o) => {
                state.insert(name(&o), o.metadata.resource_version.clone().unwrap());
            }
            watcher::Event::Delete(o) => {
                state.remove(&name(&o));
            }
        }
        let server: BTreeMap<String, String> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|c| (name(&c), c.metadata.resource_version.unwrap()))
            .collect();
        if wrote && state == server && state.contains_key("added") {
            break;
        }
    }
}

#[tokio::test]
async fn watcher_with_list_then_watch_converges() {
    watcher_converges(watcher::Config::default()).await;
}

#[tokio::test]
async fn watcher_with_paged_list_converges() {
    watcher_converges(watcher::Config::default().page_size(1)).await;
}

#[tokio::test]
async fn watcher_with_streaming_lists_converges() {
    watcher_converges(watcher::Config::default().streaming_lists()).await;
}

#[tokio::test]
async fn watcher_relists_after_410_and_converges() {
    let mut s = TestServer::start_with(Options { watch_history: 5 }).await;
    let api: Api<ConfigMap> = s.default_ns();
    create(&api, &cm("keep", json!({}))).await;
    create(&api, &cm("doomed", json!({}))).await;
    let mut events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .boxed();
    // The initial list.
    loop {
        if let watcher::Event::InitDone = within("the initial list", events.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            break;
        }
    }
    // Drop the watch connection, then write more than the history holds while it is down.
    s.stop_serving().await;
    let admin = s.api.clone();
    for i in 0..8 {
        let obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("new-{i}"), "namespace": "default"}});
        admin.create_object(obj).unwrap();
    }
    let t = admin.resolve_kind("v1", "ConfigMap").unwrap();
    admin
        .delete(&t, Some("default"), "doomed", &Default::default())
        .unwrap();
    s.start_serving().await;

    // The watcher must see 410, relist (Init ... InitDone) and end with the server's state.
    let mut buffer = BTreeMap::new();
    loop {
        match within("the watcher to relist after 410", events.next()).await {
            Some(Ok(watcher::Event::Init)) => buffer.clear(),
            Some(Ok(watcher::Event::InitApply(o))) if name(&o) != crate::support::ROOT_CA => {
                buffer.insert(name(&o), ());
            }
            Some(Ok(watcher::Event::InitDone)) => {
                break;
            }
            Some(Ok(_)) | Some(Err(_)) => {} // Reconnect errors while the server is down.
            None => panic!("watcher ended"),
        }
    }
    let names: Vec<_> = buffer.into_keys().collect();
    let mut want: Vec<String> = (0..8).map(|i| format!("new-{i}")).collect();
    want.push("keep".into());
    want.sort();
    assert_eq!(
        names, want,
        "the relist reflects writes made while disconnected"
    );
}

#[tokio::test]
async fn reflector_store_converges() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    for i in 0..5 {
        create(&api, &cm(&format!("r-{i}"), json!({"v": "0"}))).await;
    }
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream =
        reflector(writer, watcher(api.clone(), watcher::Config::default())).applied_objects();
    let task = tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    within("the store to be ready", reader.wait_until_ready())
        .await
        .unwrap();
    let listed = api.list(&ListParams::default()).await.unwrap().items.len();
    assert_eq!(
        reader.state().len(),
        listed,
        "the initial list fills the store"
    );

    api.delete("r-0", &DeleteParams::default()).await.unwrap();
    api.patch(
        "r-1",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "1"}})),
    )
    .await
    .unwrap();
    create(&api, &cm("r-new", json!({}))).await;

    wait_for("the reflector store to match the server", async || {
        let mut store: Vec<_> = reader
            .state()
            .iter()
            .map(|c| (name(c), c.metadata.resource_version.clone()))
            .collect();
        store.sort();
        let mut server: Vec<_> = api
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|c| (name(&c), c.metadata.resource_version.clone()))
            .collect();
        server.sort();
        (store == server).then_some(())
    })
    .await;
    let r1 = reader
        .state()
        .into_iter()
        .find(|c| name(c) == "r-1")
        .unwrap();
    assert_eq!(r1.data.as_ref().unwrap()["v"], "1");
    task.abort();
}

#[tokio::test]
async fn watch_ends_after_its_timeout() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let mut stream = api
        .watch(&WatchParams::default().timeout(1).disable_bookmarks(), "0")
        .await
        .unwrap()
        .boxed();
    within("the server to end the watch after timeoutSeconds", async {
        while let Some(ev) = stream.try_next().await.unwrap() {
            assert!(
                matches!(ev, WatchEvent::Added(_) | WatchEvent::Bookmark(_)),
                "{ev:?}"
            );
        }
    })
    .await;
}
