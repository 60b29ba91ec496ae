//! The harness: one simulated cluster per test (in-process, served over HTTPS on a loopback
//! port by `kube_sim::sim::Sim`, as users get it), an admin kube-rs client, and waits with
//! deadlines.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::Status;
use kube_sim::api_server::{ApiServer, DEFAULT_WATCH_HISTORY};
use kube_sim::sim::{ClusterHandle, ClusterOptions, Sim};
use serde_json::Value;

/// The ConfigMap every namespace gets (the root CA publisher), present in every list.
pub const ROOT_CA: &str = "kube-root-ca.crt";

/// The longest any wait in this suite lasts: a safety net, not an expected duration.
pub const WAIT: Duration = Duration::from_secs(15);

/// How an individual test wants its server.
#[derive(Clone, Debug)]
pub struct Options {
    /// Watch events kept per resource type (small values force 410 Gone).
    pub watch_history: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            watch_history: DEFAULT_WATCH_HISTORY,
        }
    }
}

/// One simulated cluster serving HTTPS on a loopback port, with an admin kubeconfig for it.
pub struct TestServer {
    /// The server's in-process API (for writes and assertions that bypass HTTP).
    pub api: Arc<ApiServer>,
    /// An admin client for the server.
    pub client: Client,
    /// The simulated cluster (kubeconfigs for other identities, stop/start serving).
    pub handle: ClusterHandle,
    kubeconfig: PathBuf,
    _sim: Sim,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// A server with default options.
    pub async fn start() -> TestServer {
        TestServer::start_with(Options::default()).await
    }

    /// A server with the given options.
    pub async fn start_with(opts: Options) -> TestServer {
        let sim = Sim::in_memory();
        let handle = sim
            .add_cluster(ClusterOptions::new("conformance").watch_history(opts.watch_history))
            .await
            .expect("start a simulated cluster");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        handle
            .admin_kubeconfig()
            .write_atomic(&kubeconfig)
            .expect("write kubeconfig");
        let client = client_for(&kubeconfig).await;
        TestServer {
            api: handle.api(),
            client,
            handle,
            kubeconfig,
            _sim: sim,
            _dir: dir,
        }
    }

    /// Closes the listener and every open connection (watches end); the store lives on.
    pub async fn stop_serving(&mut self) {
        self.handle.stop_serving().await;
    }

    /// Serves again on the same address.
    pub async fn start_serving(&mut self) {
        self.handle.start_serving().await.expect("serve again");
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A new client with its own connection pool (e.g. a second leader-election candidate).
    pub async fn new_client(&self) -> Client {
        client_for(&self.kubeconfig).await
    }

    /// A namespaced API in `default`.
    pub fn default_ns<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), "default")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Ends background tasks and watches; dropping the Sim closes the listener.
        self.api.shutdown();
    }
}

async fn client_for(kubeconfig: &Path) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kubeconfig to config");
    Client::try_from(config).expect("client")
}

/// Polls `check` until it returns `Some`, failing the test after [`WAIT`] with `what`.
pub async fn wait_for<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
}

/// Awaits `fut` for at most [`WAIT`], failing the test with `what`.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after {WAIT:?} waiting for {what}"),
    }
}

/// The API error of a failed call (fails the test if the call succeeded).
#[track_caller]
pub fn api_error<T: Debug>(result: kube::Result<T>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error Status, got {other:?}"),
    }
}

/// Asserts that `result` failed with HTTP `code` and Status `reason`; returns the Status.
#[track_caller]
pub fn expect_status<T: Debug>(result: kube::Result<T>, code: u16, reason: &str) -> Box<Status> {
    let status = api_error(result);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (code, reason),
        "unexpected status: {status:?}"
    );
    status
}

/// The `field`s of a Status's causes.
pub fn cause_fields(status: &Status) -> Vec<String> {
    status
        .details
        .as_ref()
        .map(|d| d.causes.iter().map(|c| c.field.clone()).collect())
        .unwrap_or_default()
}

/// Sends a raw request and returns its HTTP status and body parsed as JSON (Null if not JSON).
pub async fn raw(
    client: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: impl Into<Vec<u8>>,
) -> (u16, Value) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::ACCEPT, "application/json")
        .body(kube::client::Body::from(body.into()))
        .expect("request");
    let resp = client.send(req).await.expect("send raw request");
    let code = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .expect("read body")
        .to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Asserts `body` is a Failure Status with `code` and `reason`.
#[track_caller]
pub fn assert_status_body(http_code: u16, body: &Value, code: u16, reason: &str) {
    assert_eq!(http_code, code, "HTTP status; body: {body}");
    assert_eq!(body["kind"], "Status", "body is a Status: {body}");
    assert_eq!(body["apiVersion"], "v1", "Status apiVersion: {body}");
    assert_eq!(body["status"], "Failure", "Status.status: {body}");
    assert_eq!(body["code"], code, "Status.code: {body}");
    assert_eq!(body["reason"], reason, "Status.reason: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "Status.message: {body}"
    );
}

/// Creates `obj` (any type) through `api`, failing the test on error.
pub async fn create<K>(api: &Api<K>, obj: &K) -> K
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + Debug,
{
    api.create(&PostParams::default(), obj)
        .await
        .expect("create")
}

/// Builds a typed object from JSON.
#[track_caller]
pub fn from_json<K: serde::de::DeserializeOwned>(v: Value) -> K {
    serde_json::from_value(v).expect("valid object JSON")
}
