//! The `fledge-sim serve` contract, tested against the built binary: readiness through the
//! kubeconfig file, the API through kube-rs and kubectl, authentication, persistence of the CA
//! and token, and shutdown on signals.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures::{StreamExt as _, TryStreamExt as _};
use http_body_util::BodyExt as _;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{PostParams, WatchEvent, WatchParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use kube_sim::tls::ClusterCa;
use serde_json::Value;

/// A safety net for waits; nothing here should come close to it.
const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `check` until it returns `Some`, failing with `what` after [`DEADLINE`]. The only poller:
/// a file's appearance and a process's exit cannot be watched from here.
async fn poll_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < DEADLINE, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// A running `fledge-sim serve`; killed if a test fails before terminating it.
struct SimProcess {
    child: Child,
    state_dir: PathBuf,
}

impl SimProcess {
    fn start(state_dir: &Path) -> Self {
        Self::start_with(state_dir, &[])
    }

    fn start_with(state_dir: &Path, extra: &[&str]) -> Self {
        let log = File::options()
            .create(true)
            .append(true)
            .open(state_dir.join("sim.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_fledge-sim"))
            .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state_dir)
            .args(extra)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        SimProcess {
            child,
            state_dir: state_dir.to_owned(),
        }
    }

    fn kubeconfig_path(&self) -> PathBuf {
        self.state_dir.join("kubeconfig")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("sim.log")).unwrap_or_default()
    }

    /// Waits for the kubeconfig that announces readiness.
    async fn ready(&mut self) -> Kubeconfig {
        let path = self.kubeconfig_path();
        let child = &mut self.child;
        let log_path = self.state_dir.join("sim.log");
        poll_until("the kubeconfig", || {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(&log_path).unwrap_or_default();
                panic!("fledge-sim exited early with {status}:\n{log}");
            }
            path.exists().then(|| Kubeconfig::read_from(&path).unwrap())
        })
        .await
    }

    /// Sends `signal` (`TERM`, `INT`) and waits for the process to exit.
    async fn signal(&mut self, signal: &str) -> ExitStatus {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{signal} failed");
        let child = &mut self.child;
        poll_until("fledge-sim to exit", || child.try_wait().unwrap()).await
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn client(kubeconfig: Kubeconfig) -> Client {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// The user the cluster sees (`kubectl auth whoami`).
async fn whoami(client: &Client) -> Result<(String, Vec<String>), kube::Error> {
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let user = review.status.unwrap().user_info.unwrap();
    Ok((user.username.unwrap(), user.groups.unwrap_or_default()))
}

/// GET `/api/v1/namespaces`: the status code and the JSON body.
async fn raw_get(client: &Client) -> (u16, Value) {
    let request = http::Request::get("/api/v1/namespaces")
        .body(kube::client::Body::empty())
        .unwrap();
    let response = client.send(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn with_user(kubeconfig: &Kubeconfig, user: AuthInfo) -> Kubeconfig {
    let mut changed = kubeconfig.clone();
    changed.auth_infos[0].auth_info = Some(user);
    changed
}

fn token_of(kubeconfig: &Kubeconfig) -> String {
    let user = kubeconfig.auth_infos[0].auth_info.as_ref().unwrap();
    let yaml = serde_json::to_value(user).unwrap();
    yaml["token"].as_str().unwrap().to_owned()
}

fn ca_pem_of(kubeconfig: &Kubeconfig) -> String {
    let cluster = kubeconfig.clusters[0].cluster.as_ref().unwrap();
    let data = cluster.certificate_authority_data.as_ref().unwrap();
    String::from_utf8(STANDARD.decode(data).unwrap()).unwrap()
}

fn client_cert_user(cert_pem: &str, key_pem: &str) -> AuthInfo {
    serde_json::from_value(serde_json::json!({
        "client-certificate-data": STANDARD.encode(cert_pem),
        "client-key-data": STANDARD.encode(key_pem),
    }))
    .unwrap()
}

#[tokio::test]
async fn serve_announces_a_kubeconfig_and_serves_the_management_api() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = SimProcess::start(dir.path());
    let kubeconfig = sim.ready().await;

    let cluster = kubeconfig.clusters[0].cluster.as_ref().unwrap();
    let server = cluster.server.clone().unwrap();
    let port = server
        .strip_prefix("https://127.0.0.1:")
        .unwrap_or_else(|| panic!("server is {server}"));
    assert_ne!(port.parse::<u16>().unwrap(), 0);
    let persisted_ca = std::fs::read_to_string(dir.path().join("pki/management/ca.crt")).unwrap();
    assert_eq!(ca_pem_of(&kubeconfig), persisted_ca);
    assert!(!token_of(&kubeconfig).is_empty());
    let current = kubeconfig.current_context.clone().unwrap();
    assert!(kubeconfig.contexts.iter().any(|c| c.name == current));

    let admin = client(kubeconfig).await;
    let config_maps = Api::<ConfigMap>::namespaced(admin, "default");
    let mut config_map = ConfigMap::default();
    config_map.metadata.name = Some("hello".to_owned());
    config_map.data = Some([("greeting".to_owned(), "hi".to_owned())].into());
    config_maps
        .create(&PostParams::default(), &config_map)
        .await
        .unwrap();
    let read = config_maps.get("hello").await.unwrap();
    assert_eq!(read.data.unwrap()["greeting"], "hi");

    // An open watch must not hold up shutdown.
    let mut watch = config_maps
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    let first = watch.try_next().await.unwrap();
    assert!(
        matches!(&first, Some(WatchEvent::Added(cm)) if cm.metadata.name.as_deref() == Some("hello")),
        "{first:?}"
    );

    let status = sim.signal("TERM").await;
    assert_eq!(status.code(), Some(0), "log:\n{}", sim.log());
    assert!(
        !sim.kubeconfig_path().exists(),
        "the kubeconfig outlived the server"
    );
}

#[tokio::test]
async fn serve_authenticates_tokens_and_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = SimProcess::start(dir.path());
    let kubeconfig = sim.ready().await;

    let (status, body) = raw_get(&client(with_user(&kubeconfig, AuthInfo::default())).await).await;
    assert_eq!(status, 401);
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    assert_eq!(body["code"], 401);

    let wrong: AuthInfo = serde_json::from_value(serde_json::json!({"token": "wrong"})).unwrap();
    let (status, body) = raw_get(&client(with_user(&kubeconfig, wrong)).await).await;
    assert_eq!(status, 401);
    assert_eq!(body["reason"], "Unauthorized");

    let (user, groups) = whoami(&client(kubeconfig.clone()).await).await.unwrap();
    assert_eq!(user, "admin");
    assert!(groups.iter().any(|g| g == "system:masters"), "{groups:?}");

    // A certificate signed by the cluster CA (persisted in the state dir) names its user.
    let ca = ClusterCa::load_or_generate(&dir.path().join("pki/management")).unwrap();
    let cert = ca.issue_client_cert("jane", &["devs".to_owned()]).unwrap();
    let jane = with_user(&kubeconfig, client_cert_user(&cert.cert_pem, &cert.key_pem));
    let (user, groups) = whoami(&client(jane).await).await.unwrap();
    assert_eq!(user, "jane");
    assert_eq!(groups, ["devs", "system:authenticated"]);

    let foreign = ClusterCa::generate()
        .unwrap()
        .issue_client_cert("mallory", &["system:masters".to_owned()])
        .unwrap();
    let mallory = with_user(
        &kubeconfig,
        client_cert_user(&foreign.cert_pem, &foreign.key_pem),
    );
    let rejected = whoami(&client(mallory).await).await;
    assert!(
        rejected.is_err(),
        "a foreign certificate was accepted: {rejected:?}"
    );

    assert_eq!(sim.signal("TERM").await.code(), Some(0));
}

#[tokio::test]
async fn restart_on_the_same_state_dir_keeps_ca_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = SimProcess::start(dir.path());
    let before = first.ready().await;
    assert_eq!(first.signal("TERM").await.code(), Some(0));

    let mut second =
        SimProcess::start_with(dir.path(), &["--no-controllers", "--watch-history", "5"]);
    let after = second.ready().await;
    assert_eq!(ca_pem_of(&after), ca_pem_of(&before));
    assert_eq!(token_of(&after), token_of(&before));
    // The old credentials work against the new process.
    let (user, _) = whoami(&client(after).await).await.unwrap();
    assert_eq!(user, "admin");
    assert_eq!(second.signal("TERM").await.code(), Some(0));
}

#[tokio::test]
async fn kubectl_works_against_serve_and_sigint_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = SimProcess::start(dir.path());
    sim.ready().await;
    let kubectl = |args: &[&str]| {
        let output = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(sim.kubeconfig_path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let namespaces = kubectl(&["get", "namespaces", "-o", "name"]);
    assert!(namespaces.contains("namespace/default"), "{namespaces}");
    kubectl(&["create", "configmap", "from-kubectl", "--from-literal=a=b"]);
    let value = kubectl(&[
        "get",
        "configmap",
        "from-kubectl",
        "-o",
        "jsonpath={.data.a}",
    ]);
    assert_eq!(value, "b");

    assert_eq!(sim.signal("INT").await.code(), Some(0));
}
