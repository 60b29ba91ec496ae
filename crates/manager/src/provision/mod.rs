//! The provisioning pipeline: one kube-runtime `Controller` over every `WorkloadCluster`,
//! driving each through an explicit list of phases ([`PIPELINE`]).
//!
//! # Layout
//! - this file: the phase list, the reconciler (`reconcile`, `error_policy`, `run`) and the
//!   status write;
//! - `status.rs`: pure functions from a phase outcome to the `WorkloadCluster`'s status;
//! - `accept.rs`, `bootstrap.rs`, `control_plane.rs`, `providers.rs`, `agent.rs`,
//!   `pivoting.rs`, `handover.rs`: one phase each; `delete.rs`: deletion (reverse pivot);
//! - `objects.rs`: server-side apply of untyped objects, and the workload cluster's client.
//!
//! # Guarantees
//! - Every phase first observes the world and returns [`Progress::Done`] when its work is
//!   already there, so a restarted manager replays the list from the top safely; progress
//!   lives in the management cluster (`status.phase`), never in memory.
//! - Status is written only when it changes, with server-side apply on the status
//!   subresource (field manager `fledge-manager`) and the `resourceVersion` it was computed
//!   from, so a decision based on a stale object is refused (409) and recomputed.
//!
//! - Once the pivot started (its journal exists and did not roll back), the phases before
//!   `Pivoting` are skipped: the CAPI objects (partly) live in the workload cluster, and
//!   replaying `Bootstrapping` would re-create them in the management cluster.
//! - The status write applies only the fields the pipeline owns (phase, message, step,
//!   progressPercent, observedGeneration, conditions); `status.agent`, `pools`, `addons`,
//!   `controlPlane` and `workers` belong to the AgentService replica holding the stream.

mod accept;
mod agent;
mod bootstrap;
mod control_plane;
mod delete;
mod flux;
mod handover;
mod objects;
mod pivoting;
mod providers;
mod status;

use std::sync::Arc;
use std::time::Duration;

use fledge_core::names;
use fledge_core::spec::WorkloadCluster;
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::Instrument;

use crate::ca::Ca;
use crate::pivot;

/// The `status.phase` values of a `WorkloadCluster`, in pipeline order (a contract: tools
/// and dashboards read them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Validated and finalizer added.
    Accepted,
    /// The bootstrap objects are applied to the management cluster.
    Bootstrapping,
    /// Waiting for the first control-plane machine and the workload API.
    WaitingForControlPlane,
    /// The CAPI providers are installed into the workload cluster.
    InstallingProviders,
    /// The agent is installed into the workload cluster.
    InstallingAgent,
    /// The CAPI objects move into the workload cluster.
    Pivoting,
    /// The agent took over.
    HandedOver,
    /// The agent reports the desired state reached.
    Ready,
    /// The agent reports Degraded (after the handover).
    Degraded,
    /// The cluster is being deleted (reverse pivot, then Cluster API deletes the machines).
    Deleting,
}

/// Provisioning steps in order. Each one first looks at the world and returns `Done` straight
/// away if its work is already there, so a restarted manager replays the list safely (from
/// `Pivoting` on once the pivot started).
pub const PIPELINE: &[Phase] = &[
    Phase::Accepted,
    Phase::Bootstrapping,
    Phase::WaitingForControlPlane,
    Phase::InstallingProviders,
    Phase::InstallingAgent,
    Phase::Pivoting,
    Phase::HandedOver,
    Phase::Ready,
];

/// `status.phase` of a spec that failed validation.
pub const INVALID_PHASE: &str = "Invalid";

