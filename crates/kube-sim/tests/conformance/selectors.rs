//! Label selectors (every operator) and field selectors.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, ListParams};
use serde_json::json;

use crate::support::{TestServer, create, expect_status, from_json};

async fn names(api: &Api<ConfigMap>, lp: &ListParams) -> BTreeSet<String> {
    api.list(lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .filter(|n| n != crate::support::ROOT_CA)
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn label_selector_operators() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    for (name, labels) in [
        ("web-prod", json!({"app": "web", "env": "prod"})),
        ("web-dev", json!({"app": "web", "env": "dev"})),
        (
            "db-prod",
            json!({"app": "db", "env": "prod", "tier": "data"}),
        ),
        ("unlabelled", json!({})),
    ] {
        create(
            &api,
            &from_json(json!({"metadata": {"name": name, "labels": labels}})),
        )
        .await;
    }
    let cases: &[(&str, &[&str])] = &[
        ("app=web", &["web-prod", "web-dev"]),
        ("app==web", &["web-prod", "web-dev"]),
        ("app!=web", &["db-prod", "unlabelled"]),
        ("env in (prod,staging)", &["web-prod", "db-prod"]),
        ("env notin (prod)", &["web-dev", "unlabelled"]),
        ("tier", &["db-prod"]),
        ("!tier", &["web-prod", "web-dev", "unlabelled"]),
        ("app=web,env=prod", &["web-prod"]),
        ("app in (web, db),env!=dev,!tier", &["web-prod"]),
        ("app=none", &[]),
    ];
    for (sel, want) in cases {
        assert_eq!(
            names(&api, &ListParams::default().labels(sel)).await,
            set(want),
            "selector {sel:?}"
        );
    }
}

#[tokio::test]
async fn field_selectors_on_common_fields() {
    let s = TestServer::start().await;
    let nss: Api<Namespace> = Api::all(s.client.clone());
    create(&nss, &from_json(json!({"metadata": {"name": "other"}}))).await;
    let def: Api<ConfigMap> = s.default_ns();
    let other: Api<ConfigMap> = Api::namespaced(s.client.clone(), "other");
    create(&def, &from_json(json!({"metadata": {"name": "a"}}))).await;
    create(&def, &from_json(json!({"metadata": {"name": "b"}}))).await;
    create(&other, &from_json(json!({"metadata": {"name": "a"}}))).await;

    assert_eq!(
        names(&def, &ListParams::default().fields("metadata.name=a")).await,
        set(&["a"])
    );
    assert_eq!(
        names(&def, &ListParams::default().fields("metadata.name!=a")).await,
        set(&["b"])
    );
    let all: Api<ConfigMap> = Api::all(s.client.clone());
    let in_other = all
        .list(
            &ListParams::default()
                .fields("metadata.namespace=other,metadata.name!=kube-root-ca.crt"),
        )
        .await
        .unwrap();
    assert_eq!(in_other.items.len(), 1);
    assert_eq!(
        in_other.items[0].metadata.namespace.as_deref(),
        Some("other")
    );
    let both = all
        .list(&ListParams::default().fields("metadata.name=a,metadata.namespace!=kube-system"))
        .await
        .unwrap();
    assert_eq!(both.items.len(), 2);

    let secrets: Api<Secret> = s.default_ns();
    create(&secrets, &from_json(json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "stringData": {"tls.crt": "x", "tls.key": "y"}}))).await;
    create(
        &secrets,
        &from_json(json!({"metadata": {"name": "opaque"}, "stringData": {"k": "v"}})),
    )
    .await;
    let tls = secrets
        .list(&ListParams::default().fields("type=kubernetes.io/tls"))
        .await
        .unwrap();
    assert_eq!(
        tls.items
            .iter()
            .filter_map(|s| s.metadata.name.as_deref())
            .collect::<Vec<_>>(),
        ["tls"]
    );
}

#[tokio::test]
async fn unsupported_field_label_is_rejected() {
    let s = TestServer::start().await;
    let api: Api<ConfigMap> = s.default_ns();
    let st = expect_status(
        api.list(&ListParams::default().fields("data.foo=bar"))
            .await,
        400,
        "BadRequest",
    );
    assert!(
        st.message.contains("field label not supported"),
        "message: {}",
        st.message
    );
}
