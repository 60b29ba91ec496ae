//! Hosting clusters in-process: endpoints, CAs, credentials and isolation, through kube-rs.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use http_body_util::BodyExt as _;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions};
use kube::{Api, Client, Config};
use kube_sim::kubeconfig::{Credentials, Kubeconfig};
use kube_sim::sim::{ClusterHandle, ClusterOptions, Sim};
use kube_sim::tls::ClusterCa;
use serde_json::Value;

async fn kube_config(kubeconfig: &Kubeconfig) -> Config {
    let parsed = kube::config::Kubeconfig::from_yaml(&kubeconfig.to_yaml().unwrap()).unwrap();
    Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default())
        .await
        .unwrap()
}

async fn client(kubeconfig: &Kubeconfig) -> Client {
    Client::try_from(kube_config(kubeconfig).await).unwrap()
}

/// The user the cluster sees (`kubectl auth whoami`).
async fn whoami(client: &Client) -> Result<(String, Vec<String>), kube::Error> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let user = review.status.unwrap().user_info.unwrap();
    Ok((user.username.unwrap(), user.groups.unwrap_or_default()))
}

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "data": {"key": "value"},
    }))
    .unwrap()
}

/// Sends a GET of `/api/v1/namespaces` and returns the status code and the JSON body.
async fn raw_get(client: &Client) -> (u16, Value) {
    let request = http::Request::get("/api/v1/namespaces")
        .body(kube::client::Body::empty())
        .unwrap();
    let response = client.send(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn with_token(kubeconfig: &Kubeconfig, token: &str) -> Kubeconfig {
    Kubeconfig {
        credentials: Credentials::Token(token.to_owned()),
        ..kubeconfig.clone()
    }
}

async fn add(sim: &Sim, name: &str) -> ClusterHandle {
    sim.add_cluster(ClusterOptions::new(name)).await.unwrap()
}

#[tokio::test]
async fn clusters_have_their_own_endpoint_ca_and_objects() {
    let sim = Sim::in_memory();
    let a = add(&sim, "a").await;
    let b = add(&sim, "b").await;
    assert_ne!(a.endpoint(), b.endpoint());
    assert!(
        a.endpoint().starts_with("https://127.0.0.1:"),
        "{}",
        a.endpoint()
    );
    assert_ne!(a.ca_pem(), b.ca_pem());
    assert!(matches!(
        sim.add_cluster(ClusterOptions::new("a")).await,
        Err(kube_sim::sim::SimError::ClusterExists(_))
    ));

    let client_a = client(&a.admin_kubeconfig()).await;
    let client_b = client(&b.admin_kubeconfig()).await;
    Api::<ConfigMap>::default_namespaced(client_a.clone())
        .create(&PostParams::default(), &config_map("only-in-a"))
        .await
        .unwrap();
    let in_a = Api::<ConfigMap>::default_namespaced(client_a)
        .get_opt("only-in-a")
        .await
        .unwrap();
    assert!(in_a.is_some());
    let in_b = Api::<ConfigMap>::default_namespaced(client_b)
        .get_opt("only-in-a")
        .await
        .unwrap();
    assert!(in_b.is_none());

    // A's admin token, presented to B (trusting B's CA), is not B's.
    let a_token_at_b = match a.admin_kubeconfig().credentials {
        Credentials::Token(token) => with_token(&b.admin_kubeconfig(), &token),
        other => panic!("admin kubeconfig without a token: {other:?}"),
    };
    let (status, body) = raw_get(&client(&a_token_at_b).await).await;
    assert_eq!(status, 401, "{body}");
    // A's client certificate, presented to B: B's verifier does not chain it to B's CA.
    let a_cert = a.client_cert_kubeconfig("jane", &[]).unwrap();
    let a_cert_at_b = Kubeconfig {
        server: b.endpoint(),
        ca_pem: b.ca_pem().to_owned(),
        ..a_cert
    };
    let rejected = whoami(&client(&a_cert_at_b).await).await;
    assert!(
        rejected.is_err(),
        "a foreign client certificate was accepted: {rejected:?}"
    );
}

#[tokio::test]
async fn requests_without_valid_credentials_get_a_401_status() {
    let sim = Sim::in_memory();
    let cluster = add(&sim, "c").await;
    let mut anonymous = kube_config(&cluster.admin_kubeconfig()).await;
    anonymous.auth_info = AuthInfo::default();
    let (status, body) = raw_get(&Client::try_from(anonymous).unwrap()).await;
    assert_eq!(status, 401);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["status"], "Failure");
    assert_eq!(body["reason"], "Unauthorized");
    assert_eq!(body["code"], 401);

    let wrong = with_token(&cluster.admin_kubeconfig(), "not-the-token");
    let (status, body) = raw_get(&client(&wrong).await).await;
    assert_eq!(status, 401);
    assert_eq!(body["reason"], "Unauthorized");

    let (status, body) = raw_get(&client(&cluster.admin_kubeconfig()).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["kind"], "NamespaceList");
}

#[tokio::test]
async fn each_credential_authenticates_as_its_user() {
    let sim = Sim::in_memory();
    let cluster = add(&sim, "c").await;

    let admin = client(&cluster.admin_kubeconfig()).await;
    let (user, groups) = whoami(&admin).await.unwrap();
    assert_eq!(user, "admin");
    assert_eq!(groups, ["system:masters", "system:authenticated"]);

    let groups = vec!["system:masters".to_owned(), "devs".to_owned()];
    let jane = cluster.client_cert_kubeconfig("jane", &groups).unwrap();
    let (user, groups) = whoami(&client(&jane).await).await.unwrap();
    assert_eq!(user, "jane");
    assert_eq!(groups, ["system:masters", "devs", "system:authenticated"]);

    // A certificate from another CA: rejected during the handshake or answered 401.
    let foreign = ClusterCa::generate()
        .unwrap()
        .issue_client_cert("mallory", &["system:masters".to_owned()])
        .unwrap();
    let mallory = Kubeconfig {
        credentials: Credentials::ClientCertificate {
            cert_pem: foreign.cert_pem,
            key_pem: foreign.key_pem,
        },
        ..jane
    };
    let rejected = whoami(&client(&mallory).await).await;
    assert!(rejected.is_err(), "accepted: {rejected:?}");
}

#[tokio::test]
async fn service_account_kubeconfig_works_until_the_account_is_deleted() {
    let sim = Sim::in_memory();
    let cluster = add(&sim, "c").await;
    assert!(matches!(
        cluster.service_account_kubeconfig("default", "robot"),
        Err(kube_sim::sim::SimError::ServiceAccountNotFound { .. })
    ));
    let admin = client(&cluster.admin_kubeconfig()).await;
    let accounts = Api::<ServiceAccount>::namespaced(admin, "default");
    let mut account = ServiceAccount::default();
    account.metadata.name = Some("robot".to_owned());
    accounts
        .create(&PostParams::default(), &account)
        .await
        .unwrap();

    let robot = client(
        &cluster
            .service_account_kubeconfig("default", "robot")
            .unwrap(),
    )
    .await;
    let (user, groups) = whoami(&robot).await.unwrap();
    assert_eq!(user, "system:serviceaccount:default:robot");
    assert_eq!(
        groups,
        [
            "system:serviceaccounts",
            "system:serviceaccounts:default",
            "system:authenticated"
        ]
    );

    accounts
        .delete("robot", &DeleteParams::default())
        .await
        .unwrap();
    let revoked = whoami(&robot).await;
    assert!(
        matches!(&revoked, Err(kube::Error::Api(status)) if status.code == 401),
        "{revoked:?}"
    );
}

#[tokio::test]
async fn stop_serving_closes_the_port_until_started_again() {
    let sim = Sim::in_memory();
    let cluster = add(&sim, "c").await;
    let admin = client(&cluster.admin_kubeconfig()).await;
    whoami(&admin).await.unwrap();

    cluster.stop_serving().await;
    assert!(!cluster.is_serving().await);
    let refused = tokio::net::TcpStream::connect(cluster.addr()).await;
    assert!(refused.is_err(), "still accepting connections");
    // The state outlives the outage.
    cluster
        .api()
        .create_object(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "made-during-outage", "namespace": "default"},
        }))
        .unwrap();

    cluster.start_serving().await.unwrap();
    assert!(cluster.is_serving().await);
    let fresh = client(&cluster.admin_kubeconfig()).await;
    let made = Api::<ConfigMap>::default_namespaced(fresh)
        .get_opt("made-during-outage")
        .await
        .unwrap();
    assert!(made.is_some());
}

