//! Hosting clusters: one process serves the API of many simulated clusters, each on its own
//! HTTPS endpoint with its own CA, credentials, object store and resourceVersion sequence.
//!
//! [`Sim`] owns the clusters; [`ClusterHandle`] is one cluster (its [`ApiServer`], endpoint,
//! kubeconfigs and the outage knob [`ClusterHandle::stop_serving`]). [`HttpsEndpoint`] is the
//! serving machinery underneath, generic over a [`Handler`]: TLS (rustls, ALPN `h2` and
//! `http/1.1`), authentication (bearer token or verified client certificate, else 401) and HTTP/1.1
//! plus HTTP/2 through hyper-util's auto builder.
//!
//! # Persistence
//! With a state directory, each cluster keeps its CA, admin token and ServiceAccount token signing
//! key in `<state-dir>/pki/<cluster>/`, so a restarted process presents the same CA and accepts
//! the same admin token. Objects live in memory only.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use ring::rand::{SecureRandom as _, SystemRandom};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::api_server::{
    ApiServer, ApiServerConfig, DEFAULT_MAX_OBJECT_BYTES, DEFAULT_WATCH_HISTORY,
};
use crate::auth::{ADMIN_USER, AuthError, Authenticator, UserInfo};
use crate::kubeconfig::{Credentials, Kubeconfig};
use crate::tls::{ClusterCa, TlsError, write_private};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long open connections get to finish (a watch ends only when its server shuts down) when an
/// endpoint stops, before they are cut.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Errors hosting a cluster.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// Creating the cluster's certificates or TLS configuration failed.
    #[error("cluster {cluster}: {source}")]
    Tls {
        /// The cluster.
        cluster: String,
        /// The TLS error.
        #[source]
        source: TlsError,
    },
    /// The listener could not be bound.
    #[error("cluster {cluster}: binding {addr}: {source}")]
    Bind {
        /// The cluster.
        cluster: String,
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Reading persisted credentials failed.
    #[error("cluster {cluster}: reading {path}: {source}")]
    Io {
        /// The cluster.
        cluster: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A cluster of that name is already hosted.
    #[error("cluster {0} already exists")]
    ClusterExists(String),
    /// The ServiceAccount to make a kubeconfig for does not exist.
    #[error("cluster {cluster}: serviceaccount {namespace}/{name} not found")]
    ServiceAccountNotFound {
        /// The cluster.
        cluster: String,
        /// The ServiceAccount's namespace.
        namespace: String,
        /// The ServiceAccount's name.
        name: String,
    },
    /// Minting a token failed.
    #[error("cluster {cluster}: {source}")]
    Auth {
        /// The cluster.
        cluster: String,
        /// The authenticator error.
        #[source]
        source: AuthError,
    },
    /// The system random number generator failed.
    #[error("generating random credentials failed")]
    Random,
}

/// Serves authenticated requests; [`ApiServer`] is the implementation that matters, tests may
/// plug in simpler ones.
pub trait Handler: Send + Sync + 'static {
    /// The response body.
    type Body: hyper::body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + 'static;

    /// Answers `req` on behalf of `user`, who has already been authenticated.
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        user: UserInfo,
    ) -> impl Future<Output = Response<Self::Body>> + Send + 'static;
}

impl Handler for ApiServer {
    type Body = crate::http::BoxBody;

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        user: UserInfo,
    ) -> Response<Self::Body> {
        ApiServer::handle(&self, req, user).await
    }
}

/// What every connection of an endpoint shares.
struct ConnectionContext<H> {
    cluster: String,
    acceptor: TlsAcceptor,
    authenticator: Arc<Authenticator>,
    handler: Arc<H>,
}

