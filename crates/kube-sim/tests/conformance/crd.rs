//! CustomResourceDefinitions: status and scale subresources, schema validation, pruning,
//! defaulting and CRD deletion.

use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

use crate::controller::install_crd;
use crate::support::{TestServer, cause_fields, expect_status, from_json, wait_for};

pub const GROUP: &str = "conformance.kube-sim.dev";

/// A namespaced `Gadget` CRD with status and scale subresources and a schema exercising
/// validation, defaults and pruning.
pub fn gadget_crd() -> CustomResourceDefinition {
    from_json(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("gadgets.{GROUP}")},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget", "listKind": "GadgetList", "shortNames": ["gd"]},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": {
                    "status": {},
                    "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas", "labelSelectorPath": ".status.selector"}
                },
                "additionalPrinterColumns": [
                    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
                    {"name": "Color", "type": "string", "jsonPath": ".spec.color"}
                ],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": {
                            "type": "object",
                            "required": ["color"],
                            "properties": {
                                "replicas": {"type": "integer", "format": "int32", "minimum": 0, "maximum": 10, "default": 1},
                                "color": {"type": "string", "enum": ["red", "green", "blue"]},
                                "label": {"type": "string", "maxLength": 8, "pattern": "^[a-z]+$"},
                                "tags": {"type": "array", "maxItems": 2, "items": {"type": "string"}},
                                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}
                            }
                        },
                        "status": {
                            "type": "object",
                            "properties": {
                                "replicas": {"type": "integer"},
                                "selector": {"type": "string"},
                                "phase": {"type": "string"}
                            }
                        }
                    }
                }}
            }]
        }
    }))
}

pub fn gadget_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", "Gadget"), "gadgets")
}

pub fn gadget(name: &str, spec: Value) -> DynamicObject {
    from_json(
        json!({"apiVersion": format!("{GROUP}/v1"), "kind": "Gadget", "metadata": {"name": name}, "spec": spec}),
    )
}

async fn setup() -> (TestServer, Api<DynamicObject>) {
    let s = TestServer::start().await;
    install_crd(&s.client, &gadget_crd()).await;
    let api = Api::namespaced_with(s.client.clone(), "default", &gadget_resource());
    (s, api)
}

#[tokio::test]
async fn crd_is_served_and_discoverable() {
    let (s, api) = setup().await;
    let g = api
        .create(
            &PostParams::default(),
            &gadget("g", json!({"color": "red"})),
        )
        .await
        .unwrap();
    assert_eq!(g.metadata.generation, Some(1));
    let (code, body) = crate::support::raw(
        &s.client,
        "GET",
        &format!("/apis/{GROUP}/v1"),
        "application/json",
        "",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let res = body["resources"].as_array().unwrap();
    let names: Vec<_> = res.iter().filter_map(|r| r["name"].as_str()).collect();
    for n in ["gadgets", "gadgets/status", "gadgets/scale"] {
        assert!(names.contains(&n), "{n} in discovery: {names:?}");
    }
    let main = res.iter().find(|r| r["name"] == "gadgets").unwrap();
    assert_eq!(main["kind"], "Gadget");
    assert_eq!(main["namespaced"], true);
    assert_eq!(main["shortNames"], json!(["gd"]));
}

#[tokio::test]
async fn status_subresource_changes_only_status() {
    let (_s, api) = setup().await;
    api.create(
        &PostParams::default(),
        &gadget("g", json!({"color": "red", "replicas": 2})),
    )
    .await
    .unwrap();

    let out = api
        .patch_status(
            "g",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Ready", "replicas": 2}, "spec": {"color": "blue"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(out.data["status"]["phase"], "Ready");
    assert_eq!(
        out.data["spec"]["color"], "red",
        "spec changes through /status are ignored"
    );
    assert_eq!(
        out.metadata.generation,
        Some(1),
        "status writes do not bump the generation"
    );

    // Status changes through the main resource are ignored.
    let main = api
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Broken"}, "spec": {"color": "green"}})),
        )
        .await
        .unwrap();
    assert_eq!(main.data["status"]["phase"], "Ready");
    assert_eq!(main.data["spec"]["color"], "green");
    assert_eq!(
        main.metadata.generation,
        Some(2),
        "spec changes bump the generation"
    );

    let st = api.get_status("g").await.unwrap();
    assert_eq!(st.data["status"]["phase"], "Ready");
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_spec_replicas() {
    let (_s, api) = setup().await;
    api.create(
        &PostParams::default(),
        &gadget("g", json!({"color": "red", "replicas": 2})),
    )
    .await
    .unwrap();
    api.patch_status(
        "g",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"replicas": 1, "selector": "app=g"}})),
    )
    .await
    .unwrap();

    let scale: Scale = api.get_scale("g").await.unwrap();
    assert_eq!(scale.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let status = scale.status.clone().unwrap();
    assert_eq!(
        (status.replicas, status.selector.as_deref()),
        (1, Some("app=g"))
    );
    assert_eq!(scale.metadata.name.as_deref(), Some("g"));

    let patched = api
        .patch_scale(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.spec.and_then(|s| s.replicas), Some(4));
    let obj = api.get("g").await.unwrap();
    assert_eq!(obj.data["spec"]["replicas"], 4);
    assert_eq!(obj.metadata.generation, Some(2));

    let mut replace: Scale = api.get_scale("g").await.unwrap();
    replace.spec.as_mut().unwrap().replicas = Some(6);
    api.replace_scale("g", &PostParams::default(), &replace)
        .await
        .unwrap();
    assert_eq!(api.get("g").await.unwrap().data["spec"]["replicas"], 6);
}