#[tokio::test]
async fn a_state_dir_keeps_ca_and_admin_token_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let first = Sim::with_state_dir(dir.path());
    let before = add(&first, "mgmt").await;
    let (ca, kubeconfig) = (before.ca_pem().to_owned(), before.admin_kubeconfig());
    first.shutdown().await;
    drop(before);
    drop(first);

    let second = Sim::with_state_dir(dir.path());
    let after = add(&second, "mgmt").await;
    assert_eq!(after.ca_pem(), ca);
    let old_token_new_port = Kubeconfig {
        server: after.endpoint(),
        ..kubeconfig
    };
    let (user, _) = whoami(&client(&old_token_new_port).await).await.unwrap();
    assert_eq!(user, "admin");

    // Removing the cluster forgets its credentials: a new cluster of that name gets a new CA.
    assert!(second.remove_cluster("mgmt").await.unwrap());
    let recreated = add(&second, "mgmt").await;
    assert_ne!(recreated.ca_pem(), ca);
}

#[tokio::test]
async fn tls_offers_http2_and_http1_by_alpn() {
    let sim = Sim::in_memory();
    let cluster = add(&sim, "c").await;
    let ca = rustls_pemfile::certs(&mut cluster.ca_pem().as_bytes())
        .next()
        .unwrap()
        .unwrap();
    for (offered, expected) in [(&b"h2"[..], &b"h2"[..]), (b"http/1.1", b"http/1.1")] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![offered.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(cluster.addr())
            .await
            .unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(expected));
    }
}
