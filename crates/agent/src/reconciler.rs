//! The reconcile loop: one pass brings the CAPI objects and the add-ons to the cached spec
//! and computes the status report. Passes run on start (from the cache), when the spec
//! changes, on watch events of the owned kinds ([`crate::watch`]), every few seconds while
//! the cluster is converging, and on the resync timer.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fledge_core::proto::v1::StatusReport;
use fledge_core::spec::WorkloadCluster;
use kube::Client;
use tokio::sync::{Notify, watch};
use tracing::Instrument as _;

use crate::addons::Addons;
use crate::apply::Applier;
use crate::cache::CachedSpec;
use crate::capi::{self, CapiError, CapiOutcome};
use crate::config::Identity;
use crate::status;

/// The desired state the reconciler works from.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    /// The cached spec, if there is a usable one.
    pub spec: Option<CachedSpec>,
    /// Why there is none (a corrupted or foreign cache), reported as Degraded.
    pub error: Option<String>,
}

/// What a completed pass applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// The spec generation.
    pub generation: i64,
    /// The pass saw the cluster deleting (and left the CAPI objects alone). The deleting
    /// flag does not change the generation, so an acknowledgement of a deleting spec waits
    /// for a pass that saw it.
    pub deleting: bool,
}

/// What the stream and the reconciler share.
pub struct Shared {
    /// This agent's cluster.
    pub identity: Identity,
    /// The desired state; the stream replaces it on every SpecUpdate.
    pub desired: watch::Sender<Desired>,
    /// The newest generation applied to the API, and whether that pass saw it deleting.
    pub applied: watch::Sender<Applied>,
    /// The newest status report.
    pub status: watch::Sender<Option<StatusReport>>,
    /// This agent holds the Lease (only the active agent reconciles and streams).
    pub active: watch::Sender<bool>,
    /// Asks for a pass (watch events).
    pub kick: Notify,
    /// An add-on object was deleted at this moment (drift), not corrected yet.
    pub drift: Mutex<Option<(Instant, String)>>,
}

impl Shared {
    /// New shared state starting from `desired`.
    pub fn new(identity: Identity, desired: Desired) -> Self {
        Shared {
            identity,
            desired: watch::Sender::new(desired),
            applied: watch::Sender::new(Applied::default()),
            status: watch::Sender::new(None),
            active: watch::Sender::new(false),
            kick: Notify::new(),
            drift: Mutex::new(None),
        }
    }

    /// Records drift seen by a watch.
    pub fn record_drift(&self, what: String) {
        let mut drift = self.drift.lock().unwrap_or_else(|p| p.into_inner());
        if drift.is_none() {
            *drift = Some((Instant::now(), what));
        }
    }

    fn take_drift(&self) -> Option<(Instant, String)> {
        self.drift.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Pause after a trigger, so that a burst of watch events makes one pass.
const DEBOUNCE: Duration = Duration::from_millis(300);
/// How often a converging cluster is looked at without events (health-gate timeouts).
const CONVERGING_POLL: Duration = Duration::from_secs(3);

/// Runs passes forever.
pub async fn run(shared: Arc<Shared>, client: Client, resync: Duration) {
    let applier = Applier::new(client.clone());
    let mut addons = Addons::default();
    let mut desired_rx = shared.desired.subscribe();
    let mut active_rx = shared.active.subscribe();
    loop {
        if !*active_rx.borrow_and_update() {
            // Shared owns the sender, so this only returns on a change.
            let _ = active_rx.changed().await;
            continue;
        }
        let desired = desired_rx.borrow_and_update().clone();
        let span = tracing::info_span!("reconcile", cluster = %shared.identity.key(), phase = tracing::field::Empty);
        let (report, applied) = pass(&shared, &client, &applier, &mut addons, &desired)
            .instrument(span)
            .await;
        let converging = report.phase != status::READY;
        shared.status.send_if_modified(|old| {
            if old.as_ref().map(|o| &o.digest) == Some(&report.digest) {
                return false;
            }
            tracing::info!(phase = %report.phase, message = %report.message, "status");
            *old = Some(report);
            true
        });
        // After the report: the manager must never see the new generation acknowledged
        // together with the previous report's phase (it would call the cluster Ready early).
        if let Some(applied) = applied {
            shared.applied.send_if_modified(|old| {
                if *old == applied {
                    return false;
                }
                tracing::info!(
                    generation = applied.generation,
                    deleting = applied.deleting,
                    "generation applied"
                );
                *old = applied;
                true
            });
        }
        tokio::select! {
            _ = desired_rx.changed() => {}
            _ = active_rx.changed() => {}
            () = shared.kick.notified() => {}
            () = tokio::time::sleep(resync) => {}
            () = tokio::time::sleep(CONVERGING_POLL), if converging => {}
        }
        tokio::time::sleep(DEBOUNCE).await;
    }
}

async fn pass(
    shared: &Shared,
    client: &Client,
    applier: &Applier,
    addons: &mut Addons,
    desired: &Desired,
) -> (StatusReport, Option<Applied>) {
    let identity = &shared.identity;
    let mut inputs = status::Inputs {
        applied_generation: shared.applied.borrow().generation,
        fatal: desired.error.clone(),
        ..Default::default()
    };
    let Some(cached) = &desired.spec else {
        return (status::build(&inputs, addons), None);
    };
    tracing::Span::current().record(
        "phase",
        if cached.deleting {
            "deleting"
        } else {
            "reconcile"
        },
    );
    inputs.desired_generation = cached.generation;
    inputs.spec = Some(cached.spec.clone());
    inputs.deleting = cached.deleting;
    let cluster = WorkloadCluster {
        metadata: kube::api::ObjectMeta {
            name: Some(identity.name.clone()),
            namespace: Some(identity.namespace.clone()),
            ..Default::default()
        },
        spec: cached.spec.clone(),
        status: None,
    };
    let capi_done = if cached.deleting {
        true
    } else {
        match capi::reconcile(client, &cluster).await {
            Ok(CapiOutcome::Applied) => true,
            Ok(CapiOutcome::Waiting(why)) => {
                tracing::debug!(%why, "CAPI objects wait");
                inputs.capi_pending = Some(why);
                false
            }
            Err(CapiError::Render(err)) => {
                tracing::error!(error = %err, "the cached spec does not render; nothing is changed");
                inputs.fatal = Some(format!("the spec does not render: {err}"));
                false
            }
            Err(err) => {
                tracing::warn!(error = %err, "CAPI pass failed; retried");
                inputs.capi_pending = Some(err.to_string());
                false
            }
        }
    };
    let profile_addons = cached
        .profile
        .as_ref()
        .map(|p| p.addons.as_slice())
        .unwrap_or_default();
    addons.reconcile(applier, &cluster, profile_addons).await;
    if let Some((since, what)) = shared.take_drift() {
        tracing::info!(object = %what, drift_correction_ms = since.elapsed().as_millis(), "drift corrected");
    }
    let applied = (capi_done && inputs.fatal.is_none()).then_some(Applied {
        generation: cached.generation,
        deleting: cached.deleting,
    });
    if let Some(applied) = applied {
        inputs.applied_generation = applied.generation;
    }
    match status::observe(client, &identity.namespace, &identity.name, &cached.spec).await {
        Ok(observed) => inputs.observed = Some(observed),
        Err(err) => tracing::warn!(error = %err, "reading node groups failed"),
    }
    (status::build(&inputs, addons), applied)
}