impl Phase {
    /// The exact `status.phase` value.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Accepted => "Accepted",
            Phase::Bootstrapping => "Bootstrapping",
            Phase::WaitingForControlPlane => "WaitingForControlPlane",
            Phase::InstallingProviders => "InstallingProviders",
            Phase::InstallingAgent => "InstallingAgent",
            Phase::Pivoting => "Pivoting",
            Phase::HandedOver => "HandedOver",
            Phase::Ready => "Ready",
            Phase::Degraded => "Degraded",
            Phase::Deleting => "Deleting",
        }
    }

    /// Progress shown while this phase runs, in percent.
    pub fn progress_percent(self) -> i32 {
        match self {
            Phase::Accepted => 5,
            Phase::Bootstrapping => 15,
            Phase::WaitingForControlPlane => 30,
            Phase::InstallingProviders => 50,
            Phase::InstallingAgent => 65,
            Phase::Pivoting => 80,
            Phase::HandedOver => 95,
            Phase::Ready | Phase::Degraded => 100,
            Phase::Deleting => 0,
        }
    }

    /// The kill point at the end of this phase.
    fn kill_point(self) -> &'static str {
        match self {
            Phase::Accepted => "phase-after-accepted",
            Phase::Bootstrapping => "phase-after-bootstrapping",
            Phase::WaitingForControlPlane => "phase-after-waitingforcontrolplane",
            Phase::InstallingProviders => "phase-after-installingproviders",
            Phase::InstallingAgent => "phase-after-installingagent",
            Phase::Pivoting => "phase-after-pivoting",
            Phase::HandedOver | Phase::Ready | Phase::Degraded | Phase::Deleting => "",
        }
    }

    async fn run(self, ctx: &Context, cluster: &WorkloadCluster) -> Result<Progress, Error> {
        match self {
            Phase::Accepted => accept::run(ctx, cluster).await,
            Phase::Bootstrapping => bootstrap::run(ctx, cluster).await,
            Phase::WaitingForControlPlane => control_plane::run(ctx, cluster).await,
            Phase::InstallingProviders => providers::run(ctx, cluster).await,
            Phase::InstallingAgent => agent::run(ctx, cluster).await,
            Phase::Pivoting => pivoting::run(ctx, cluster).await,
            Phase::HandedOver => handover::handed_over(ctx, cluster).await,
            Phase::Ready => handover::ready(ctx, cluster).await,
            Phase::Degraded | Phase::Deleting => Err(Error::Internal(format!(
                "phase {} is not a pipeline step",
                self.name()
            ))),
        }
    }
}

/// The outcome of one phase.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// The phase's work is there; go on with the next one.
    Done,
    /// The phase waits for the world (a Secret, a machine, a Deployment).
    Waiting {
        /// UpperCamelCase step name, shown as `status.step` and the condition's reason.
        step: &'static str,
        /// What is awaited, for people.
        message: String,
        /// When to look again.
        retry_after: Duration,
    },
    /// The spec failed validation: nothing is provisioned (only from `Accepted`).
    Invalid(Vec<fledge_core::validate::FieldError>),
    /// The agent reports Degraded, with its message (only from `Ready`).
    Degraded(String),
}

impl Progress {
    /// A wait of the usual length.
    pub fn waiting(step: &'static str, message: impl Into<String>) -> Self {
        Progress::Waiting {
            step,
            message: message.into(),
            retry_after: WAIT_RETRY,
        }
    }
}

/// How often a waiting phase looks again; watches do not cover the workload cluster.
const WAIT_RETRY: Duration = Duration::from_secs(2);
/// Resync of a cluster whose pipeline is done, in case something was removed behind our back.
const RESYNC: Duration = Duration::from_secs(60);

/// What every reconcile needs, built once in [`run`].
pub struct Context {
    /// Client of the management cluster.
    pub client: Client,
    /// The manager's CA, which signs agent certificates; without it `InstallingAgent` waits.
    pub ca: Option<Arc<Ca>>,
    /// Where agents reach the manager (`https://host:port`).
    pub agent_endpoint: String,
    /// Deadline of each call to a workload cluster's API.
    pub call_timeout: Duration,
}

/// Errors of a reconcile; each names the operation and the object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the management cluster failed.
    #[error("{verb} {what}: {source}")]
    Kube {
        /// What was done (`applying`, `reading`).
        verb: &'static str,
        /// The object or collection.
        what: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// A call to the workload cluster failed.
    #[error("workload cluster: {verb} {what}: {source}")]
    Workload {
        /// What was done.
        verb: &'static str,
        /// The object or collection.
        what: String,
        /// The underlying error.
        #[source]
        source: kube::Error,
    },
    /// Rendering failed (only on internal errors once validated).
    #[error("rendering: {0}")]
    Render(#[from] fledge_core::render::RenderError),
    /// The object has no namespace (cannot happen for a namespaced kind).
    #[error("WorkloadCluster {0} has no namespace")]
    MissingNamespace(String),
    /// A manifest template could not be filled in or parsed.
    #[error("agent manifests: {0}")]
    Template(String),
    /// Issuing the agent's certificate failed.
    #[error("issuing the agent certificate: {0}")]
    Ca(#[from] crate::ca::CaError),
    /// The management cluster's provider inventory does not match the pinned versions.
    #[error("provider inventory: {0}")]
    Inventory(String),
    /// The mover failed.
    #[error("pivot: {0}")]
    Pivot(#[source] crate::pivot::PivotError),
    /// An impossible state.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub(crate) fn kube(
        verb: &'static str,
        what: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Error::Kube { verb, what, source }
    }

    pub(crate) fn workload(
        verb: &'static str,
        what: impl Into<String>,
    ) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Error::Workload { verb, what, source }
    }
}

/// Runs the controller until `shutdown` completes. Meant to run only while this replica
/// holds the leader Lease (see `crate::leader`).
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let api: Api<WorkloadCluster> = Api::all(ctx.client.clone());
    Controller::new(api, watcher::Config::default())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(%err, "Reconcile ended with an error");
            }
        })
        .await;
}

