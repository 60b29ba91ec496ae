//! Authentication as clients see it: 401 without credentials, ServiceAccount tokens from the
//! TokenRequest API, client certificates, revocation by deleting the ServiceAccount.

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use crate::support::{TestServer, create, expect_status, from_json, wait_for};

async fn client_with(s: &TestServer, edit: impl FnOnce(&mut Config)) -> Client {
    let kc = Kubeconfig::from_yaml(&s.handle.admin_kubeconfig().to_yaml().unwrap()).unwrap();
    let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    edit(&mut config);
    Client::try_from(config).unwrap()
}

#[tokio::test]
async fn requests_without_credentials_are_401() {
    let s = TestServer::start().await;
    let anon = client_with(&s, |c| c.auth_info = Default::default()).await;
    let api: Api<ConfigMap> = Api::namespaced(anon, "default");
    expect_status(api.list(&ListParams::default()).await, 401, "Unauthorized");
    let wrong = client_with(&s, |c| {
        c.auth_info.token = Some("wrong-token".to_string().into())
    })
    .await;
    let api: Api<ConfigMap> = Api::namespaced(wrong, "default");
    expect_status(api.list(&ListParams::default()).await, 401, "Unauthorized");
}

#[tokio::test]
async fn token_request_tokens_authenticate_until_the_account_is_deleted() {
    let s = TestServer::start().await;
    let sas: Api<ServiceAccount> = s.default_ns();
    create(&sas, &from_json(json!({"metadata": {"name": "robot"}}))).await;
    let req: TokenRequest = from_json(json!({"spec": {"audiences": [], "expirationSeconds": 600}}));
    let tr = sas
        .create_token_request("robot", &PostParams::default(), &req)
        .await
        .unwrap();
    let token = tr.status.and_then(|st| st.token).expect("token in status");
    assert_eq!(token.split('.').count(), 3, "JWT-shaped: {token}");

    let robot = client_with(&s, |c| c.auth_info.token = Some(token.clone().into())).await;
    let api: Api<ConfigMap> = Api::namespaced(robot, "default");
    api.list(&ListParams::default())
        .await
        .expect("the ServiceAccount token authenticates");

    sas.delete("robot", &DeleteParams::default()).await.unwrap();
    wait_for("the deleted ServiceAccount's token to be rejected", async || {
        matches!(api.list(&ListParams::default()).await, Err(kube::Error::Api(s)) if s.code == 401).then_some(())
    })
    .await;
    expect_status(
        sas.create_token_request("ghost", &PostParams::default(), &req)
            .await,
        404,
        "NotFound",
    );
}

#[tokio::test]
async fn client_certificates_authenticate() {
    let s = TestServer::start().await;
    let kc = s
        .handle
        .client_cert_kubeconfig("alice", &["devs".to_string()])
        .unwrap();
    let kc = Kubeconfig::from_yaml(&kc.to_yaml().unwrap()).unwrap();
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    let alice = Client::try_from(config).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(alice, "default");
    let cm = api
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "by-alice"}})),
        )
        .await
        .unwrap();
    // The field manager defaults from the user agent, but the object is attributed to no one;
    // what matters is that the certificate was accepted.
    assert_eq!(cm.metadata.name.as_deref(), Some("by-alice"));
}
