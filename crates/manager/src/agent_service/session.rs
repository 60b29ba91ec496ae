//! One agent stream: pushes spec updates, records acks and reports, heartbeats, renews the
//! certificate, and marks the cluster disconnected when it ends.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fledge_core::proto::v1::agent_message::Message as AgentMsg;
use fledge_core::proto::v1::manager_message::Message as ManagerMsg;
use fledge_core::proto::v1::{
    AgentMessage, CertificateRenewal, GoAway, Heartbeat, Hello, ManagerMessage,
};
use fledge_core::spec::{AgentConnection, WorkloadCluster, WorkloadClusterStatus};
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::identity::AgentIdentity;
use super::registry::{ClusterKey, Signals};
use super::status;
use super::{LAST_SEEN_REFRESH, MISSED_HEARTBEATS, Shared};

/// Field manager of the stream's status writes (distinct from the provisioning controller's
/// server-side apply, so neither removes the other's fields).
const FIELD_MANAGER: &str = "fledge-manager-agent-stream";
/// Seconds an agent waits before reconnecting after a GoAway (another replica takes it): at
/// least this, plus up to [`GO_AWAY_SPREAD_SECONDS`] more by stream id, so that every agent of
/// a stopping replica does not reconnect in the same second.
const GO_AWAY_RECONNECT_SECONDS: i32 = 1;
/// See [`GO_AWAY_RECONNECT_SECONDS`].
const GO_AWAY_SPREAD_SECONDS: u64 = 10;
/// Attempts of the conditional "disconnected" write when it races with other writers.
const DISCONNECT_ATTEMPTS: usize = 3;

/// Why a stream ended.
#[derive(Debug)]
enum End {
    /// The agent closed its side.
    Closed,
    /// The transport failed or the agent sent an error.
    Broken(Status),
    /// The agent stopped sending (no heartbeat for 3 intervals) or stopped reading.
    Dead,
    /// A newer stream of the same cluster took over.
    Replaced,
    /// The manager shuts down (a GoAway was sent).
    Shutdown,
    /// The manager ends the stream with this status (e.g. the cluster was recreated).
    Rejected(Status),
}

/// One stream's state.
pub(super) struct Session {
    shared: Arc<Shared>,
    id: AgentIdentity,
    key: ClusterKey,
    conn: u64,
    signals: Arc<Signals>,
    tx: mpsc::Sender<Result<ManagerMessage, Status>>,
    api: Api<WorkloadCluster>,
    agent_version: String,
    /// The owned status fields as stored (after our last successful write).
    view: WorkloadClusterStatus,
    last_write: Instant,
    last_heard: Instant,
    /// Newest generation sent on this stream (or the agent's own at Hello).
    sent: i64,
    /// Newest generation the agent acknowledged (Hello, Ack, or a report).
    acked: i64,
    sent_deleting: bool,
    renewal_sent: bool,
}

impl Session {
    /// Registers the stream (replacing an older one of the same cluster).
    pub(super) fn start(
        shared: Arc<Shared>,
        id: AgentIdentity,
        hello: &Hello,
        cluster: &WorkloadCluster,
        api: Api<WorkloadCluster>,
        tx: mpsc::Sender<Result<ManagerMessage, Status>>,
    ) -> Self {
        let key = (id.namespace.clone(), id.name.clone());
        let (conn, signals) = shared.registry.register(key.clone());
        let applied = hello.applied_generation.max(0);
        Self {
            view: status::owned(cluster.status.as_ref()),
            shared,
            id,
            key,
            conn,
            signals,
            tx,
            api,
            agent_version: hello.agent_version.clone(),
            last_write: Instant::now(),
            last_heard: Instant::now(),
            sent: applied,
            acked: applied,
            sent_deleting: false,
            renewal_sent: false,
        }
    }