/// Drives one cluster through the pipeline as far as the world allows, then writes its status.
///
/// # Errors
/// A phase or the status write failed; the status already says why when it could be written.
pub async fn reconcile(cluster: Arc<WorkloadCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = cluster.name_any();
    let namespace = cluster
        .namespace()
        .ok_or_else(|| Error::MissingNamespace(name.clone()))?;
    let span = tracing::info_span!("reconcile", cluster = %format!("{namespace}/{name}"));
    async move {
        if cluster.metadata.deletion_timestamp.is_some() {
            return delete::run(&ctx, &cluster).await;
        }
        let (outcome, action, cluster) = drive(&ctx, &cluster).await;
        let desired = status::desired(&cluster, &outcome);
        write_status(&ctx, &cluster, desired).await?;
        match outcome {
            Outcome::Failed(_, err) => Err(err),
            _ => Ok(action),
        }
    }
    .instrument(span)
    .await
}

/// On error: back off briefly; the status already carries the message.
pub fn error_policy(_cluster: Arc<WorkloadCluster>, err: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "Reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Where the pipeline stopped.
#[derive(Debug)]
pub enum Outcome {
    /// Every phase of [`PIPELINE`] is done.
    Done,
    /// `phase` is waiting.
    Waiting(Phase, Progress),
    /// The spec is invalid.
    Invalid(Vec<fledge_core::validate::FieldError>),
    /// `phase` failed.
    Failed(Phase, Error),
}

/// Runs the phases from the first one not known to be done; returns where it stopped and the
/// cluster as last written (the status of each provisioning phase is written as it starts, so
/// Watch shows it and Delete sees `Pivoting` before the move begins).
async fn drive(ctx: &Context, cluster: &WorkloadCluster) -> (Outcome, Action, WorkloadCluster) {
    let mut current = cluster.clone();
    let (outcome, action) = drive_from(ctx, &mut current).await;
    (outcome, action, current)
}

/// Whether the status records a finished pivot (condition `Pivoted=True`) or a phase that
/// only a pivoted cluster reaches.
fn was_pivoted(cluster: &WorkloadCluster) -> bool {
    cluster.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == names::PIVOTED_CONDITION && c.status == "True")
            || matches!(
                s.phase.as_deref(),
                Some("HandedOver" | "Ready" | "Degraded")
            )
    })
}

/// Whether `status.phase` is before `index` in [`PIPELINE`] (or not set yet). Phases outside
/// the list (Invalid, Degraded) are never announced over.
fn stored_before(cluster: &WorkloadCluster, index: usize) -> bool {
    match cluster.status.as_ref().and_then(|s| s.phase.as_deref()) {
        None => true,
        Some(phase) => PIPELINE
            .iter()
            .position(|p| p.name() == phase)
            .is_some_and(|i| i < index),
    }
}

