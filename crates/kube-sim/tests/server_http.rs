//! HTTP-level tests of the API server: requests go through `ApiServer::handle` as an admin
//! (no network), except the kube-rs tests, which use `serve_plain` on a loopback port.

// Helpers outside #[test] functions unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util::{BodyExt, Full};
use kube_sim::api_server::{ApiServerConfig, DEFAULT_MAX_OBJECT_BYTES};
use kube_sim::auth::{Authenticator, UserInfo};
use kube_sim::{ApiServer, BoxBody};
use serde_json::{Value, json};

fn server(watch_history: usize) -> Arc<ApiServer> {
    ApiServer::new(ApiServerConfig {
        name: "test".into(),
        watch_history,
        max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
        authenticator: Arc::new(Authenticator::new(
            "admin-token",
            b"0123456789abcdef0123456789abcdef",
        )),
    })
}

struct Resp {
    code: u16,
    body: Value,
    headers: HeaderMap,
}

async fn send(
    api: &Arc<ApiServer>,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> http::Response<BoxBody> {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .unwrap();
    api.handle(req, UserInfo::admin()).await
}

async fn call(api: &Arc<ApiServer>, method: &str, path: &str, body: Option<Value>) -> Resp {
    call_with(
        api,
        method,
        path,
        body.map(|b| serde_json::to_vec(&b).unwrap()),
        &[("content-type", "application/json")],
    )
    .await
}

async fn call_with(
    api: &Arc<ApiServer>,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
    headers: &[(&str, &str)],
) -> Resp {
    let resp = send(api, method, path, body, headers).await;
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Resp {
        code,
        body,
        headers,
    }
}

/// Reads watch events from a streaming body until `n` arrived or the deadline passes.
async fn events(body: &mut BoxBody, n: usize) -> Vec<Value> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let frame = tokio::time::timeout_at(deadline, body.frame()).await;
        let Ok(Some(Ok(frame))) = frame else { break };
        if let Some(data) = frame.data_ref() {
            buf.extend_from_slice(data);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                out.push(serde_json::from_slice(&line).unwrap());
            }
        }
    }
    out
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

const CM: &str = "/api/v1/namespaces/default/configmaps";

fn widget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]},
            "versions": [
                {"name": "v1", "served": true, "storage": true,
                 "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                     "spec": {"type": "object", "properties": {"size": {"type": "integer"}, "color": {"type": "string"}}},
                     "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}}}}},
                 "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}},
                 "additionalPrinterColumns": [{"name": "Size", "type": "integer", "jsonPath": ".spec.size"}]},
                {"name": "v1beta1", "served": true, "storage": false,
                 "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}
            ]
        }
    })
}

