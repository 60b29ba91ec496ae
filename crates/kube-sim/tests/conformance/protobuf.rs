//! Protobuf request bodies (what kubectl and client-go send for built-in types).

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_pb::api::core::v1 as pb;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as pbmeta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use kube::api::Api;
use prost::Message as _;

use crate::support::{TestServer, assert_status_body, raw};

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// The Kubernetes protobuf envelope: magic `k8s\0` and a `runtime.Unknown`.
fn envelope(api_version: &str, kind: &str, raw_object: Vec<u8>) -> Vec<u8> {
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw_object),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = b"k8s\0".to_vec();
    out.extend(unknown.encode_to_vec());
    out
}

#[tokio::test]
async fn protobuf_create_round_trips() {
    let s = TestServer::start().await;
    let cm = pb::ConfigMap {
        metadata: Some(pbmeta::ObjectMeta {
            name: Some("from-proto".into()),
            labels: [("app".to_string(), "x".to_string())].into(),
            ..Default::default()
        }),
        data: [("k".to_string(), "v".to_string())].into(),
        binary_data: [("b".to_string(), vec![0u8, 1, 2])].into(),
        ..Default::default()
    };
    let body = envelope("v1", "ConfigMap", cm.encode_to_vec());
    let (code, resp) = raw(
        &s.client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        PROTOBUF,
        body,
    )
    .await;
    assert_eq!(code, 201, "{resp}");
    let api: Api<ConfigMap> = s.default_ns();
    let got = api.get("from-proto").await.unwrap();
    assert_eq!(got.data.unwrap()["k"], "v");
    assert_eq!(got.binary_data.unwrap()["b"].0, vec![0u8, 1, 2]);
    assert_eq!(got.metadata.labels.unwrap()["app"], "x");
}

#[tokio::test]
async fn garbage_protobuf_is_400() {
    let s = TestServer::start().await;
    let (code, body) = raw(
        &s.client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        PROTOBUF,
        b"k8s\0\xff\xff\xff".to_vec(),
    )
    .await;
    assert_status_body(code, &body, 400, "BadRequest");
    let (code, body) = raw(
        &s.client,
        "POST",
        "/api/v1/namespaces/default/configmaps",
        PROTOBUF,
        b"not even the magic".to_vec(),
    )
    .await;
    assert_status_body(code, &body, 400, "BadRequest");
}