#[tokio::test]
async fn schema_violations_are_422_with_field_causes() {
    let (_s, api) = setup().await;
    let cases: &[(Value, &str)] = &[
        (
            json!({"color": "red", "replicas": "three"}),
            "spec.replicas",
        ),
        (json!({"color": "red", "replicas": 11}), "spec.replicas"),
        (json!({"color": "purple"}), "spec.color"),
        (json!({"replicas": 1}), "spec.color"),
        (json!({"color": "red", "label": "UPPER"}), "spec.label"),
        (
            json!({"color": "red", "label": "waytoolongforit"}),
            "spec.label",
        ),
        (
            json!({"color": "red", "tags": ["a", "b", "c"]}),
            "spec.tags",
        ),
    ];
    for (i, (spec, field)) in cases.iter().enumerate() {
        let st = expect_status(
            api.create(
                &PostParams::default(),
                &gadget(&format!("bad-{i}"), spec.clone()),
            )
            .await,
            422,
            "Invalid",
        );
        let fields = cause_fields(&st);
        assert!(
            fields.iter().any(|f| f == field),
            "spec {spec}: expected a cause for {field}, got {st:?}"
        );
        let details = st.details.as_ref().unwrap();
        assert_eq!(
            (details.kind.as_str(), details.group.as_str()),
            ("Gadget", GROUP)
        );
        assert!(api.get_opt(&format!("bad-{i}")).await.unwrap().is_none());
    }
    // Updates are validated too, and a rejected update changes nothing.
    let good = api
        .create(
            &PostParams::default(),
            &gadget("good", json!({"color": "red"})),
        )
        .await
        .unwrap();
    expect_status(
        api.patch(
            "good",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": -1}})),
        )
        .await,
        422,
        "Invalid",
    );
    let after = api.get("good").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        good.metadata.resource_version
    );
}

#[tokio::test]
async fn unknown_fields_are_pruned_and_defaults_applied() {
    let (_s, api) = setup().await;
    let obj = gadget(
        "p",
        json!({"color": "red", "bogus": 1, "extra": {"free": {"form": true}}}),
    );
    let mut obj_json = serde_json::to_value(&obj).unwrap();
    obj_json["topLevelJunk"] = json!("x");
    let out = api
        .create(&PostParams::default(), &from_json(obj_json))
        .await
        .unwrap();
    assert!(
        out.data["spec"].get("bogus").is_none(),
        "unknown spec field pruned: {}",
        out.data
    );
    assert!(
        out.data.get("topLevelJunk").is_none(),
        "unknown top-level field pruned"
    );
    assert_eq!(
        out.data["spec"]["extra"]["free"]["form"], true,
        "preserve-unknown-fields subtree kept"
    );
    assert_eq!(out.data["spec"]["replicas"], 1, "default applied");
    let stored = api.get("p").await.unwrap();
    assert!(stored.data["spec"].get("bogus").is_none());
}

#[tokio::test]
async fn strict_field_validation_rejects_unknown_fields() {
    let (_s, api) = setup().await;
    api.create(
        &PostParams::default(),
        &gadget("s", json!({"color": "red"})),
    )
    .await
    .unwrap();
    let st = expect_status(
        api.patch(
            "s",
            &PatchParams::default().validation_strict(),
            &Patch::Merge(json!({"spec": {"bogus": 1}})),
        )
        .await,
        400,
        "BadRequest",
    );
    assert!(
        st.message.contains("bogus"),
        "message names the field: {}",
        st.message
    );
}

