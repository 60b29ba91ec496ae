//! The agent's one outbound stream to the manager (`AgentService.Session`, mTLS).
//!
//! # Protocol, agent side
//! 1. Dial (unless the network file says `down`) with the client certificate; server name
//!    `localhost`. Send `Hello` (cluster from the environment, uid from the certificate's URI
//!    SAN, agent version, applied generation, status digest), then the current status once.
//! 2. `SpecUpdate`: persisted to the cache Secret first, then handed to the reconciler;
//!    `Ack{generation}` once a pass applied exactly that generation to the API (only the
//!    newest pending generation is acknowledged; for `deleting: true`, once a pass saw the
//!    flag, after which the agent no longer writes CAPI objects). The pass's status report
//!    is sent before its acknowledgement.
//! 3. `StatusReport` whenever the report's digest changes: the outbound stream pulls the newest
//!    report from a watch channel only when the transport can take a message, so reports
//!    coalesce (newest wins, at most one in flight).
//! 4. `Heartbeat` every 20 s (`names::AGENT_HEARTBEAT_INTERVAL`); a manager silent for 3 intervals is dead (the stream is dropped).
//! 5. `GoAway`: reconnect after the given delay. `CertificateRenewal`: the new certificate and
//!    key go into Secret `fledge-system/fledge-agent-identity` and are used for the next
//!    connection, which follows at once (one reconnect).
//! 6. Any other end: reconnect with exponential backoff and full jitter (cap 30 s).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use fledge_core::names;
use fledge_core::proto::v1::agent_message::Message as Out;
use fledge_core::proto::v1::agent_service_client::AgentServiceClient;
use fledge_core::proto::v1::manager_message::Message as In;
use fledge_core::proto::v1::{
    Ack, AgentMessage, ClusterIdentity, Heartbeat, Hello, SpecUpdate, StatusReport,
};
use fledge_core::spec::{ClusterProfileSpec, WorkloadClusterSpec};
use futures::Stream;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::{mpsc, watch};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

use crate::backoff::Backoff;
use crate::cache::{self, CachedSpec};
use crate::config::{self, Credentials};
use crate::netfile::{self, Network};
use crate::reconciler::{Applied, Desired, Shared};

/// Heartbeat interval, both ways.
pub const HEARTBEAT: Duration = fledge_core::names::AGENT_HEARTBEAT_INTERVAL;
/// Missed heartbeats after which the manager counts as dead.
pub const MISSED_HEARTBEATS: u32 = fledge_core::names::AGENT_MISSED_HEARTBEATS;
/// Name of the identity Secret.
pub const IDENTITY_SECRET: &str = "fledge-agent-identity";
/// How often the network file is looked at while a stream is open.
const NETWORK_POLL: Duration = Duration::from_millis(500);