#[tokio::test]
async fn discovery_documents() {
    let api = server(100);
    let v = call(&api, "GET", "/version", None).await;
    assert_eq!(v.code, 200);
    assert!(v.body["gitVersion"].as_str().unwrap().starts_with("v1.32."));
    assert_eq!(v.body["minor"], "32");

    let core = call(&api, "GET", "/api/", None).await;
    assert_eq!(core.body["versions"], json!(["v1"]));
    let apis = call(&api, "GET", "/apis", None).await;
    let groups: Vec<&str> = apis.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert!(groups.contains(&"apps") && groups.contains(&"apiextensions.k8s.io"));

    let agg = call_with(
        &api,
        "GET",
        "/apis",
        None,
        &[(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )],
    )
    .await;
    assert_eq!(
        agg.headers["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    assert_eq!(agg.body["kind"], "APIGroupDiscoveryList");

    let list = call(&api, "GET", "/apis/apps/v1", None).await;
    let deploy = list.body["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments")
        .unwrap()
        .clone();
    assert_eq!(deploy["shortNames"], json!(["deploy"]));
    assert_eq!(deploy["categories"], json!(["all"]));
    assert_eq!(
        call(&api, "GET", "/apis/nope.example.com/v1", None)
            .await
            .code,
        404
    );
}

#[tokio::test]
async fn configmap_crud_and_status_errors() {
    let api = server(100);
    let created = call(&api, "POST", CM, Some(cm("a"))).await;
    assert_eq!(created.code, 201, "{}", created.body);
    let meta = &created.body["metadata"];
    assert!(meta["uid"].is_string() && meta["creationTimestamp"].is_string());
    let rv1: u64 = meta["resourceVersion"].as_str().unwrap().parse().unwrap();

    let dup = call(&api, "POST", CM, Some(cm("a"))).await;
    assert_eq!(
        (dup.code, dup.body["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    assert_eq!(dup.body["kind"], "Status");

    let mut updated = created.body.clone();
    updated["data"]["k"] = json!("v2");
    let ok = call(&api, "PUT", &format!("{CM}/a"), Some(updated.clone())).await;
    assert_eq!(ok.code, 200);
    let rv2: u64 = ok.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    let stale = call(&api, "PUT", &format!("{CM}/a"), Some(updated)).await;
    assert_eq!(
        (stale.code, stale.body["reason"].as_str()),
        (409, Some("Conflict"))
    );

    let gen_name = call(
        &api,
        "POST",
        CM,
        Some(json!({"metadata": {"generateName": "gen-"}})),
    )
    .await;
    assert_eq!(gen_name.code, 201);
    assert!(
        gen_name.body["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("gen-")
    );

    let dry = call(&api, "POST", &format!("{CM}?dryRun=All"), Some(cm("dry"))).await;
    assert_eq!(dry.code, 201);
    assert_eq!(
        call(&api, "GET", &format!("{CM}/dry"), None).await.code,
        404
    );

    let deleted = call(&api, "DELETE", &format!("{CM}/a"), None).await;
    assert_eq!(
        (deleted.code, deleted.body["status"].as_str()),
        (200, Some("Success"))
    );
    let missing = call(&api, "GET", &format!("{CM}/a"), None).await;
    assert_eq!(
        (missing.code, missing.body["reason"].as_str()),
        (404, Some("NotFound"))
    );
    assert_eq!(missing.body["message"], "configmaps \"a\" not found");

    let empty = call(
        &api,
        "GET",
        "/api/v1/namespaces/kube-public/configmaps",
        None,
    )
    .await;
    assert_eq!(empty.body["items"], json!([]));
    assert_eq!(empty.body["kind"], "ConfigMapList");
}

#[tokio::test]
async fn bad_input_is_rejected_without_changes() {
    let api = server(100);
    let before = api.resource_version();
    let malformed = call_with(
        &api,
        "POST",
        CM,
        Some(b"{not json".to_vec()),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(
        (malformed.code, malformed.body["reason"].as_str()),
        (400, Some("BadRequest"))
    );
    let wrong_kind = call(
        &api,
        "POST",
        CM,
        Some(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}})),
    )
    .await;
    assert_eq!(wrong_kind.code, 400);
    let bad_name = call(&api, "POST", CM, Some(cm("Bad_Name"))).await;
    assert_eq!(
        (bad_name.code, bad_name.body["reason"].as_str()),
        (422, Some("Invalid"))
    );
    assert_eq!(
        bad_name.body["details"]["causes"][0]["field"],
        "metadata.name"
    );
    let ns_label = call(
        &api,
        "POST",
        "/api/v1/namespaces",
        Some(json!({"metadata": {"name": "a.b"}})),
    )
    .await;
    assert_eq!(ns_label.code, 422);
    let unknown = call(&api, "GET", "/apis/example.com/v1/things", None).await;
    assert_eq!(unknown.code, 404);
    let big = json!({"metadata": {"name": "big"}, "data": {"k": "x".repeat(2 * 1024 * 1024)}});
    let too_large = call(&api, "POST", CM, Some(big)).await;
    assert_eq!(
        (too_large.code, too_large.body["reason"].as_str()),
        (413, Some("RequestEntityTooLarge"))
    );
    let huge = call_with(
        &api,
        "POST",
        CM,
        Some(vec![b' '; 4 * 1024 * 1024]),
        &[("content-type", "application/json")],
    )
    .await;
    assert_eq!(huge.code, 413);
    let media = call_with(
        &api,
        "POST",
        CM,
        Some(b"x".to_vec()),
        &[("content-type", "text/plain")],
    )
    .await;
    assert_eq!(media.code, 415);
    let no_ns = call(
        &api,
        "POST",
        "/api/v1/namespaces/nope/configmaps",
        Some(cm("x")),
    )
    .await;
    assert_eq!(no_ns.code, 404);
    let bad_method = call(&api, "PUT", CM, Some(cm("x"))).await;
    assert_eq!(bad_method.code, 405);
    assert_eq!(api.resource_version(), before, "nothing stored changed");
}

#[tokio::test]
async fn yaml_bodies_are_accepted() {
    let api = server(100);
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  a: \"1\"\n";
    let r = call_with(
        &api,
        "POST",
        CM,
        Some(yaml.as_bytes().to_vec()),
        &[("content-type", "application/yaml")],
    )
    .await;
    assert_eq!(r.code, 201, "{}", r.body);
    assert_eq!(r.body["data"]["a"], "1");
}

#[tokio::test]
async fn custom_resources_follow_their_crd() {
    let api = server(100);
    let crd = call(
        &api,
        "POST",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        Some(widget_crd()),
    )
    .await;
    assert_eq!(crd.code, 201, "{}", crd.body);
    let got = call(
        &api,
        "GET",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
        None,
    )
    .await;
    let conds = got.body["status"]["conditions"].as_array().unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Established" && c["status"] == "True")
    );
    assert_eq!(got.body["status"]["acceptedNames"]["kind"], "Widget");

    let disco = call(&api, "GET", "/apis/example.com/v1", None).await;
    assert!(
        disco.body["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "widgets/status")
    );

    let path = "/apis/example.com/v1/namespaces/default/widgets";
    let w = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w1"}, "spec": {"size": 1}, "status": {"ready": true}});
    let created = call(&api, "POST", path, Some(w)).await;
    assert_eq!(created.code, 201, "{}", created.body);
    assert!(
        created.body.get("status").is_none(),
        "status ignored on create"
    );
    assert_eq!(created.body["metadata"]["generation"], 1);

    // Status writes change only status and do not bump generation.
    let mut s = created.body.clone();
    s["status"] = json!({"ready": true});
    s["spec"]["size"] = json!(99);
    let st = call(&api, "PUT", &format!("{path}/w1/status"), Some(s)).await;
    assert_eq!(st.code, 200, "{}", st.body);
    assert_eq!(st.body["status"]["ready"], true);
    assert_eq!(st.body["spec"]["size"], 1);
    assert_eq!(st.body["metadata"]["generation"], 1);

    // Spec writes bump generation and keep status.
    let mut u = st.body.clone();
    u["spec"]["size"] = json!(2);
    u["status"] = json!({"ready": false});
    let up = call(&api, "PUT", &format!("{path}/w1"), Some(u)).await;
    assert_eq!(up.body["metadata"]["generation"], 2);
    assert_eq!(up.body["status"]["ready"], true);

    // Custom resources need a resourceVersion on update.
    let mut no_rv = up.body.clone();
    no_rv["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    assert_eq!(
        call(&api, "PUT", &format!("{path}/w1"), Some(no_rv))
            .await
            .code,
        422
    );

    // Every served version serves the same objects.
    let beta = call(
        &api,
        "GET",
        "/apis/example.com/v1beta1/namespaces/default/widgets/w1",
        None,
    )
    .await;
    assert_eq!(beta.body["apiVersion"], "example.com/v1beta1");

    let scale = call(&api, "GET", &format!("{path}/w1/scale"), None).await;
    assert_eq!(scale.body["spec"]["replicas"], 2);

    let table = call_with(
        &api,
        "GET",
        path,
        None,
        &[(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )],
    )
    .await;
    assert_eq!(table.body["kind"], "Table");
    assert_eq!(table.body["columnDefinitions"][1]["name"], "Size");
    assert_eq!(table.body["rows"][0]["cells"], json!(["w1", 2]));

    let strategic = call_with(
        &api,
        "PATCH",
        &format!("{path}/w1"),
        Some(b"{}".to_vec()),
        &[("content-type", "application/strategic-merge-patch+json")],
    )
    .await;
    assert_eq!(strategic.code, 415);
    let merge = call_with(
        &api,
        "PATCH",
        &format!("{path}/w1"),
        Some(br#"{"spec":{"color":"red"}}"#.to_vec()),
        &[("content-type", "application/merge-patch+json")],
    )
    .await;
    assert_eq!(merge.code, 200, "{}", merge.body);
    assert_eq!(merge.body["spec"]["color"], "red");

    // Deleting the CRD deletes its objects and stops serving it.
    let del = call(
        &api,
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
        None,
    )
    .await;
    assert!(del.code == 200 || del.code == 202);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if call(&api, "GET", path, None).await.code == 404 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "CRD still served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn watch_delivers_events_in_order_and_410_for_old_versions() {
    let api = server(3);
    let created = call(&api, "POST", CM, Some(cm("w"))).await;
    let rv = created.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = send(
        &api,
        "GET",
        &format!("{CM}?watch=true&resourceVersion={rv}"),
        None,
        &[],
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut obj = created.body.clone();
    obj["data"]["k"] = json!("2");
    assert_eq!(
        call(&api, "PUT", &format!("{CM}/w"), Some(obj)).await.code,
        200
    );
    assert_eq!(
        call(&api, "DELETE", &format!("{CM}/w"), None).await.code,
        200
    );
    let evs = events(&mut body, 2).await;
    let kinds: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["MODIFIED", "DELETED"]);

    // History is 3 events per type: the first resourceVersion is gone by now.
    for i in 0..5 {
        call(&api, "POST", CM, Some(cm(&format!("x{i}")))).await;
    }
    let resp = send(
        &api,
        "GET",
        &format!("{CM}?watch=1&resourceVersion={rv}"),
        None,
        &[],
    )
    .await;
    let mut body = resp.into_body();
    let evs = events(&mut body, 1).await;
    assert_eq!(evs[0]["type"], "ERROR");
    assert_eq!(evs[0]["object"]["code"], 410);
    assert_eq!(evs[0]["object"]["reason"], "Expired");
}

#[tokio::test]
async fn streaming_list_ends_initial_events_with_a_bookmark() {
    let api = server(100);
    call(&api, "POST", CM, Some(cm("s1"))).await;
    call(&api, "POST", CM, Some(cm("s2"))).await;
    let resp = send(&api, "GET", &format!("{CM}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"), None, &[]).await;
    let mut body = resp.into_body();
    let evs = events(&mut body, 3).await;
    assert_eq!(evs[0]["type"], "ADDED");
    assert_eq!(evs[1]["type"], "ADDED");
    assert_eq!(evs[2]["type"], "BOOKMARK");
    assert_eq!(
        evs[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    // Legacy /watch/ paths work too.
    let resp = send(
        &api,
        "GET",
        "/api/v1/watch/namespaces/default/configmaps/s1",
        None,
        &[],
    )
    .await;
    let mut body = resp.into_body();
    let evs = events(&mut body, 1).await;
    assert_eq!(evs[0]["object"]["metadata"]["name"], "s1");
}

#[tokio::test]
async fn pagination_is_consistent_at_the_first_page() {
    let api = server(100);
    for i in 0..5 {
        call(&api, "POST", CM, Some(cm(&format!("p{i}")))).await;
    }
    let first = call(&api, "GET", &format!("{CM}?limit=2"), None).await;
    assert_eq!(first.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(first.body["metadata"]["remainingItemCount"], 3);
    let token = first.body["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_owned();
    // Changes after the first page are not visible in later pages.
    call(&api, "DELETE", &format!("{CM}/p3"), None).await;
    call(&api, "POST", CM, Some(cm("p9"))).await;
    let mut names: Vec<String> = first.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let mut cont = Some(token);
    while let Some(c) = cont {
        let page = call(&api, "GET", &format!("{CM}?limit=2&continue={c}"), None).await;
        assert_eq!(page.code, 200, "{}", page.body);
        assert_eq!(
            page.body["metadata"]["resourceVersion"],
            first.body["metadata"]["resourceVersion"]
        );
        names.extend(
            page.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned()),
        );
        cont = page.body["metadata"]["continue"]
            .as_str()
            .map(str::to_owned);
    }
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"]);
    let bad = call(&api, "GET", &format!("{CM}?limit=2&continue=garbage"), None).await;
    assert_eq!(bad.code, 400);
}

#[tokio::test]
async fn continue_tokens_expire_with_history() {
    let api = server(2);
    for i in 0..3 {
        call(&api, "POST", CM, Some(cm(&format!("e{i}")))).await;
    }
    let first = call(&api, "GET", &format!("{CM}?limit=1"), None).await;
    let token = first.body["metadata"]["continue"]
        .as_str()
        .unwrap()
        .to_owned();
    for i in 0..3 {
        call(&api, "POST", CM, Some(cm(&format!("f{i}")))).await;
    }
    let expired = call(&api, "GET", &format!("{CM}?limit=1&continue={token}"), None).await;
    assert_eq!(
        (expired.code, expired.body["reason"].as_str()),
        (410, Some("Expired"))
    );
}

#[tokio::test]
async fn metadata_only_lists() {
    let api = server(100);
    call(&api, "POST", CM, Some(cm("m1"))).await;
    let r = call_with(
        &api,
        "GET",
        CM,
        None,
        &[(
            "accept",
            "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
        )],
    )
    .await;
    assert_eq!(r.body["kind"], "PartialObjectMetadataList");
    assert_eq!(r.body["items"][0]["kind"], "PartialObjectMetadata");
    assert!(r.body["items"][0].get("data").is_none());
}

#[tokio::test]
async fn initial_namespaces_and_service_account_tokens() {
    let api = server(100);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert_eq!(
            call(&api, "GET", &format!("/api/v1/namespaces/{ns}"), None)
                .await
                .code,
            200
        );
    }
    let tr = call(
        &api,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/default/token",
        Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}})),
    )
    .await;
    assert_eq!(tr.code, 201, "{}", tr.body);
    let token = tr.body["status"]["token"].as_str().unwrap();
    let user = api.authenticator().authenticate(Some(token), None).unwrap();
    assert_eq!(user.username, "system:serviceaccount:default:default");
    let missing = call(
        &api,
        "POST",
        "/api/v1/namespaces/default/serviceaccounts/nope/token",
        Some(json!({})),
    )
    .await;
    assert_eq!(missing.code, 404);
}

#[tokio::test]
async fn kube_rs_client_works_over_plain_http() {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    use kube::runtime::{WatchStreamExt, watcher};

    let api = server(100);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(kube_sim::serve_plain(
        listener,
        api.clone(),
        UserInfo::admin(),
        async {
            let _ = stopped.await;
        },
    ));
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let first_cm: ConfigMap = serde_json::from_value(cm("kube-rs")).unwrap();
    let created = cms.create(&PostParams::default(), &first_cm).await.unwrap();
    assert!(created.metadata.uid.is_some());
    let err = cms
        .create(&PostParams::default(), &first_cm)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );

    let mut stream = watcher(cms.clone(), watcher::Config::default().streaming_lists())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("kube-rs"));
    let cm2: ConfigMap = serde_json::from_value(cm("kube-rs-2")).unwrap();
    cms.create(&PostParams::default(), &cm2).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.metadata.name.as_deref(), Some("kube-rs-2"));
    drop(stream);

    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn field_validation_of_built_in_types() {
    let api = server(100);
    let typo = json!({"metadata": {"name": "t"}, "data": {"a": "b"}, "dataa": {"x": "y"}});
    let strict = call(
        &api,
        "POST",
        &format!("{CM}?fieldValidation=Strict"),
        Some(typo.clone()),
    )
    .await;
    assert_eq!(strict.code, 400);
    assert!(
        strict.body["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"dataa\""),
        "{}",
        strict.body
    );
    let warn = call(&api, "POST", CM, Some(typo)).await;
    assert_eq!(warn.code, 201);
    assert!(
        warn.headers["warning"]
            .to_str()
            .unwrap()
            .contains("unknown field \\\"dataa\\\"")
    );
    assert!(
        warn.body.get("dataa").is_none(),
        "unknown fields are dropped"
    );

    let secret = json!({"metadata": {"name": "s"}, "stringData": {"user": "admin"}});
    let s = call(
        &api,
        "POST",
        "/api/v1/namespaces/default/secrets",
        Some(secret),
    )
    .await;
    assert_eq!(s.code, 201, "{}", s.body);
    assert_eq!(s.body["data"]["user"], "YWRtaW4=");
    assert!(s.body.get("stringData").is_none());

    let mismatched = json!({"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "a"}},
        "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    let d = call(
        &api,
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        Some(mismatched),
    )
    .await;
    assert_eq!(d.code, 422);
    assert_eq!(
        d.body["details"]["causes"][0]["field"],
        "spec.template.metadata.labels"
    );
}

#[tokio::test]
async fn namespace_deletion_over_http() {
    let api = server(100);
    assert_eq!(
        call(
            &api,
            "POST",
            "/api/v1/namespaces",
            Some(json!({"metadata": {"name": "gone"}}))
        )
        .await
        .code,
        201
    );
    assert_eq!(
        call(
            &api,
            "POST",
            "/api/v1/namespaces/gone/configmaps",
            Some(cm("c"))
        )
        .await
        .code,
        201
    );
    let del = call(&api, "DELETE", "/api/v1/namespaces/gone", None).await;
    assert!(del.code == 200 || del.code == 202, "{}", del.body);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while call(&api, "GET", "/api/v1/namespaces/gone", None)
        .await
        .code
        != 404
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "namespace still there"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        call(&api, "GET", "/api/v1/namespaces/gone/configmaps/c", None)
            .await
            .code,
        404
    );
}

#[tokio::test]
async fn events_are_served_by_both_groups() {
    let api = server(100);
    let ev = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1"},
        "eventTime": "2024-01-01T00:00:00.000000Z", "reportingController": "ctl", "reportingInstance": "ctl-1",
        "action": "Reconcile", "reason": "Started", "type": "Normal", "note": "hello",
        "regarding": {"kind": "ConfigMap", "name": "x", "namespace": "default"}});
    let created = call(
        &api,
        "POST",
        "/apis/events.k8s.io/v1/namespaces/default/events",
        Some(ev),
    )
    .await;
    assert_eq!(created.code, 201, "{}", created.body);
    let core = call(&api, "GET", "/api/v1/namespaces/default/events/e1", None).await;
    assert_eq!(core.code, 200);
    assert_eq!(core.body["message"], "hello");
    assert_eq!(core.body["involvedObject"]["name"], "x");
    assert_eq!(
        core.body["metadata"]["uid"],
        created.body["metadata"]["uid"]
    );
    assert_eq!(
        call(&api, "DELETE", "/api/v1/namespaces/default/events/e1", None)
            .await
            .code,
        200
    );
    assert_eq!(
        call(
            &api,
            "GET",
            "/apis/events.k8s.io/v1/namespaces/default/events/e1",
            None
        )
        .await
        .code,
        404
    );
}