/// A running accept loop.
struct Serving {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// An HTTPS endpoint on a fixed address that authenticates each request and hands it to a
/// [`Handler`]. It can stop serving and start again on the same port (an API outage).
pub struct HttpsEndpoint<H> {
    addr: SocketAddr,
    context: Arc<ConnectionContext<H>>,
    grace: Duration,
    serving: tokio::sync::Mutex<Option<Serving>>,
}

impl<H: Handler> HttpsEndpoint<H> {
    /// Binds `listen` (port 0 picks a free port, which is then kept across restarts) and starts
    /// serving.
    ///
    /// # Errors
    /// If the address cannot be bound.
    pub async fn bind(
        cluster: &str,
        listen: SocketAddr,
        tls: Arc<rustls::ServerConfig>,
        authenticator: Arc<Authenticator>,
        handler: Arc<H>,
        grace: Duration,
    ) -> Result<Self, SimError> {
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| SimError::Bind {
                cluster: cluster.to_owned(),
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| SimError::Bind {
            cluster: cluster.to_owned(),
            addr: listen,
            source,
        })?;
        let context = Arc::new(ConnectionContext {
            cluster: cluster.to_owned(),
            acceptor: TlsAcceptor::from(tls),
            authenticator,
            handler,
        });
        let endpoint = HttpsEndpoint {
            addr,
            context,
            grace,
            serving: tokio::sync::Mutex::new(None),
        };
        *endpoint.serving.lock().await = Some(endpoint.spawn(listener));
        Ok(endpoint)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the endpoint is accepting connections.
    pub async fn is_serving(&self) -> bool {
        self.serving.lock().await.is_some()
    }

    /// Closes the listener and shuts connections down: idle ones at once, busy ones after their
    /// response or, for responses that do not end (watches), after the grace period. Returns
    /// once everything is closed; does nothing if already stopped.
    pub async fn stop(&self) {
        let mut serving = self.serving.lock().await;
        if let Some(Serving { stop, task }) = serving.take() {
            stop.send_replace(true);
            if let Err(err) = task.await {
                warn!(cluster = %self.context.cluster, error = %err, "Accept loop ended abnormally");
            }
            info!(cluster = %self.context.cluster, addr = %self.addr, "Stopped serving");
        }
    }

    /// Listens again on the same address; does nothing if already serving.
    ///
    /// # Errors
    /// If the port cannot be bound again (another process took it meanwhile).
    pub async fn start(&self) -> Result<(), SimError> {
        let mut serving = self.serving.lock().await;
        if serving.is_none() {
            let listener = TcpListener::bind(self.addr)
                .await
                .map_err(|source| SimError::Bind {
                    cluster: self.context.cluster.clone(),
                    addr: self.addr,
                    source,
                })?;
            *serving = Some(self.spawn(listener));
        }
        Ok(())
    }

    fn spawn(&self, listener: TcpListener) -> Serving {
        let (stop, stop_rx) = watch::channel(false);
        let span = info_span!("endpoint", cluster = %self.context.cluster, addr = %self.addr);
        info!(parent: &span, "Serving");
        let task = tokio::spawn(
            accept_loop(listener, self.context.clone(), stop_rx, self.grace).instrument(span),
        );
        Serving { stop, task }
    }
}

impl<H> Drop for HttpsEndpoint<H> {
    fn drop(&mut self) {
        // Without an owner the accept loop would run forever; stop it (connections are cut).
        if let Some(serving) = self.serving.get_mut().take() {
            serving.stop.send_replace(true);
        }
    }
}

async fn accept_loop<H: Handler>(
    listener: TcpListener,
    context: Arc<ConnectionContext<H>>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let mut connections = JoinSet::new();
    // Connections get their own receivers: `stop` itself is borrowed by the select below.
    let connection_stop = stop.clone();
    loop {
        tokio::select! {
            // Stops also when the sender is gone.
            () = stopped(&mut stop) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let span = info_span!("connection", %peer);
                    connections.spawn(
                        serve_connection(tcp, context.clone(), connection_stop.clone()).instrument(span),
                    );
                }
                Err(err) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    warn!(error = %err, "Accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        debug!(
            open = connections.len(),
            "Cutting connections still open after the grace period"
        );
        connections.shutdown().await;
    }
}

/// Resolves once `stop` is true or its sender is gone. (The guard `wait_for` returns is not
/// `Send`, so it must not live in the caller's future.)
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

async fn serve_connection<H: Handler>(
    tcp: TcpStream,
    context: Arc<ConnectionContext<H>>,
    mut stop: watch::Receiver<bool>,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, context.acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            // Includes client certificates from another CA: rejected here, before HTTP.
            debug!(error = %err, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!("TLS handshake timed out");
            return;
        }
    };
    // The verifier has checked this certificate against the cluster CA during the handshake.
    let client_cert: Option<Arc<[u8]>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|cert| Arc::from(cert.as_ref()));
    let service = service_fn(move |req: Request<Incoming>| {
        let context = context.clone();
        let client_cert = client_cert.clone();
        async move { Ok::<_, Infallible>(respond(&context, req, client_cert.as_deref()).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(err) = result {
                debug!(error = %err, "Connection ended with an error");
            }
            return;
        }
        () = stopped(&mut stop) => connection.as_mut().graceful_shutdown(),
    }
    if let Err(err) = connection.await {
        debug!(error = %err, "Connection ended with an error during shutdown");
    }
}

async fn respond<H: Handler>(
    context: &ConnectionContext<H>,
    req: Request<Incoming>,
    client_cert: Option<&[u8]>,
) -> Response<Either<Full<Bytes>, H::Body>> {
    let user = context
        .authenticator
        .authenticate(bearer_token(req.headers()), client_cert);
    match user {
        Some(user) => context
            .handler
            .clone()
            .handle(req, user)
            .await
            .map(Either::Right),
        None => {
            debug!(method = %req.method(), path = req.uri().path(), "Rejecting unauthenticated request");
            unauthorized().map(Either::Left)
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// kube-apiserver's answer to a request without valid credentials.
fn unauthorized() -> Response<Full<Bytes>> {
    let body = serde_json::json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// How to create a cluster with [`Sim::add_cluster`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The cluster's name: unique within a [`Sim`], names its kubeconfig entries and PKI directory.
    pub name: String,
    /// Where to listen; port 0 picks a free port. Default `127.0.0.1:0`.
    pub listen: SocketAddr,
    /// Past events per resource type a watch can resume from; older resourceVersions get 410 Gone.
    pub watch_history: usize,
    /// The largest object the store accepts, in bytes of JSON.
    pub max_object_bytes: usize,
    /// How long open connections may take to finish when the endpoint stops.
    pub shutdown_grace: Duration,
}

impl ClusterOptions {
    /// Defaults for a cluster named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        ClusterOptions {
            name: name.into(),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            watch_history: DEFAULT_WATCH_HISTORY,
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }

    /// Sets the listen address.
    pub fn listen(mut self, listen: SocketAddr) -> Self {
        self.listen = listen;
        self
    }

    /// Sets the watch history per resource type.
    pub fn watch_history(mut self, watch_history: usize) -> Self {
        self.watch_history = watch_history;
        self
    }
}

struct ClusterInner {
    name: String,
    ca: ClusterCa,
    api: Arc<ApiServer>,
    endpoint: HttpsEndpoint<ApiServer>,
}

/// One hosted cluster. Cheap to clone; all clones refer to the same cluster.
#[derive(Clone)]
pub struct ClusterHandle {
    inner: Arc<ClusterInner>,
}

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandle")
            .field("name", &self.inner.name)
            .field("addr", &self.inner.endpoint.addr())
            .finish()
    }
}

impl ClusterHandle {
    /// The cluster's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.endpoint.addr()
    }

    /// The API endpoint, e.g. `https://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        let mut addr = self.addr();
        // Clients cannot dial the unspecified address; the endpoint is on loopback as well.
        if addr.ip().is_unspecified() {
            addr.set_ip(Ipv4Addr::LOCALHOST.into());
        }
        format!("https://{addr}")
    }

