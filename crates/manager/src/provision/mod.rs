//! The provisioning pipeline: one kube-runtime `Controller` over every `WorkloadCluster`,
//! driving each through an explicit list of phases ([`PIPELINE`]).
//!
//! # Layout
//! - this file: the phase list, the reconciler (`reconcile`, `error_policy`, `run`) and the
//!   status write;
//! - `status.rs`: pure functions from a phase outcome to the `WorkloadCluster`'s status;
//! - `accept.rs`, `bootstrap.rs`, `control_plane.rs`, `providers.rs`, `agent.rs`: one
//!   phase each;
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
//! # Caveats
//! - Clusters whose phase is past the last implemented one (`Pivoting`, `HandedOver`,
//!   `Ready`) are left alone: after a pivot the CAPI objects no longer live in the
//!   management cluster, and replaying `Bootstrapping` would recreate them.

mod accept;
mod agent;
mod bootstrap;
mod control_plane;
mod objects;
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
    /// The CAPI objects move into the workload cluster (next step; not in [`PIPELINE`] yet).
    Pivoting,
    /// The agent took over.
    HandedOver,
    /// The agent reports the desired state reached.
    Ready,
}

/// Provisioning steps in order. Each one first looks at the world and returns `Done` straight
/// away if its work is already there, so a restarted manager replays the list safely.
/// `Pivoting` joins the list when the mover lands.
pub const PIPELINE: &[Phase] = &[
    Phase::Accepted,
    Phase::Bootstrapping,
    Phase::WaitingForControlPlane,
    Phase::InstallingProviders,
    Phase::InstallingAgent,
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
            Phase::Ready => 100,
        }
    }

    /// Whether the pipeline of this version hands clusters in this phase to a later step.
    fn is_past_pipeline(name: &str) -> bool {
        [Phase::Pivoting, Phase::HandedOver, Phase::Ready]
            .iter()
            .any(|p| p.name() == name)
    }

    async fn run(self, ctx: &Context, cluster: &WorkloadCluster) -> Result<Progress, Error> {
        match self {
            Phase::Accepted => accept::run(ctx, cluster).await,
            Phase::Bootstrapping => bootstrap::run(ctx, cluster).await,
            Phase::WaitingForControlPlane => control_plane::run(ctx, cluster).await,
            Phase::InstallingProviders => providers::run(ctx, cluster).await,
            Phase::InstallingAgent => agent::run(ctx, cluster).await,
            Phase::Pivoting | Phase::HandedOver | Phase::Ready => Err(Error::Internal(format!(
                "phase {} is not implemented",
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
            return accept::cleanup(&ctx, &cluster).await;
        }
        let current = cluster
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if Phase::is_past_pipeline(&current) {
            return Ok(Action::await_change());
        }
        let (outcome, action) = drive(&ctx, &cluster).await;
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

async fn drive(ctx: &Context, cluster: &WorkloadCluster) -> (Outcome, Action) {
    for &phase in PIPELINE {
        let span = tracing::info_span!("phase", phase = phase.name());
        match phase.run(ctx, cluster).instrument(span).await {
            Ok(Progress::Done) => {}
            Ok(Progress::Invalid(errors)) => {
                return (Outcome::Invalid(errors), Action::await_change());
            }
            Ok(waiting @ Progress::Waiting { retry_after, .. }) => {
                return (
                    Outcome::Waiting(phase, waiting),
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
    if cluster.status.as_ref() == Some(&desired) {
        return Ok(());
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
        "status": desired,
    });
    let params = PatchParams::apply(names::MANAGER_FIELD_MANAGER).force();
    match api
        .patch_status(&name, &params, &Patch::Apply(&patch))
        .await
    {
        Ok(_) => Ok(()),
        // The object changed since we read it; its watch event brings the new version and
        // another reconcile, which recomputes the status.
        Err(err) if crate::leader::is_status(&err, 409) => {
            tracing::debug!(
                "WorkloadCluster changed while reconciling; status recomputed next time"
            );
            Ok(())
        }
        Err(source) => Err(Error::Kube {
            verb: "writing the status of",
            what: format!("WorkloadCluster {namespace}/{name}"),
            source,
        }),
    }
}