#[tokio::test]
async fn selectors_filter_lists_and_watches() {
    let api = server(100);
    let labeled =
        |name: &str, app: &str| json!({"metadata": {"name": name, "labels": {"app": app}}});
    call(&api, "POST", CM, Some(labeled("l1", "web"))).await;
    call(&api, "POST", CM, Some(labeled("l2", "db"))).await;
    let list = call(&api, "GET", &format!("{CM}?labelSelector=app%3Dweb"), None).await;
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["l1"]);
    let by_field = call(
        &api,
        "GET",
        &format!("{CM}?fieldSelector=metadata.name%3Dl2"),
        None,
    )
    .await;
    assert_eq!(by_field.body["items"].as_array().unwrap().len(), 1);
    let bad = call(
        &api,
        "GET",
        &format!("{CM}?labelSelector=app%20in%20(web"),
        None,
    )
    .await;
    assert_eq!(
        (bad.code, bad.body["reason"].as_str()),
        (400, Some("BadRequest"))
    );

    let rv = list.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = send(
        &api,
        "GET",
        &format!("{CM}?watch=true&labelSelector=app%3Dweb&resourceVersion={rv}"),
        None,
        &[],
    )
    .await;
    let mut body = resp.into_body();
    // l1 leaves the selector, l2 enters it.
    let mut l1 = call(&api, "GET", &format!("{CM}/l1"), None).await.body;
    l1["metadata"]["labels"]["app"] = json!("other");
    call(&api, "PUT", &format!("{CM}/l1"), Some(l1)).await;
    let mut l2 = call(&api, "GET", &format!("{CM}/l2"), None).await.body;
    l2["metadata"]["labels"]["app"] = json!("web");
    call(&api, "PUT", &format!("{CM}/l2"), Some(l2)).await;
    let evs = events(&mut body, 2).await;
    let seen: Vec<(&str, &str)> = evs
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap(),
                e["object"]["metadata"]["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [("DELETED", "l1"), ("ADDED", "l2")]);
}