    /// The cluster CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        self.inner.ca.cert_pem()
    }

    /// The cluster's API server, for in-process access to its objects.
    pub fn api(&self) -> Arc<ApiServer> {
        self.inner.api.clone()
    }

    /// The cluster's authenticator (admin token, ServiceAccount token minting).
    pub fn authenticator(&self) -> &Arc<Authenticator> {
        self.inner.api.authenticator()
    }

    fn kubeconfig(
        &self,
        user_name: String,
        credentials: Credentials,
        namespace: Option<String>,
    ) -> Kubeconfig {
        Kubeconfig {
            cluster_name: self.inner.name.clone(),
            user_name,
            server: self.endpoint(),
            ca_pem: self.ca_pem().to_owned(),
            credentials,
            namespace,
        }
    }

    /// A kubeconfig for the admin (bearer token; `system:masters`).
    pub fn admin_kubeconfig(&self) -> Kubeconfig {
        let token = self.authenticator().admin_token().to_owned();
        self.kubeconfig(ADMIN_USER.to_owned(), Credentials::Token(token), None)
    }

    /// A kubeconfig that authenticates as the ServiceAccount `namespace/name` with a fresh token
    /// that does not expire; deleting the ServiceAccount revokes it.
    ///
    /// # Errors
    /// [`SimError::ServiceAccountNotFound`] if the ServiceAccount does not exist.
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Kubeconfig, SimError> {
        let uid = self
            .inner
            .api
            .service_account_uid(namespace, name)
            .ok_or_else(|| SimError::ServiceAccountNotFound {
                cluster: self.inner.name.clone(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })?;
        let token = self
            .authenticator()
            .mint_service_account_token(namespace, name, &uid, &[], None)
            .map_err(|source| SimError::Auth {
                cluster: self.inner.name.clone(),
                source,
            })?;
        Ok(self.kubeconfig(
            format!("system:serviceaccount:{namespace}:{name}"),
            Credentials::Token(token),
            Some(namespace.to_owned()),
        ))
    }

    /// A kubeconfig with a client certificate signed by the cluster CA for `user` in `groups`
    /// (CN = user, O = groups), the way CAPI's `<cluster>-kubeconfig` Secrets authenticate.
    ///
    /// # Errors
    /// If the certificate cannot be issued (more than two groups; see [`ClusterCa::issue_client_cert`]).
    pub fn client_cert_kubeconfig(
        &self,
        user: &str,
        groups: &[String],
    ) -> Result<Kubeconfig, SimError> {
        let cert = self
            .inner
            .ca
            .issue_client_cert(user, groups)
            .map_err(|source| SimError::Tls {
                cluster: self.inner.name.clone(),
                source,
            })?;
        Ok(self.kubeconfig(
            user.to_owned(),
            Credentials::ClientCertificate {
                cert_pem: cert.cert_pem,
                key_pem: cert.key_pem,
            },
            None,
        ))
    }

    /// Closes the listener and the open connections: clients see connection refused until
    /// [`ClusterHandle::start_serving`]. The cluster's state is untouched.
    pub async fn stop_serving(&self) {
        self.inner.endpoint.stop().await;
    }

    /// Listens again on the same port after [`ClusterHandle::stop_serving`].
    ///
    /// # Errors
    /// If the port cannot be bound again.
    pub async fn start_serving(&self) -> Result<(), SimError> {
        self.inner.endpoint.start().await
    }

    /// Whether the cluster is accepting connections.
    pub async fn is_serving(&self) -> bool {
        self.inner.endpoint.is_serving().await
    }

    /// Stops the API server's background work and ends its watches, then stops serving.
    async fn shutdown(&self) {
        // Ending the watches first lets their connections close gracefully within the grace period.
        self.inner.api.shutdown();
        self.inner.endpoint.stop().await;
    }
}