#[tokio::test]
async fn deleting_a_crd_removes_its_objects() {
    let (s, api) = setup().await;
    api.create(
        &PostParams::default(),
        &gadget("x", json!({"color": "red"})),
    )
    .await
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(s.client.clone());
    crds.delete(&format!("gadgets.{GROUP}"), &DeleteParams::default())
        .await
        .unwrap();
    wait_for("the CRD to be deleted", async || {
        crds.get_opt(&format!("gadgets.{GROUP}"))
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let st = expect_status(api.get("x").await, 404, "NotFound");
    assert!(!st.message.is_empty());
}

#[tokio::test]
async fn crd_deletion_ends_watches_and_recreation_starts_empty() {
    use futures::{StreamExt, TryStreamExt};
    use kube::api::{WatchEvent, WatchParams};
    let (s, api) = setup().await;
    api.create(
        &PostParams::default(),
        &gadget("w", json!({"color": "red"})),
    )
    .await
    .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(20).disable_bookmarks(), "0")
        .await
        .unwrap()
        .boxed();
    let crds: Api<CustomResourceDefinition> = Api::all(s.client.clone());
    let name = format!("gadgets.{GROUP}");
    crds.delete(&name, &DeleteParams::default()).await.unwrap();
    // ADDED (initial state), DELETED (cleanup), then the watch ends.
    let mut seen = Vec::new();
    crate::support::within("the watch to end after the CRD is deleted", async {
        while let Some(ev) = stream.try_next().await.unwrap_or(None) {
            match ev {
                WatchEvent::Added(_) => seen.push("ADDED"),
                WatchEvent::Deleted(_) => seen.push("DELETED"),
                WatchEvent::Modified(_) => seen.push("MODIFIED"),
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(seen.first(), Some(&"ADDED"));
    assert_eq!(seen.last(), Some(&"DELETED"), "{seen:?}");

    wait_for("the CRD to be deleted", async || {
        crds.get_opt(&name).await.unwrap().is_none().then_some(())
    })
    .await;
    install_crd(&s.client, &gadget_crd()).await;
    let list = api.list(&Default::default()).await.unwrap();
    assert!(list.items.is_empty(), "a re-created CRD starts empty");
}

#[tokio::test]
async fn crd_schema_changes_apply_to_new_writes() {
    let (s, api) = setup().await;
    api.create(
        &PostParams::default(),
        &gadget("long", json!({"color": "red", "note": "x".repeat(20)})),
    )
    .await
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(s.client.clone());
    let mut crd = crds.get(&format!("gadgets.{GROUP}")).await.unwrap();
    let schema = crd.spec.versions[0]
        .schema
        .as_mut()
        .unwrap()
        .open_api_v3_schema
        .as_mut()
        .unwrap();
    let spec = schema.properties.as_mut().unwrap().get_mut("spec").unwrap();
    spec.properties.as_mut().unwrap().insert(
        "note".into(),
        from_json(json!({"type": "string", "maxLength": 5})),
    );
    crds.replace(&format!("gadgets.{GROUP}"), &PostParams::default(), &crd)
        .await
        .unwrap();
    wait_for("the new schema to be enforced", async || {
        match api
            .create(
                &PostParams::default(),
                &gadget("new", json!({"color": "red", "note": "x".repeat(20)})),
            )
            .await
        {
            Err(kube::Error::Api(st)) if st.code == 422 => Some(()),
            Ok(_) => {
                api.delete("new", &DeleteParams::default()).await.unwrap();
                None
            }
            Err(e) => panic!("{e}"),
        }
    })
    .await;
    // `note` was unknown (pruned) before the change, so the old object does not carry it.
    assert!(
        api.get("long").await.unwrap().data["spec"]
            .get("note")
            .is_none()
    );
}

#[tokio::test]
async fn namespace_deletion_removes_custom_objects() {
    use k8s_openapi::api::core::v1::Namespace;
    let (s, _) = setup().await;
    let nss: Api<Namespace> = Api::all(s.client.clone());
    nss.create(
        &PostParams::default(),
        &from_json(json!({"metadata": {"name": "crs"}})),
    )
    .await
    .unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(s.client.clone(), "crs", &gadget_resource());
    api.create(
        &PostParams::default(),
        &gadget("inside", json!({"color": "red"})),
    )
    .await
    .unwrap();
    nss.delete("crs", &DeleteParams::default()).await.unwrap();
    wait_for("the namespace to be deleted", async || {
        nss.get_opt("crs").await.unwrap().is_none().then_some(())
    })
    .await;
    let all: Api<DynamicObject> = Api::all_with(s.client.clone(), &gadget_resource());
    assert!(
        all.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
