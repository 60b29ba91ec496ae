//! `AgentService`: the manager's side of the agent stream (`proto/fledge/v1/agent_service.proto`).
//!
//! # Shape
//! - Identity comes only from the TLS peer: the leaf certificate verified against the manager
//!   CA, its URI SAN `fledge://cluster/<ns>/<name>/<uid>` ([`identity`]).
//! - One task per stream ([`session`]); the replica holds at most one stream per cluster
//!   ([`registry`]), a newer one replacing an older one.
//! - One watcher per replica over every WorkloadCluster and ClusterProfile ([`watch`]) wakes
//!   the stream of a changed cluster, which pushes a `SpecUpdate` when the combined generation
//!   ([`fledge_core::names::spec_generation`]) exceeds what the agent has.
//! - The stream writes the status fields it owns with JSON merge patches, only when they
//!   changed ([`status`]).

mod identity;
mod registry;
mod session;
mod status;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use fledge_core::proto::v1::agent_message::Message as AgentMsg;
use fledge_core::proto::v1::agent_service_server::AgentService;
use fledge_core::proto::v1::{AgentMessage, ManagerMessage};
use fledge_core::spec::WorkloadCluster;
use kube::{Api, ResourceExt};
use tokio::sync::{mpsc, watch as tokio_watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::ca::Ca;
use registry::Registry;

pub use watch::Stores;

/// Heartbeat interval of the stream, both ways (the protocol's constant).
pub const HEARTBEAT_INTERVAL: Duration = fledge_core::names::AGENT_HEARTBEAT_INTERVAL;
/// Missed heartbeats after which the peer is dead.
pub const MISSED_HEARTBEATS: u32 = fledge_core::names::AGENT_MISSED_HEARTBEATS;
/// How often `status.agent.lastSeen` is refreshed while nothing else is written.
pub const LAST_SEEN_REFRESH: Duration = Duration::from_secs(5 * 60);
/// How long an agent may take to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// Messages queued towards one agent; the stream waits (backpressure) beyond it.
const OUTBOUND_BUFFER: usize = 8;

/// Settings of the AgentService.
#[derive(Debug, Clone)]
pub struct Config {
    /// Validity of the certificates issued on renewal.
    pub cert_validity: Duration,
    /// Renew when the agent's certificate expires within this; `None`: the last third of the
    /// certificate's own validity.
    pub cert_renew_before: Option<Duration>,
    /// This replica's identity, written to `status.agent.replica`.
    pub replica: String,
    /// Deadline of each call to the management cluster.
    pub call_timeout: Duration,
    /// Heartbeat interval ([`HEARTBEAT_INTERVAL`]; shorter in tests only).
    pub heartbeat_interval: Duration,
}

/// How many management-cluster calls the streams of one replica make at once. kube's client
/// speaks HTTP/1.1 to the API server, so every concurrent call holds a connection of its own
/// (and the pool keeps it): without a cap, a thousand agents connecting at once open about a
/// thousand connections and keep them. The calls are small; a queue of them drains fast.
const MAX_CONCURRENT_API_CALLS: usize = 32;

/// State shared by every stream of the replica.
struct Shared {
    client: kube::Client,
    /// Permits for management-cluster calls ([`MAX_CONCURRENT_API_CALLS`]).
    api_calls: tokio::sync::Semaphore,
    ca: Option<Arc<Ca>>,
    config: Config,
    registry: Arc<Registry>,
    stores: Stores,
    stop: tokio_watch::Receiver<bool>,
}

/// The `AgentService` implementation.
#[derive(Clone)]
pub struct AgentApi {
    shared: Arc<Shared>,
}

impl AgentApi {
    /// Creates the service and the future that runs its watcher (spawn it once per replica).
    /// Streams end with a GoAway when `stop` turns true.
    pub fn new(
        client: kube::Client,
        ca: Option<Arc<Ca>>,
        config: Config,
        stop: tokio_watch::Receiver<bool>,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let registry = Arc::new(Registry::default());
        let (stores, watcher) = watch::start(client.clone(), registry.clone());
        let api = Self {
            shared: Arc::new(Shared {
                client,
                api_calls: tokio::sync::Semaphore::new(MAX_CONCURRENT_API_CALLS),
                ca,
                config,
                registry,
                stores,
                stop,
            }),
        };
        (api, watcher)
    }
}

/// Reads the caller's identity from its verified client certificate.
#[allow(clippy::result_large_err)]
fn peer_identity<T>(request: &Request<T>) -> Result<identity::AgentIdentity, Status> {
    let certs = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated("AgentService needs a client certificate issued by the manager CA")
    })?;
    let leaf = certs.first().ok_or_else(|| {
        Status::unauthenticated("AgentService needs a client certificate issued by the manager CA")
    })?;
    identity::from_der(leaf.as_ref()).map_err(|err| Status::unauthenticated(err.to_string()))
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    type SessionStream = ReceiverStream<Result<ManagerMessage, Status>>;

    async fn session(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let shared = &self.shared;
        if shared.ca.is_none() {
            return Err(Status::unauthenticated(
                "this manager has no agent CA (start it with --tls-dir)",
            ));
        }
        let id = peer_identity(&request)?;
        let span = tracing::info_span!(
            "agent_session",
            cluster = %format!("{}/{}", id.namespace, id.name),
            phase = tracing::field::Empty,
        );
        async move {
            let mut inbound = request.into_inner();
            let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
                .await
                .map_err(|_| Status::deadline_exceeded("no Hello within 30 s"))??;
            let hello = match first.and_then(|m| m.message) {
                Some(AgentMsg::Hello(hello)) => hello,
                _ => {
                    return Err(Status::invalid_argument(
                        "the first message must be a Hello",
                    ));
                }
            };
            let named = hello
                .cluster
                .as_ref()
                .ok_or_else(|| Status::invalid_argument("Hello.cluster is required"))?;
            if named.namespace != id.namespace
                || named.name != id.name
                || (!named.uid.is_empty() && named.uid != id.uid)
            {
                tracing::warn!(
                    hello_cluster = %format!("{}/{}", named.namespace, named.name),
                    "Rejecting a Hello for another cluster than the certificate's"
                );
                return Err(Status::permission_denied(
                    "the Hello names another cluster than the client certificate",
                ));
            }
            // Authoritative read (not the cache): a cluster deleted and recreated under the
            // same name must not accept the old certificate, however far the cache lags.
            let api: Api<WorkloadCluster> = Api::namespaced(shared.client.clone(), &id.namespace);
            let permit = shared.api_calls.acquire().await.ok();
            let cluster = tokio::time::timeout(shared.config.call_timeout, api.get_opt(&id.name))
                .await
                .map_err(|_| Status::unavailable("the management cluster did not answer"))?
                .map_err(|err| {
                    tracing::warn!(%err, "Reading the WorkloadCluster of an agent");
                    Status::unavailable("cannot read the WorkloadCluster")
                })?
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "WorkloadCluster {}/{} not found",
                        id.namespace, id.name
                    ))
                })?;
            drop(permit);
            if cluster.uid().as_deref() != Some(id.uid.as_str()) {
                tracing::warn!(
                    "Rejecting a certificate issued for an earlier cluster of the same name"
                );
                return Err(Status::permission_denied(
                    "the client certificate was issued for an earlier cluster of this name",
                ));
            }
            // The profile's generation comes from the cache: wait for its first list so a
            // reconnecting agent is not sent a spurious update computed without it.
            let ready = shared.stores.wait_ready();
            if !matches!(tokio::time::timeout(HELLO_TIMEOUT, ready).await, Ok(true)) {
                return Err(Status::unavailable(
                    "the manager's caches are not ready yet",
                ));
            }
            let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
            let session =
                session::Session::start(self.shared.clone(), id, &hello, &cluster, api, tx);
            tokio::spawn(session.run(inbound).in_current_span());
            Ok(Response::new(ReceiverStream::new(rx)))
        }
        .instrument(span)
        .await
    }
}