/// The host of all simulated clusters in this process.
#[derive(Default)]
pub struct Sim {
    state_dir: Option<PathBuf>,
    clusters: Mutex<BTreeMap<String, ClusterHandle>>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("state_dir", &self.state_dir)
            .field("clusters", &self.lock().keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Sim {
    /// A sim whose clusters' credentials live only in memory.
    pub fn in_memory() -> Self {
        Sim::default()
    }

    /// A sim that keeps each cluster's CA and tokens in `<state_dir>/pki/<cluster>/`.
    pub fn with_state_dir(state_dir: impl Into<PathBuf>) -> Self {
        Sim {
            state_dir: Some(state_dir.into()),
            clusters: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, ClusterHandle>> {
        // The map stays consistent even if a holder panicked: every update is a single insert/remove.
        self.clusters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Creates a cluster and starts serving its API.
    ///
    /// # Errors
    /// If the name is taken, its credentials cannot be created or loaded, or the address cannot
    /// be bound.
    pub async fn add_cluster(&self, options: ClusterOptions) -> Result<ClusterHandle, SimError> {
        let name = options.name.clone();
        if self.lock().contains_key(&name) {
            return Err(SimError::ClusterExists(name));
        }
        let tls_error = |source| SimError::Tls {
            cluster: name.clone(),
            source,
        };
        let (ca, admin_token, signing_key) = match &self.state_dir {
            Some(dir) => {
                let pki = dir.join("pki").join(&name);
                let ca = ClusterCa::load_or_generate(&pki).map_err(tls_error)?;
                let admin_token = load_or_generate_secret(&name, &pki.join("admin.token"))?;
                let signing_key = load_or_generate_secret(&name, &pki.join("sa-signing.key"))?;
                (ca, admin_token, signing_key)
            }
            None => (
                ClusterCa::generate().map_err(tls_error)?,
                random_secret()?,
                random_secret()?,
            ),
        };
        let serving_cert = ca.issue_server_cert().map_err(tls_error)?;
        let tls = ca.server_config(&serving_cert).map_err(tls_error)?;
        let authenticator = Arc::new(Authenticator::new(admin_token, signing_key.as_bytes()));
        let api = ApiServer::new(ApiServerConfig {
            name: name.clone(),
            watch_history: options.watch_history,
            max_object_bytes: options.max_object_bytes,
            authenticator: authenticator.clone(),
        });
        api.set_ca_pem(ca.cert_pem());
        let endpoint = HttpsEndpoint::bind(
            &name,
            options.listen,
            tls,
            authenticator,
            api.clone(),
            options.shutdown_grace,
        )
        .await?;
        let handle = ClusterHandle {
            inner: Arc::new(ClusterInner {
                name: name.clone(),
                ca,
                api,
                endpoint,
            }),
        };
        let mut clusters = self.lock();
        if clusters.contains_key(&name) {
            // Lost a race with a concurrent add of the same name; dropping the handle stops it.
            return Err(SimError::ClusterExists(name));
        }
        clusters.insert(name, handle.clone());
        Ok(handle)
    }

    /// The cluster named `name`, if hosted.
    pub fn cluster(&self, name: &str) -> Option<ClusterHandle> {
        self.lock().get(name).cloned()
    }

    /// All hosted clusters, by name.
    pub fn clusters(&self) -> Vec<ClusterHandle> {
        self.lock().values().cloned().collect()
    }

    /// Shuts a cluster down and forgets it, including its persisted credentials (a new cluster
    /// of the same name gets a new CA, as a recreated cluster would). Returns whether it existed.
    ///
    /// # Errors
    /// If its PKI directory exists but cannot be removed.
    pub async fn remove_cluster(&self, name: &str) -> Result<bool, SimError> {
        let Some(handle) = self.lock().remove(name) else {
            return Ok(false);
        };
        handle.shutdown().await;
        if let Some(dir) = &self.state_dir {
            let pki = dir.join("pki").join(name);
            match std::fs::remove_dir_all(&pki) {
                Ok(()) => {}
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(SimError::Io {
                        cluster: name.to_owned(),
                        path: pki,
                        source,
                    });
                }
            }
        }
        Ok(true)
    }

    /// Shuts every cluster down: watches end, listeners close, connections drain within their
    /// grace period. The clusters stay registered (and stopped).
    pub async fn shutdown(&self) {
        for handle in self.clusters() {
            handle.shutdown().await;
        }
    }
}

/// 32 random bytes, base64url: admin tokens and signing keys.
fn random_secret() -> Result<String, SimError> {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| SimError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

fn load_or_generate_secret(cluster: &str, path: &Path) -> Result<String, SimError> {
    match std::fs::read_to_string(path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().to_owned()),
        Ok(_) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(SimError::Io {
                cluster: cluster.to_owned(),
                path: path.to_owned(),
                source,
            });
        }
    }
    let secret = random_secret()?;
    write_private(path, secret.as_bytes()).map_err(|source| SimError::Tls {
        cluster: cluster.to_owned(),
        source,
    })?;
    Ok(secret)
}