/// Why a session ended badly.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No usable identity.
    #[error(transparent)]
    Identity(#[from] config::IdentityError),
    /// No endpoint configured.
    #[error("no manager endpoint: set FLEDGE_MANAGER_ENDPOINT or the identity's endpoint file")]
    NoEndpoint,
    /// Dial or TLS failure.
    #[error("connecting to {endpoint}: {source}")]
    Transport {
        /// The endpoint.
        endpoint: String,
        /// The error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The manager ended the call with an error.
    #[error("stream: {0}")]
    Status(#[from] tonic::Status),
    /// The network file says `down`.
    #[error("network to the manager is cut")]
    NetworkCut,
    /// Nothing heard for 3 heartbeat intervals.
    #[error("no message from the manager for {0:?}: peer is dead")]
    DeadPeer(Duration),
    /// The cache could not be written, so the spec was not acknowledged.
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
}

/// How a session ended normally.
#[derive(Debug)]
enum End {
    Closed,
    GoAway(Duration),
    Renewed,
}

/// The stream side of the agent.
pub struct StreamRunner {
    /// Shared with the reconciler.
    pub shared: Arc<Shared>,
    /// Kubernetes client of the workload cluster.
    pub client: Client,
    /// Identity files.
    pub identity_dir: PathBuf,
    /// Endpoint override.
    pub endpoint: Option<String>,
    /// The sim's network file.
    pub network_file: Option<PathBuf>,
    /// A renewed certificate and key received on a stream, used from then on.
    renewed: Mutex<Option<(String, String)>>,
}

impl StreamRunner {
    /// A runner.
    pub fn new(
        shared: Arc<Shared>,
        client: Client,
        identity_dir: PathBuf,
        endpoint: Option<String>,
        network_file: Option<PathBuf>,
    ) -> Self {
        StreamRunner {
            shared,
            client,
            identity_dir,
            endpoint,
            network_file,
            renewed: Mutex::new(None),
        }
    }

    /// Connects and reconnects forever.
    pub async fn run(self) {
        let mut backoff = Backoff::default();
        let mut cut_logged = false;
        let mut active = self.shared.active.subscribe();
        loop {
            // Only the agent holding the Lease talks to the manager.
            while !*active.borrow_and_update() {
                if active.changed().await.is_err() {
                    return;
                }
            }
            if netfile::read(self.network_file.as_deref()) == Network::Down {
                if !cut_logged {
                    tracing::warn!("network to the manager is cut; working from the cache");
                    cut_logged = true;
                }
                tokio::time::sleep(backoff.next_delay().max(Duration::from_millis(200))).await;
                continue;
            }
            cut_logged = false;
            let started = Instant::now();
            match self.session().await {
                Ok(End::Renewed) => {
                    tracing::info!("reconnecting with the renewed certificate");
                    backoff.reset();
                }
                Ok(End::GoAway(delay)) => {
                    tracing::info!(?delay, "manager asked to reconnect later");
                    backoff.reset();
                    tokio::time::sleep(delay + Duration::from_millis(fastrand::u64(0..1000))).await;
                }
                Ok(End::Closed) => {
                    tracing::info!("manager closed the stream");
                    if started.elapsed() > HEARTBEAT {
                        backoff.reset();
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "stream to the manager ended");
                    if started.elapsed() > HEARTBEAT {
                        backoff.reset();
                    }
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        }
    }

    /// The newest credentials: a renewal received on a stream, else the identity Secret,
    /// else the mounted files.
    async fn credentials(&self) -> Result<Credentials, SessionError> {
        let mut creds = config::read_credentials(&self.identity_dir)?;
        let api: Api<Secret> = Api::namespaced(self.client.clone(), names::FLEDGE_NAMESPACE);
        if let Ok(Some(secret)) = api.get_opt(IDENTITY_SECRET).await {
            let data = secret.data.unwrap_or_default();
            let text = |k: &str| {
                data.get(k)
                    .and_then(|b| String::from_utf8(b.0.clone()).ok())
                    .filter(|s| !s.is_empty())
            };
            if let (Some(cert), Some(key)) = (text("tls.crt"), text("tls.key")) {
                creds.cert = cert;
                creds.key = key;
            }
            if let Some(ca) = text("ca.crt") {
                creds.ca = ca;
            }
        }
        if let Some((cert, key)) = self
            .renewed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            creds.cert = cert;
            creds.key = key;
        }
        Ok(creds)
    }

    async fn session(&self) -> Result<End, SessionError> {
        let creds = self.credentials().await?;
        let endpoint = self
            .endpoint
            .clone()
            .filter(|e| !e.is_empty())
            .or_else(|| Some(creds.endpoint.clone()).filter(|e| !e.is_empty()))
            .ok_or(SessionError::NoEndpoint)?;
        let transport = |source| SessionError::Transport {
            endpoint: endpoint.clone(),
            source,
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&creds.ca))
            .identity(tonic::transport::Identity::from_pem(
                &creds.cert,
                &creds.key,
            ))
            .domain_name("localhost");
        let channel = Endpoint::from_shared(endpoint.clone())
            .map_err(transport)?
            .tls_config(tls)
            .map_err(transport)?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(HEARTBEAT)
            .keep_alive_timeout(HEARTBEAT * 2)
            .connect()
            .await
            .map_err(transport)?;
        let identity = &self.shared.identity;
        let applied = self.shared.applied.borrow().generation;
        let cached = self
            .shared
            .desired
            .borrow()
            .spec
            .as_ref()
            .map_or(0, |c| c.generation);
        let digest = self
            .shared
            .status
            .borrow()
            .as_ref()
            .map(|s| s.digest.clone())
            .unwrap_or_default();
        let hello = Hello {
            cluster: Some(ClusterIdentity {
                namespace: identity.namespace.clone(),
                name: identity.name.clone(),
                uid: uid_from_certificate(&creds.cert).unwrap_or_default(),
            }),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            applied_generation: if applied > 0 { applied } else { cached },
            status_digest: digest,
        };
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let mut status_rx = self.shared.status.subscribe();
        status_rx.mark_changed();
        let outbound = outbound(hello, ack_rx, status_rx);
        let mut client = AgentServiceClient::new(channel);
        let mut inbound = client.session(outbound).await?.into_inner();
        tracing::info!(%endpoint, "connected to the manager");
        let mut applied_rx = self.shared.applied.subscribe();
        let mut active_rx = self.shared.active.subscribe();
        let mut pending_ack: Option<Applied> = None;
        let mut poll = tokio::time::interval(NETWORK_POLL);
        let mut last_heard = Instant::now();
        let dead_after = HEARTBEAT * MISSED_HEARTBEATS;
        loop {
            tokio::select! {
                msg = inbound.message() => {
                    let Some(msg) = msg? else { return Ok(End::Closed) };
                    last_heard = Instant::now();
                    match msg.message {
                        Some(In::Spec(update)) => {
                            let wanted = Applied {
                                generation: update.generation,
                                deleting: update.deleting,
                            };
                            self.accept_spec(update).await?;
                            pending_ack = Some(wanted);
                        }
                        Some(In::Heartbeat(_)) => {}
                        Some(In::Certificate(renewal)) => {
                            self.renew(renewal.certificate_pem, renewal.private_key_pem).await;
                            return Ok(End::Renewed);
                        }
                        Some(In::GoAway(g)) => {
                            return Ok(End::GoAway(Duration::from_secs(u64::try_from(g.reconnect_after_seconds).unwrap_or(0))));
                        }
                        None => tracing::debug!("empty message from the manager"),
                    }
                }
                _ = applied_rx.changed() => {}
                _ = active_rx.changed() => {
                    if !*active_rx.borrow_and_update() {
                        tracing::warn!("lost the agent Lease; closing the stream");
                        return Ok(End::Closed);
                    }
                }
                _ = poll.tick() => {
                    if netfile::read(self.network_file.as_deref()) == Network::Down {
                        return Err(SessionError::NetworkCut);
                    }
                    if last_heard.elapsed() > dead_after {
                        return Err(SessionError::DeadPeer(last_heard.elapsed()));
                    }
                }
            }
            if let Some(wanted) = pending_ack
                && *applied_rx.borrow_and_update() == wanted
            {
                let generation = wanted.generation;
                tracing::info!(generation, "acknowledging");
                // The receiver lives as long as the call.
                let _ = ack_tx.send(generation);
                pending_ack = None;
            }
        }
    }

    /// Persists and hands over a spec.
    async fn accept_spec(&self, update: SpecUpdate) -> Result<(), SessionError> {
        let Some(spec) = update.spec else {
            tracing::error!(
                generation = update.generation,
                "SpecUpdate without a spec; ignored"
            );
            return Ok(());
        };
        let spec = WorkloadClusterSpec::from(spec);
        let previous = self.shared.desired.borrow().spec.clone();
        let mut profile = update.profile.map(ClusterProfileSpec::from);
        if profile.is_none() && spec.profile.is_some() {
            // The spec names a profile the manager did not send (e.g. not found right now):
            // keep the add-ons we have rather than deleting them.
            tracing::warn!(profile = ?spec.profile, "spec names a profile but none was sent; keeping the cached one");
            profile = previous.as_ref().and_then(|p| p.profile.clone());
        }
        let cached = CachedSpec {
            generation: update.generation,
            spec,
            profile,
            deleting: update.deleting,
        };
        if previous.as_ref() != Some(&cached) {
            cache::store(&self.client, &self.shared.identity, &cached).await?;
            tracing::info!(
                generation = cached.generation,
                deleting = cached.deleting,
                "spec received and cached"
            );
            self.shared.desired.send_replace(Desired {
                spec: Some(cached),
                error: None,
            });
        }
        Ok(())
    }

    /// Stores a renewed certificate (Secret and memory).
    async fn renew(&self, cert: String, key: String) {
        if cert.is_empty() || key.is_empty() {
            tracing::error!("certificate renewal without certificate or key; ignored");
            return;
        }
        let api: Api<Secret> = Api::namespaced(self.client.clone(), names::FLEDGE_NAMESPACE);
        let patch = Secret {
            data: Some(BTreeMap::from([
                ("tls.crt".to_owned(), ByteString(cert.clone().into_bytes())),
                ("tls.key".to_owned(), ByteString(key.clone().into_bytes())),
            ])),
            ..Default::default()
        };
        match api
            .patch(
                IDENTITY_SECRET,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => tracing::info!("renewed client certificate stored"),
            Err(err) => {
                tracing::error!(error = %err, "storing the renewed certificate failed; using it from memory")
            }
        }
        *self.renewed.lock().unwrap_or_else(|p| p.into_inner()) = Some((cert, key));
    }
}

fn msg(message: Out) -> AgentMessage {
    AgentMessage {
        message: Some(message),
    }
}

fn now() -> prost_types::Timestamp {
    let now = chrono::Utc::now();
    prost_types::Timestamp {
        seconds: now.timestamp(),
        nanos: i32::try_from(now.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

struct OutState {
    hello: Option<AgentMessage>,
    acks: mpsc::UnboundedReceiver<i64>,
    status: watch::Receiver<Option<StatusReport>>,
    heartbeat: tokio::time::Interval,
    last_digest: String,
}

/// The agent's half of the stream: Hello, then acks, status reports (newest only, when the
/// digest changes) and heartbeats, produced only as fast as the transport takes them.
fn outbound(
    hello: Hello,
    acks: mpsc::UnboundedReceiver<i64>,
    status: watch::Receiver<Option<StatusReport>>,
) -> impl Stream<Item = AgentMessage> + Send + 'static {
    let state = OutState {
        hello: Some(msg(Out::Hello(hello))),
        acks,
        status,
        heartbeat: tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT),
        last_digest: String::new(),
    };
    futures::stream::unfold(state, |mut s| async move {
        if let Some(hello) = s.hello.take() {
            return Some((hello, s));
        }
        loop {
            tokio::select! {
                // Reports first: a pass publishes its report before its generation is
                // acknowledged, and the manager must see them in that order.
                biased;
                changed = s.status.changed() => {
                    changed.ok()?;
                    let report = s.status.borrow_and_update().clone();
                    if let Some(mut report) = report
                        && report.digest != s.last_digest
                    {
                        s.last_digest = report.digest.clone();
                        report.observed_at = Some(now());
                        return Some((msg(Out::Status(report)), s));
                    }
                }
                ack = s.acks.recv() => {
                    let generation = ack?;
                    return Some((msg(Out::Ack(Ack { generation })), s));
                }
                _ = s.heartbeat.tick() => {
                    return Some((msg(Out::Heartbeat(Heartbeat { sent_at: Some(now()) })), s));
                }
            }
        }
    })
}

/// The uid in the certificate's URI SAN `fledge://cluster/<ns>/<name>/<uid>`.
pub fn uid_from_certificate(pem: &str) -> Option<String> {
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()?;
    let prefix = b"fledge://cluster/";
    let start = der.windows(prefix.len()).position(|w| w == prefix)?;
    // DER GeneralName uniformResourceIdentifier: [0x86, length, bytes...] (short form).
    let len = usize::from(*der.get(start.checked_sub(1)?)?);
    if der.get(start.checked_sub(2)?) != Some(&0x86) || len >= 0x80 {
        return None;
    }
    let uri = std::str::from_utf8(der.get(start..start + len)?).ok()?;
    let parts: Vec<&str> = uri
        .trim_start_matches("fledge://cluster/")
        .split('/')
        .collect();
    (parts.len() == 3).then(|| parts[2].to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with_san(uri: &str) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names.push(rcgen::SanType::URI(
            rcgen::string::Ia5String::try_from(uri).unwrap(),
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn the_uid_comes_from_the_certificates_uri_san() {
        let pem =
            cert_with_san("fledge://cluster/team-a/edge-1/0b7c8a4e-1111-4222-8333-944455556666");
        assert_eq!(
            uid_from_certificate(&pem).as_deref(),
            Some("0b7c8a4e-1111-4222-8333-944455556666")
        );
        assert_eq!(
            uid_from_certificate(&cert_with_san("https://example.com/x")),
            None
        );
        assert_eq!(uid_from_certificate("not a certificate"), None);
    }
}