    /// Runs the stream to its end, then records the disconnection (unless replaced).
    pub(super) async fn run(mut self, mut inbound: Streaming<AgentMessage>) {
        tracing::info!(
            agent_version = %self.agent_version,
            applied_generation = self.acked,
            streams = self.shared.registry.len(),
            "Agent connected"
        );
        let end = self.serve(&mut inbound).await;
        match &end {
            End::Replaced => {
                tracing::info!("Agent stream replaced by a newer one");
                return;
            }
            End::Rejected(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "Ending the agent stream");
                let _ = self.tx.try_send(Err(status.clone()));
            }
            End::Broken(status) => {
                tracing::info!(code = ?status.code(), message = status.message(), "Agent stream broken");
            }
            End::Dead => {
                tracing::warn!(
                    "Agent silent for {MISSED_HEARTBEATS} heartbeats; ending its stream"
                );
                let _ = self.tx.try_send(Err(Status::deadline_exceeded(
                    "no heartbeat from the agent",
                )));
            }
            End::Closed | End::Shutdown => tracing::info!(end = ?end, "Agent stream ended"),
        }
        self.mark_disconnected().await;
        self.shared.registry.unregister(&self.key, self.conn);
    }

    async fn serve(&mut self, inbound: &mut Streaming<AgentMessage>) -> End {
        if let Err(end) = self.write_connected().await {
            return end;
        }
        if let Err(end) = self.push_if_newer().await {
            return end;
        }
        if let Err(end) = self.maybe_renew().await {
            return end;
        }
        let interval = self.shared.config.heartbeat_interval;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop = self.shared.stop.clone();
        let signals = self.signals.clone();
        loop {
            let step = tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        self.last_heard = Instant::now();
                        self.handle(message).await
                    }
                    Ok(None) => Err(End::Closed),
                    Err(status) => Err(End::Broken(status)),
                },
                () = signals.spec_changed.notified() => self.push_if_newer().await,
                () = signals.replaced.notified() => Err(End::Replaced),
                _ = ticks.tick() => self.tick().await,
                () = stopped(&mut stop) => {
                    let spread = i32::try_from(self.conn % GO_AWAY_SPREAD_SECONDS).unwrap_or(0);
                    let go_away = ManagerMsg::GoAway(GoAway { reconnect_after_seconds: GO_AWAY_RECONNECT_SECONDS + spread });
                    let _ = self.tx.try_send(Ok(ManagerMessage { message: Some(go_away) }));
                    Err(End::Shutdown)
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// [`LAST_SEEN_REFRESH`] minus up to a minute, spread by stream id, so that agents that
    /// connected together (after a restart) do not refresh together.
    fn refresh_after(&self) -> Duration {
        LAST_SEEN_REFRESH.saturating_sub(Duration::from_secs(self.conn % 60))
    }

    fn dead_after(&self) -> Duration {
        self.shared.config.heartbeat_interval * MISSED_HEARTBEATS
    }

    /// Sends a message, waiting at most the dead-peer time for room in the bounded buffer.
    async fn send(&self, message: ManagerMsg) -> Result<(), End> {
        let message = ManagerMessage {
            message: Some(message),
        };
        match tokio::time::timeout(self.dead_after(), self.tx.send(Ok(message))).await {
            Ok(Ok(())) => Ok(()),
            // The response stream was dropped: the agent is gone.
            Ok(Err(_)) => Err(End::Closed),
            Err(_) => Err(End::Dead),
        }
    }

    async fn handle(&mut self, message: AgentMessage) -> Result<(), End> {
        match message.message {
            Some(AgentMsg::Ack(ack)) => {
                tracing::debug!(generation = ack.generation, "Agent acknowledged");
                self.acked = self.acked.max(ack.generation);
                let mut next = self.view.clone();
                connection(&mut next).applied_generation = Some(self.acked);
                self.write(next, false).await;
            }
            Some(AgentMsg::Status(report)) => {
                tracing::Span::current().record("phase", report.phase.as_str());
                self.acked = self.acked.max(report.applied_generation);
                let mut next = self.view.clone();
                status::apply_report(&mut next, &report);
                connection(&mut next).applied_generation = Some(self.acked);
                self.write(next, false).await;
            }
            Some(AgentMsg::Heartbeat(_)) => {}
            Some(AgentMsg::Hello(_)) => {
                return Err(End::Rejected(Status::invalid_argument(
                    "Hello is only valid as the first message",
                )));
            }
            None => {}
        }
        Ok(())
    }

    async fn tick(&mut self) -> Result<(), End> {
        if self.last_heard.elapsed() > self.dead_after() {
            return Err(End::Dead);
        }
        let now = prost_types::Timestamp::from(SystemTime::now());
        // A heartbeat is dropped rather than queued when the buffer is full: the next one
        // carries the same information.
        if let Err(mpsc::error::TrySendError::Closed(_)) = self.tx.try_send(Ok(ManagerMessage {
            message: Some(ManagerMsg::Heartbeat(Heartbeat { sent_at: Some(now) })),
        })) {
            return Err(End::Closed);
        }
        if self.last_write.elapsed() >= self.refresh_after() {
            let next = self.view.clone();
            self.write(next, true).await;
        }
        self.maybe_renew().await
    }

    /// Sends the current spec if it is newer than what the agent has, or if the cluster
    /// started deleting (that does not change the generation).
    async fn push_if_newer(&mut self) -> Result<(), End> {
        let Some(desired) = self.shared.stores.desired(&self.key) else {
            return Ok(());
        };
        if desired.uid != self.id.uid {
            // The cache may lag behind the read that accepted this stream; only the API
            // decides that the cluster was recreated under this certificate's feet.
            let current = tokio::time::timeout(
                self.shared.config.call_timeout,
                self.api.get_opt(&self.id.name),
            )
            .await;
            if let Ok(Ok(current)) = current
                && current.as_ref().and_then(|c| c.uid()).as_deref() != Some(self.id.uid.as_str())
            {
                return Err(End::Rejected(Status::permission_denied(
                    "the cluster was deleted or recreated; this certificate names the old one",
                )));
            }
            return Ok(());
        }
        let deleting = desired.update.deleting;
        if desired.generation > self.sent.max(self.acked) || (deleting && !self.sent_deleting) {
            tracing::info!(
                generation = desired.generation,
                deleting,
                "Sending the spec to the agent"
            );
            self.send(ManagerMsg::Spec(desired.update)).await?;
            self.sent = self.sent.max(desired.generation);
            self.sent_deleting = deleting;
        }
        Ok(())
    }

    /// Issues and sends a renewed certificate once per stream when the current one is in its
    /// renewal window.
    async fn maybe_renew(&mut self) -> Result<(), End> {
        if self.renewal_sent {
            return Ok(());
        }
        let Some(ca) = self.shared.ca.as_ref() else {
            return Ok(());
        };
        let lifetime = (self.id.not_after - self.id.not_before).max(0);
        let before = self
            .shared
            .config
            .cert_renew_before
            .map_or(lifetime / 3, |d| {
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
            });
        let now = chrono::Utc::now().timestamp();
        if now < self.id.not_after.saturating_sub(before) {
            return Ok(());
        }
        self.renewal_sent = true;
        let issued = match ca.issue_agent_valid_for(
            &self.id.namespace,
            &self.id.name,
            &self.id.uid,
            self.shared.config.cert_validity,
        ) {
            Ok(issued) => issued,
            Err(err) => {
                tracing::warn!(%err, "Cannot issue a renewed agent certificate");
                return Ok(());
            }
        };
        let not_after = SystemTime::now() + self.shared.config.cert_validity;
        tracing::info!(
            expires_in_seconds = self.id.not_after - now,
            "Sending a renewed client certificate to the agent"
        );
        self.send(ManagerMsg::Certificate(CertificateRenewal {
            certificate_pem: issued.cert_pem,
            private_key_pem: issued.key_pem.0,
            not_after: Some(not_after.into()),
        }))
        .await
    }

    /// Writes `next` (the owned fields) when it differs from the stored view, or when
    /// `refresh_seen` asks to refresh `lastSeen`. Failures are logged: the next change retries
    /// from the same stored view.
    async fn write(&mut self, mut next: WorkloadClusterStatus, refresh_seen: bool) {
        let mut compare = next.clone();
        connection(&mut compare).last_seen =
            self.view.agent.as_ref().and_then(|a| a.last_seen.clone());
        if compare == self.view && !refresh_seen {
            return;
        }
        connection(&mut next).last_seen = Some(status::now());
        let (Ok(old), Ok(new)) = (
            serde_json::to_value(&self.view),
            serde_json::to_value(&next),
        ) else {
            return;
        };
        let Some(patch) = status::merge_patch(&old, &new) else {
            return;
        };
        if self.patch(&serde_json::json!({ "status": patch })).await {
            self.view = next;
        }
    }

    /// Marks the agent connected. The connection fields are always sent in full (not as a
    /// diff): the stored view may be older than a disconnect another stream wrote meanwhile.
    async fn write_connected(&mut self) -> Result<(), End> {
        let mut next = self.view.clone();
        let agent = connection(&mut next);
        agent.connected = true;
        agent.last_seen = Some(status::now());
        agent.version = Some(self.agent_version.clone());
        agent.replica = Some(self.shared.config.replica.clone());
        agent.applied_generation = Some(self.acked);
        let body = serde_json::json!({ "status": { "agent": {
            "connected": true,
            "lastSeen": agent.last_seen,
            "version": agent.version,
            "replica": agent.replica,
            "appliedGeneration": agent.applied_generation,
        }}});
        if self.patch(&body).await {
            self.view = next;
        }
        Ok(())
    }

    async fn patch(&mut self, body: &serde_json::Value) -> bool {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_string()),
            ..PatchParams::default()
        };
        let _permit = self.shared.api_calls.acquire().await.ok();
        match tokio::time::timeout(
            self.shared.config.call_timeout,
            self.api
                .patch_status(&self.id.name, &params, &Patch::Merge(body)),
        )
        .await
        {
            Ok(Ok(_)) => {
                self.last_write = Instant::now();
                true
            }
            Ok(Err(err)) => {
                tracing::warn!(%err, "Writing the agent status of the WorkloadCluster");
                false
            }
            Err(_) => {
                tracing::warn!("Writing the agent status of the WorkloadCluster timed out");
                false
            }
        }
    }

    /// Writes `connected: false`, but only while this stream still holds the cluster and the
    /// stored status names this replica: a newer stream here or on another replica owns the
    /// connection state then. The resourceVersion precondition closes the race between the
    /// read and the write.
    async fn mark_disconnected(&mut self) {
        let _permit = self.shared.api_calls.acquire().await.ok();
        for _ in 0..DISCONNECT_ATTEMPTS {
            if !self.shared.registry.holds(&self.key, self.conn) {
                return;
            }
            let current = match tokio::time::timeout(
                self.shared.config.call_timeout,
                self.api.get_opt(&self.id.name),
            )
            .await
            {
                Ok(Ok(Some(current))) => current,
                Ok(Ok(None)) => return,
                Ok(Err(err)) => {
                    tracing::warn!(%err, "Reading the WorkloadCluster to mark its agent disconnected");
                    return;
                }
                Err(_) => return,
            };
            let agent = current.status.as_ref().and_then(|s| s.agent.as_ref());
            let ours = agent.is_some_and(|a| {
                a.connected && a.replica.as_deref() == Some(self.shared.config.replica.as_str())
            });
            if current.uid().as_deref() != Some(self.id.uid.as_str()) || !ours {
                return;
            }
            let body = serde_json::json!({
                "metadata": { "resourceVersion": current.resource_version() },
                "status": { "agent": { "connected": false, "lastSeen": status::now() } },
            });
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            };
            match tokio::time::timeout(
                self.shared.config.call_timeout,
                self.api
                    .patch_status(&self.id.name, &params, &Patch::Merge(&body)),
            )
            .await
            {
                Ok(Ok(_)) => return,
                Ok(Err(err)) if crate::leader::is_status(&err, 409) => continue,
                Ok(Err(err)) => {
                    tracing::warn!(%err, "Marking the agent disconnected");
                    return;
                }
                Err(_) => return,
            }
        }
    }
}

/// Completes when the manager starts shutting down (never holds the watch's guard across an
/// await, so the stream's future stays `Send`).
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    if stop.wait_for(|stopping| *stopping).await.is_err() {
        // The sender is gone only when the server is gone.
        std::future::pending::<()>().await;
    }
}

fn connection(status: &mut WorkloadClusterStatus) -> &mut AgentConnection {
    status.agent.get_or_insert_with(AgentConnection::default)
}