async fn drive_from(ctx: &Context, current: &mut WorkloadCluster) -> (Outcome, Action) {
    let cluster = current.clone();
    let cluster = &cluster;
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    // Once the pivot started, the phases before it must not run again.
    let position = |phase: Phase| {
        PIPELINE
            .iter()
            .position(|p| *p == phase)
            .unwrap_or_default()
    };
    let start = match pivoting::forward_state(ctx, &namespace, &name).await {
        Ok(Some(pivot::State::Done)) => position(Phase::HandedOver),
        Ok(Some(_)) => position(Phase::Pivoting),
        // No journal, but the status says the objects moved (the journal was deleted behind
        // our back): replaying Bootstrapping would create a second copy of the cluster.
        Ok(None) if was_pivoted(cluster) => position(Phase::HandedOver),
        Ok(None) => 0,
        Err(err) => {
            return (
                Outcome::Failed(Phase::Pivoting, err),
                Action::requeue(WAIT_RETRY),
            );
        }
    };
    let last_announced = PIPELINE
        .iter()
        .position(|p| *p == Phase::Pivoting)
        .unwrap_or_default();
    for (index, &phase) in PIPELINE.iter().enumerate().skip(start) {
        // Announce a provisioning phase as it starts (never going back, never announcing the
        // phases that mirror the agent).
        if index <= last_announced && stored_before(current, index) {
            let starting = Outcome::Waiting(
                phase,
                Progress::waiting("Starting", format!("{} started", phase.name())),
            );
            let desired = status::desired(current, &starting);
            match write_status_returning(ctx, current, desired).await {
                Ok(Some(updated)) => *current = updated,
                // The cached object was stale (409): read it fresh and announce once more.
                Ok(None) => {
                    let api: Api<WorkloadCluster> = Api::namespaced(ctx.client.clone(), &namespace);
                    if let Ok(fresh) = api.get(&name).await
                        && stored_before(&fresh, index)
                    {
                        let desired = status::desired(&fresh, &starting);
                        if let Ok(Some(updated)) =
                            write_status_returning(ctx, &fresh, desired).await
                        {
                            *current = updated;
                        }
                    }
                }
                Err(_) => {}
            }
        }
        let cluster = current.clone();
        let span = tracing::info_span!("phase", phase = phase.name());
        match phase.run(ctx, &cluster).instrument(span).await {
            Ok(Progress::Done) => {
                let point = phase.kill_point();
                if !point.is_empty() {
                    crate::pivot::kill::kill_point!(point, &name);
                }
            }
            Ok(Progress::Invalid(errors)) => {
                return (Outcome::Invalid(errors), Action::await_change());
            }
            Ok(Progress::Degraded(message)) => {
                return (
                    Outcome::Waiting(Phase::Degraded, Progress::waiting("AgentDegraded", message)),
                    Action::requeue(RESYNC),
                );
            }
            Ok(waiting @ Progress::Waiting { retry_after, .. }) => {
                // After the handover the phase mirrors the agent: while it works towards the
                // spec, the cluster is HandedOver.
                let shown = if phase == Phase::Ready {
                    Phase::HandedOver
                } else {
                    phase
                };
                return (
                    Outcome::Waiting(shown, waiting),
                    Action::requeue(retry_after),
                );
            }
            Err(err) => return (Outcome::Failed(phase, err), Action::requeue(WAIT_RETRY)),
        }
    }
    (Outcome::Done, Action::requeue(RESYNC))
}

/// Writes `desired` as the status unless it equals the stored one.
async fn write_status(
    ctx: &Context,
    cluster: &WorkloadCluster,
    desired: fledge_core::spec::WorkloadClusterStatus,
) -> Result<(), Error> {
    write_status_returning(ctx, cluster, desired)
        .await
        .map(|_| ())
}

/// [`write_status`], returning the object as written (`None`: nothing written).
async fn write_status_returning(
    ctx: &Context,
    cluster: &WorkloadCluster,
    desired: fledge_core::spec::WorkloadClusterStatus,
) -> Result<Option<WorkloadCluster>, Error> {
    let current = cluster.status.clone().unwrap_or_default();
    if owned_fields(&current) == owned_fields(&desired) {
        return Ok(None);
    }
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    tracing::info!(phase = ?desired.phase, step = ?desired.step, "Updating WorkloadCluster status");
    let api: Api<WorkloadCluster> = Api::namespaced(ctx.client.clone(), &namespace);
    // The resourceVersion makes the write conditional: if the object changed since we read
    // it (a spec update, another writer), the API answers 409 and the next reconcile
    // recomputes from the new object.
    let patch = serde_json::json!({
        "apiVersion": "fledge.dev/v1alpha1",
        "kind": "WorkloadCluster",
        "metadata": {"name": name, "resourceVersion": cluster.resource_version()},
        "status": owned_fields(&desired),
    });
    let params = PatchParams::apply(names::MANAGER_FIELD_MANAGER).force();
    match api
        .patch_status(&name, &params, &Patch::Apply(&patch))
        .await
    {
        Ok(written) => Ok(Some(written)),
        // The object changed since we read it; its watch event brings the new version and
        // another reconcile, which recomputes the status.
        Err(err) if crate::leader::is_status(&err, 409) => {
            tracing::debug!(
                "WorkloadCluster changed while reconciling; status recomputed next time"
            );
            Ok(None)
        }
        Err(source) => Err(Error::Kube {
            verb: "writing the status of",
            what: format!("WorkloadCluster {namespace}/{name}"),
            source,
        }),
    }
}

/// The status fields the pipeline owns and applies (the rest belongs to the AgentService).
fn owned_fields(status: &fledge_core::spec::WorkloadClusterStatus) -> serde_json::Value {
    let mut owned = serde_json::json!({
        "phase": status.phase,
        "message": status.message,
        "step": status.step,
        "progressPercent": status.progress_percent,
        "observedGeneration": status.observed_generation,
        "conditions": status.conditions,
    });
    // An absent field is left out rather than applied as null: server-side apply removes the
    // fields this manager stops applying.
    if let Some(map) = owned.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    owned
}
