//! More API semantics: Secrets' stringData, deletecollection, exact-resourceVersion lists,
//! concurrent writers, metadata-only lists and watches, selectors in watches, events, CRD
//! versions and list-map apply.

use std::collections::BTreeSet;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, VersionMatch,
    WatchEvent, WatchParams,
};
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;

use crate::controller::install_crd;
use crate::crud::cm;
use crate::support::{ROOT_CA, TestServer, create, from_json, within};

#[tokio::test]
async fn secret_string_data_is_stored_base64_in_data() {
    let s = TestServer::start().await;
    let api: Api<Secret> = s.default_ns();
    let out = create(&api, &from_json(json!({"metadata": {"name": "s"}, "stringData": {"user": "admin"}, "data": {"raw": "aGk="}}))).await;
    assert!(out.string_data.is_none(), "stringData is write-only");
    let data = out.data.unwrap();
    assert_eq!(data["user"].0, b"admin");
    assert_eq!(data["raw"].0, b"hi");
    assert_eq!(
        out.type_.as_deref(),
        Some("Opaque"),
        "type defaults to Opaque"
    );
}

#[tokio::test]
async fn delete_collection_honours_the_selector() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    for (n, l) in [("a", "x"), ("b", "x"), ("c", "y")] {
        create(
            &api,
            &from_json(json!({"metadata": {"name": n, "labels": {"grp": l}}})),
        )
        .await;
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("grp=x"),
    )
    .await
    .unwrap();
    let left: BTreeSet<String> = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .filter(|n| n != ROOT_CA)
        .collect();
    assert_eq!(left, BTreeSet::from(["c".to_string()]));
}

#[tokio::test]
async fn exact_resource_version_list_is_a_snapshot() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let a = create(&api, &cm("a", json!({"v": "1"}))).await;
    let at = a.metadata.resource_version.clone().unwrap();
    create(&api, &cm("b", json!({}))).await;
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    let old = api
        .list(&ListParams::default().at(&at).matching(VersionMatch::Exact))
        .await
        .unwrap();
    assert_eq!(old.metadata.resource_version.as_deref(), Some(at.as_str()));
    let names: Vec<_> = old
        .items
        .iter()
        .filter_map(|c| c.metadata.name.clone())
        .filter(|n| n != ROOT_CA)
        .collect();
    assert_eq!(names, ["a"]);
    assert_eq!(
        old.items
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some("a"))
            .unwrap()
            .data
            .as_ref()
            .unwrap()["v"],
        "1"
    );
}

#[tokio::test]
async fn concurrent_writers_get_distinct_resource_versions() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let writes = (0..20).map(|i| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &cm(&format!("c-{i}"), json!({})))
                .await
                .unwrap()
        }
    });
    let created = futures::future::join_all(writes).await;
    let rvs: BTreeSet<_> = created
        .iter()
        .map(|c| c.metadata.resource_version.clone().unwrap())
        .collect();
    assert_eq!(rvs.len(), 20, "every write has its own resourceVersion");
    // Optimistic concurrency: of many updates from the same read, exactly one wins.
    let base = api.get("c-0").await.unwrap();
    let updates = (0..5).map(|i| {
        let api = api.clone();
        let mut obj = base.clone();
        obj.data = Some([("w".to_string(), i.to_string())].into());
        async move {
            api.replace("c-0", &PostParams::default(), &obj)
                .await
                .is_ok()
        }
    });
    let wins = futures::future::join_all(updates)
        .await
        .into_iter()
        .filter(|ok| *ok)
        .count();
    assert_eq!(wins, 1);
}