#[tokio::test]
async fn server_side_apply_creates_and_reports_conflicts() {
    let api = server(100);
    let path = format!("{CM}/applied");
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: applied\ndata:\n  key: one\n";
    let ct = [("content-type", "application/apply-patch+yaml")];
    let created = call_with(
        &api,
        "PATCH",
        &format!("{path}?fieldManager=alice"),
        Some(yaml.as_bytes().to_vec()),
        &ct,
    )
    .await;
    assert_eq!(created.code, 201, "{}", created.body);
    let mf = &created.body["metadata"]["managedFields"];
    assert_eq!(mf[0]["manager"], "alice");
    assert_eq!(mf[0]["operation"], "Apply");
    let other = yaml.replace("one", "two");
    let conflict = call_with(
        &api,
        "PATCH",
        &format!("{path}?fieldManager=bob"),
        Some(other.as_bytes().to_vec()),
        &ct,
    )
    .await;
    assert_eq!(conflict.code, 409, "{}", conflict.body);
    assert!(conflict.body["message"].as_str().unwrap().contains("alice"));
    let forced = call_with(
        &api,
        "PATCH",
        &format!("{path}?fieldManager=bob&force=true"),
        Some(other.as_bytes().to_vec()),
        &ct,
    )
    .await;
    assert_eq!(forced.code, 200, "{}", forced.body);
    assert_eq!(forced.body["data"]["key"], "two");
    let no_manager = call_with(&api, "PATCH", &path, Some(yaml.as_bytes().to_vec()), &ct).await;
    assert_eq!(no_manager.code, 400);
}

