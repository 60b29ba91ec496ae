//! Discovery through kube-rs (legacy and aggregated), and the per-namespace objects every
//! cluster maintains (root CA ConfigMap, default and token Secrets of ServiceAccounts).

use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{Api, GroupVersionKind};
use kube::discovery::{self, Discovery, Scope, verbs};
use serde_json::json;

use crate::controller::install_crd;
use crate::crd::gadget_crd;
use crate::support::{ROOT_CA, TestServer, create, from_json, wait_for};

async fn check(d: &Discovery) {
    let (ar, caps) = d
        .resolve_gvk(&GroupVersionKind::gvk("apps", "v1", "Deployment"))
        .expect("Deployment discovered");
    assert_eq!(ar.plural, "deployments");
    assert!(matches!(caps.scope, Scope::Namespaced));
    for verb in [
        verbs::CREATE,
        verbs::GET,
        verbs::LIST,
        verbs::WATCH,
        verbs::PATCH,
        verbs::DELETE_COLLECTION,
    ] {
        assert!(
            caps.supports_operation(verb),
            "deployments support {verb}: {:?}",
            caps.operations
        );
    }
    let subs: Vec<_> = caps
        .subresources
        .iter()
        .map(|(r, _)| r.plural.clone())
        .collect();
    assert!(
        subs.iter().any(|s| s == "status") && subs.iter().any(|s| s == "scale"),
        "{subs:?}"
    );
    let (_, ns_caps) = d
        .resolve_gvk(&GroupVersionKind::gvk("", "v1", "Namespace"))
        .expect("Namespace discovered");
    assert!(matches!(ns_caps.scope, Scope::Cluster));
    let (gadgets, caps) = d
        .resolve_gvk(&GroupVersionKind::gvk(crate::crd::GROUP, "v1", "Gadget"))
        .expect("the CRD's kind discovered");
    assert_eq!(gadgets.plural, "gadgets");
    assert!(caps.subresources.iter().any(|(r, _)| r.plural == "scale"));
}

#[tokio::test]
async fn kube_discovery_finds_builtins_and_crds() {
    let s = TestServer::start().await;
    install_crd(&s.client, &gadget_crd()).await;
    check(&Discovery::new(s.client.clone()).run().await.unwrap()).await;
    check(
        &Discovery::new(s.client.clone())
            .run_aggregated()
            .await
            .unwrap(),
    )
    .await;
    let (ar, _) = discovery::pinned_kind(
        &s.client,
        &GroupVersionKind::gvk("coordination.k8s.io", "v1", "Lease"),
    )
    .await
    .unwrap();
    assert_eq!(ar.plural, "leases");
    let apps = discovery::group(&s.client, "apps").await.unwrap();
    assert_eq!(apps.preferred_version_or_latest(), "v1");
}

#[tokio::test]
async fn namespaces_get_root_ca_and_default_service_account() {
    let s = TestServer::start().await;
    let nss: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(s.client.clone());
    create(&nss, &from_json(json!({"metadata": {"name": "fresh"}}))).await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "fresh");
    let ca = wait_for("the root CA ConfigMap", async || {
        cms.get_opt(ROOT_CA).await.unwrap()
    })
    .await;
    assert_eq!(
        ca.data.unwrap()["ca.crt"].trim(),
        s.handle.ca_pem().trim(),
        "it carries the cluster CA"
    );
    let sas: Api<ServiceAccount> = Api::namespaced(s.client.clone(), "fresh");
    wait_for("the default ServiceAccount", async || {
        sas.get_opt("default").await.unwrap()
    })
    .await;
}

#[tokio::test]
async fn service_account_token_secrets_are_populated() {
    let s = TestServer::start().await;
    let sas: Api<ServiceAccount> = s.default_ns();
    create(&sas, &from_json(json!({"metadata": {"name": "legacy"}}))).await;
    let secrets: Api<Secret> = s.default_ns();
    create(
        &secrets,
        &from_json(json!({
            "metadata": {"name": "legacy-token", "annotations": {"kubernetes.io/service-account.name": "legacy"}},
            "type": "kubernetes.io/service-account-token"
        })),
    )
    .await;
    let secret = wait_for("the token controller to fill the Secret", async || {
        secrets
            .get("legacy-token")
            .await
            .unwrap()
            .data
            .filter(|d| d.contains_key("token"))
    })
    .await;
    assert_eq!(secret["namespace"].0, b"default");
    assert!(String::from_utf8_lossy(&secret["ca.crt"].0).contains("BEGIN CERTIFICATE"));
    let token = String::from_utf8(secret["token"].0.clone()).unwrap();
    assert_eq!(token.split('.').count(), 3, "JWT-shaped token");
    // The token authenticates as the ServiceAccount.
    let kc = kube::config::Kubeconfig::from_yaml(&s.handle.admin_kubeconfig().to_yaml().unwrap())
        .unwrap();
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    config.auth_info.token = Some(token.into());
    let client = kube::Client::try_from(config).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.list(&Default::default())
        .await
        .expect("the legacy token authenticates");
    let uid = sas.get("legacy").await.unwrap().metadata.uid;
    let annotations = secrets
        .get("legacy-token")
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap();
    assert_eq!(
        annotations.get("kubernetes.io/service-account.uid"),
        uid.as_ref()
    );
}