#[tokio::test]
async fn metadata_only_list_and_watch() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    create(&api, &cm("m", json!({"big": "payload"}))).await;
    let list = api.list_metadata(&ListParams::default()).await.unwrap();
    let m = list
        .items
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("m"))
        .expect("listed");
    assert_eq!(
        m.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    assert!(m.metadata.uid.is_some());

    let meta: Api<PartialObjectMeta<ConfigMap>> = s.default_ns();
    let mut events = watcher(meta, watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = within("a metadata watch event", events.try_next())
        .await
        .unwrap()
        .unwrap();
    assert!(first.metadata.name.is_some());
    create(&api, &cm("m2", json!({}))).await;
    loop {
        let ev = within("the new object's metadata", events.try_next())
            .await
            .unwrap()
            .unwrap();
        if ev.metadata.name.as_deref() == Some("m2") {
            break;
        }
    }
}

#[tokio::test]
async fn object_leaving_a_watch_selector_is_deleted_for_that_watch() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let c = create(
        &api,
        &from_json(json!({"metadata": {"name": "sel", "labels": {"watch": "me"}}})),
    )
    .await;
    let rv = c.metadata.resource_version.unwrap();
    let mut stream = api
        .watch(&WatchParams::default().labels("watch=me").timeout(20), &rv)
        .await
        .unwrap()
        .boxed();
    api.patch(
        "sel",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"watch": null}}})),
    )
    .await
    .unwrap();
    match within("the watch event", stream.try_next()).await.unwrap() {
        Some(WatchEvent::Deleted(o)) => assert_eq!(o.metadata.name.as_deref(), Some("sel")),
        other => panic!("expected DELETED when the object stops matching, got {other:?}"),
    }
    api.patch(
        "sel",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"watch": "me"}}})),
    )
    .await
    .unwrap();
    match within("the watch event", stream.try_next()).await.unwrap() {
        Some(WatchEvent::Added(o)) => assert_eq!(o.metadata.name.as_deref(), Some("sel")),
        other => panic!("expected ADDED when the object matches again, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_from_zero_starts_with_the_current_state() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    create(&api, &cm("z", json!({}))).await;
    let mut stream = api
        .watch(&WatchParams::default().timeout(20), "0")
        .await
        .unwrap()
        .boxed();
    let mut added = BTreeSet::new();
    while !added.contains("z") {
        match within("synthetic ADDED events", stream.try_next())
            .await
            .unwrap()
        {
            Some(WatchEvent::Added(o)) => {
                added.insert(o.metadata.name.unwrap());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn core_events_select_by_involved_object() {
    let s = TestServer::start().await;
    let api: Api<Event> = s.default_ns();
    for (name, obj) in [("e1", "web"), ("e2", "db")] {
        create(
            &api,
            &from_json(json!({
                "metadata": {"name": name},
                "involvedObject": {"kind": "Deployment", "name": obj, "namespace": "default"},
                "reason": "Testing", "message": "hello", "type": "Normal"
            })),
        )
        .await;
    }
    let web = api
        .list(
            &ListParams::default().fields("involvedObject.name=web,involvedObject.kind=Deployment"),
        )
        .await
        .unwrap();
    assert_eq!(
        web.items
            .iter()
            .filter_map(|e| e.metadata.name.as_deref())
            .collect::<Vec<_>>(),
        ["e1"]
    );
}

#[tokio::test]
async fn crd_versions_are_served_with_conversion_none() {
    let s = TestServer::start().await;
    let crd = from_json(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.conformance.kube-sim.dev"},
        "spec": {
            "group": "conformance.kube-sim.dev", "scope": "Namespaced",
            "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
            "versions": [
                {"name": "v1alpha1", "served": true, "storage": false,
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                {"name": "v1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {
                     "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                               "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "value": {"type": "string"}}}}
                 }}}}}}
            ]
        }
    }));
    install_crd(&s.client, &crd).await;
    let v1 = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("conformance.kube-sim.dev", "v1", "Thing"),
        "things",
    );
    let v1alpha1 = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk("conformance.kube-sim.dev", "v1alpha1", "Thing"),
        "things",
    );
    let api1: Api<DynamicObject> = Api::namespaced_with(s.client.clone(), "default", &v1);
    let api0: Api<DynamicObject> = Api::namespaced_with(s.client.clone(), "default", &v1alpha1);
    let obj: DynamicObject = from_json(
        json!({"apiVersion": "conformance.kube-sim.dev/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {"items": [{"name": "a", "value": "1"}]}}),
    );
    api1.create(&PostParams::default(), &obj).await.unwrap();
    let old = api0.get("t").await.unwrap();
    assert_eq!(
        old.types.as_ref().map(|t| t.api_version.as_str()),
        Some("conformance.kube-sim.dev/v1alpha1")
    );
    assert_eq!(old.data["spec"]["items"][0]["value"], "1");

    // Two appliers each own one entry of a list-type=map list, merged by key.
    let apply = |mgr: &'static str, name: &'static str, value: &'static str| {
        let api1 = api1.clone();
        async move {
            let body = json!({"apiVersion": "conformance.kube-sim.dev/v1", "kind": "Thing", "metadata": {"name": "t"},
                              "spec": {"items": [{"name": name, "value": value}]}});
            api1.patch("t", &PatchParams::apply(mgr), &Patch::Apply(body))
                .await
                .unwrap()
        }
    };
    apply("one", "x", "1").await;
    let out = apply("two", "y", "2").await;
    let names: BTreeSet<_> = out.data["spec"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str().map(String::from))
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["a".to_string(), "x".to_string(), "y".to_string()]),
        "{}",
        out.data
    );
    let out = api1
        .patch("t", &PatchParams::apply("one"), &Patch::Apply(json!({"apiVersion": "conformance.kube-sim.dev/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {"items": []}})))
        .await
        .unwrap();
    let names: BTreeSet<_> = out.data["spec"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["name"].as_str().map(String::from))
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["a".to_string(), "y".to_string()]),
        "x removed by its only applier: {}",
        out.data
    );
}
