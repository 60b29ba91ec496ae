//! The gRPC server: TLS, the authenticated `ClusterService`, the `AgentService` (mTLS), health
//! and reflection.
//!
//! One port for both APIs: TLS asks for a client certificate but does not require one
//! (rustls' `WebPkiClientVerifier` with unauthenticated clients allowed, through tonic). A
//! certificate that is presented must chain to the manager CA, else the handshake fails;
//! ClusterService ignores certificates and checks bearer tokens, AgentService requires one.
//!
//! [`serve`] takes its listener and shutdown future as parameters (linkerd's shape), so a
//! caller decides where to bind and when to stop.

use std::time::Duration;

use fledge_core::proto::v1::agent_service_server::AgentServiceServer;
use fledge_core::proto::v1::cluster_service_server::ClusterServiceServer;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::agent_service::{self, AgentApi};
use crate::api::ClusterApi;
use crate::api::auth::{self, Tokens};
use crate::tls::ServerTls;

/// Where the reloadable bearer tokens live: `serve --tokens-secret NAMESPACE/NAME`.
#[derive(Debug, Clone)]
pub struct TokensSecret {
    /// Namespace of the Secret.
    pub namespace: String,
    /// Name of the Secret.
    pub name: String,
}

impl std::str::FromStr for TokensSecret {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Self {
                    namespace: namespace.to_string(),
                    name: name.to_string(),
                })
            }
            _ => Err(format!("expected NAMESPACE/NAME, got {s:?}")),
        }
    }
}

/// Largest request the server decodes; larger ones fail with OUT_OF_RANGE (tonic's code for it) before any
/// handler runs. Specs are a few KiB; 4 MiB leaves room for big inline add-on manifests.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// How long in-flight calls may take to finish after the shutdown signal.
pub const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Errors of the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// TLS or transport setup or serving failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Reflection could not load the API's descriptors.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// What the server serves with, besides its listener, TLS material and client.
#[derive(Debug)]
pub struct ServeOptions {
    /// Bearer tokens of ClusterService (the file's; the Secret's are added to them).
    pub tokens: Tokens,
    /// Secret with reloadable tokens.
    pub tokens_secret: Option<TokensSecret>,
    /// AgentService settings.
    pub agent: agent_service::Config,
    /// Deadline of each call the API makes to the management cluster.
    pub call_timeout: Duration,
}

/// Serves until `shutdown` completes, then drains in-flight calls for at most
/// [`DRAIN_GRACE`] (watch streams end at once).
///
/// # Errors
/// The TLS material is unusable or the listener fails.
pub async fn serve(
    listener: TcpListener,
    tls: &ServerTls,
    client: kube::Client,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let ServeOptions {
        tokens,
        tokens_secret,
        agent,
        call_timeout,
    } = options;
    let identity = Identity::from_pem(&tls.cert_pem, &tls.key_pem.0);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // Background tasks of the server end with it (aborted on drop).
    let mut background = tokio::task::JoinSet::new();
    if let Some(secret) = tokens_secret {
        tracing::info!(secret = %format!("{}/{}", secret.namespace, secret.name), "Loading tokens from a Secret");
        background.spawn(auth::watch_secret(
            client.clone(),
            secret.namespace,
            secret.name,
            tokens.clone(),
        ));
    }
    if tls.ca.is_none() {
        tracing::warn!("No manager CA (--tls-dir): every AgentService call is UNAUTHENTICATED");
    }
    let (agent_api, agent_watcher) =
        AgentApi::new(client.clone(), tls.ca.clone(), agent, stop_rx.clone());
    background.spawn(agent_watcher);
    let agent_service =
        AgentServiceServer::new(agent_api).max_decoding_message_size(MAX_REQUEST_BYTES);
    let cluster_service =
        ClusterServiceServer::new(ClusterApi::new(client, call_timeout, stop_rx.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES);
    let authenticated =
        InterceptedService::new(cluster_service, move |request| tokens.authenticate(request));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<ClusterServiceServer<ClusterApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(fledge_core::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;

    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let signal = async move {
        shutdown.await;
        // Load balancers and probes stop sending new calls while the old ones drain.
        health_reporter
            .set_not_serving::<ClusterServiceServer<ClusterApi>>()
            .await;
        let _ = stop_tx.send(true);
    };
    let mut stopping = stop_rx;
    let drain_deadline = async move {
        if stopping.wait_for(|stopping| *stopping).await.is_err() {
            // The sender lives until the signal fired; without it there is nothing to time.
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(DRAIN_GRACE).await;
    };
    let mut tls_config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.ca {
        tls_config = tls_config
            .client_ca_root(Certificate::from_pem(ca.cert_pem()))
            .client_auth_optional(true);
    }
    let server = Server::builder()
        .tls_config(tls_config)?
        // Every call has a deadline even if the client set none.
        .timeout(Duration::from_secs(60))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(authenticated)
        .add_service(agent_service)
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::select! {
        result = server => result?,
        () = drain_deadline => {
            tracing::warn!(grace_seconds = DRAIN_GRACE.as_secs(), "Dropping calls still running after the drain grace period");
        }
    }
    Ok(())
}