#[tokio::test]
async fn shutdown_ends_open_watches() {
    let api = server(100);
    let resp = send(&api, "GET", &format!("{CM}?watch=true"), None, &[]).await;
    let mut body = resp.into_body();
    api.shutdown();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "watch did not end on shutdown");
}

#[tokio::test]
async fn kube_rs_discovery_dynamic_objects_and_watchers() {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
    use kube::core::PartialObjectMeta;
    use kube::discovery::{Discovery, Scope};
    use kube::runtime::{WatchStreamExt, watcher};

    let api = server(100);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(kube_sim::serve_plain(
        listener,
        api.clone(),
        UserInfo::admin(),
        async {
            let _ = stopped.await;
        },
    ));
    let client =
        kube::Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap()))
            .unwrap();

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(widget_crd()).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();

    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let (ar, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "Widget")
        .expect("Widget discovered");
    assert_eq!(caps.scope, Scope::Namespaced);
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "dyn"}, "spec": {"size": 1}
    }))
    .unwrap();
    widgets.create(&PostParams::default(), &w).await.unwrap();
    let pp = PatchParams::apply("tester").force();
    let patched = widgets
        .patch(
            "dyn",
            &pp,
            &Patch::Apply(
                json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"size": 5}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["spec"]["size"], 5);
    let status = widgets
        .patch_status(
            "dyn",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(status.data["status"]["ready"], true);

    // A paginated initial list (page size 1) through the default watcher.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for i in 0..3 {
        let c: ConfigMap = serde_json::from_value(cm(&format!("kw{i}"))).unwrap();
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut stream = watcher(cms.clone(), watcher::Config::default().page_size(1))
        .applied_objects()
        .boxed();
    while seen.len() < 3 {
        let cm = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.insert(cm.metadata.name.unwrap());
    }
    drop(stream);
    let mut meta = watcher(
        Api::<PartialObjectMeta<ConfigMap>>::namespaced(client.clone(), "default"),
        watcher::Config::default(),
    )
    .applied_objects()
    .boxed();
    let first = tokio::time::timeout(Duration::from_secs(10), meta.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.metadata.name.unwrap().starts_with("kw"));
    drop(meta);

    let listed = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(listed.items.len(), 2);
    assert!(listed.metadata.continue_.is_some());
    let deleted = cms
        .delete("kw0", &DeleteParams::foreground())
        .await
        .unwrap();
    assert!(deleted.is_left() || deleted.is_right());
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        while cms.get_opt("kw0").await.unwrap().is_some() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(gone.is_ok());

    let _ = stop.send(());
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn many_watchers_each_see_a_change() {
    let api = server(100);
    let rv = api.resource_version();
    let mut bodies = Vec::new();
    for _ in 0..1000 {
        let resp = send(
            &api,
            "GET",
            &format!("{CM}?watch=true&resourceVersion={rv}"),
            None,
            &[],
        )
        .await;
        bodies.push(resp.into_body());
    }
    call(&api, "POST", CM, Some(cm("fanout"))).await;
    for body in &mut bodies {
        let evs = events(body, 1).await;
        assert_eq!(evs[0]["object"]["metadata"]["name"], "fanout");
    }
}

#[tokio::test]
async fn bound_pods_terminate_gracefully() {
    let api = server(100);
    let pod = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}]}});
    assert_eq!(
        call(&api, "POST", "/api/v1/namespaces/default/pods", Some(pod))
            .await
            .code,
        201
    );
    let del = call(&api, "DELETE", "/api/v1/namespaces/default/pods/p", None).await;
    assert_eq!(del.code, 202, "{}", del.body);
    assert_eq!(del.body["metadata"]["deletionGracePeriodSeconds"], 30);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while call(&api, "GET", "/api/v1/namespaces/default/pods/p", None)
        .await
        .code
        != 404
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod never terminated"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
