//! The gRPC server: TLS, the authenticated `ClusterService`, health and reflection.
//!
//! [`serve`] takes its listener and shutdown future as parameters (linkerd's shape), so a
//! caller decides where to bind and when to stop.

use std::time::Duration;

use fledge_core::proto::v1::cluster_service_server::ClusterServiceServer;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::api::ClusterApi;
use crate::api::auth::Tokens;
use crate::tls::ServerTls;

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

/// Serves until `shutdown` completes, then drains in-flight calls for at most
/// [`DRAIN_GRACE`] (watch streams end at once).
///
/// # Errors
/// The TLS material is unusable or the listener fails.
pub async fn serve(
    listener: TcpListener,
    tls: &ServerTls,
    tokens: Tokens,
    client: kube::Client,
    call_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let identity = Identity::from_pem(&tls.cert_pem, &tls.key_pem.0);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
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
    let server = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(identity))?
        // Every call has a deadline even if the client set none.
        .timeout(Duration::from_secs(60))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(authenticated)
        .serve_with_incoming_shutdown(incoming, signal);
    tokio::select! {
        result = server => result?,
        () = drain_deadline => {
            tracing::warn!(grace_seconds = DRAIN_GRACE.as_secs(), "Dropping calls still running after the drain grace period");
        }
    }
    Ok(())
}
