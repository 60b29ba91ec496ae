//! `Pivoting`: the cluster's Cluster API objects move into the workload cluster with the
//! crash-safe mover (`crate::pivot`).
//!
//! First the `<name>-kubeconfig` Secret is copied to `<name>-fledge-kubeconfig` in the
//! management cluster (label `fledge.dev/cluster`, no `cluster.x-k8s.io/cluster-name` label, so
//! it never moves): the original is a CAPI Secret and moves with the cluster, and the manager
//! still needs to reach the workload cluster afterwards (reverse pivot, GetKubeconfig).

use std::collections::BTreeMap;
use std::time::Duration;

use fledge_core::names;
use fledge_core::spec::WorkloadCluster;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::{Context, Error, Progress, objects};
use crate::pivot::kill::kill_point;
use crate::pivot::{self, Direction, Journal, MoveOptions, MoveOutcome, PivotError, State};

/// Name of the management cluster's copy of a workload cluster's kubeconfig.
pub fn kubeconfig_copy_name(cluster: &str) -> String {
    format!("{cluster}-fledge-kubeconfig")
}

/// How long after a rollback the pivot is tried again (env override for tests).
fn retry_after_rollback() -> Duration {
    std::env::var("FLEDGE_PIVOT_RETRY_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(60), Duration::from_secs)
}

/// The state of the forward move of `cluster`, if one started: from then on the CAPI objects
/// may be (partly) in the workload cluster, and the phases before `Pivoting` must not run again
/// (Bootstrapping would re-create them in the management cluster). After a rollback too, the
/// earlier phases are done: `Pivoting` retries and its status says why it waits.
///
/// # Errors
/// Reading the journal failed.
pub async fn forward_state(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<State>, Error> {
    let journal = Journal::new(&ctx.client, namespace, name, Direction::Forward);
    Ok(journal
        .load()
        .await
        .map_err(Error::Pivot)?
        .and_then(|s| (s.record.direction == Direction::Forward).then_some(s.record.state)))
}

/// Copies `<name>-kubeconfig` to `<name>-fledge-kubeconfig` (create or update); no-op when the
/// original is gone (moved).
///
/// # Errors
/// A read or the write failed.
pub async fn copy_kubeconfig(client: &Client, namespace: &str, name: &str) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let original = format!("{name}-kubeconfig");
    let Some(secret) = secrets.get_opt(&original).await.map_err(Error::kube(
        "reading",
        format!("Secret {namespace}/{original}"),
    ))?
    else {
        return Ok(());
    };
    let Some(value) = secret.data.as_ref().and_then(|d| d.get("value")).cloned() else {
        return Ok(());
    };
    let copy_name = kubeconfig_copy_name(name);
    let copy = Secret {
        metadata: ObjectMeta {
            name: Some(copy_name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                names::FLEDGE_CLUSTER_LABEL.to_string(),
                name.to_string(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("value".to_string(), ByteString(value.0))])),
        type_: Some("Opaque".to_string()),
        ..Secret::default()
    };
    let mut body = serde_json::to_value(&copy)
        .map_err(|e| Error::Internal(format!("serializing the kubeconfig copy: {e}")))?;
    body["apiVersion"] = serde_json::json!("v1");
    body["kind"] = serde_json::json!("Secret");
    secrets
        .patch(
            &copy_name,
            &PatchParams::apply(names::MANAGER_FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::kube(
            "applying",
            format!("Secret {namespace}/{copy_name}"),
        ))?;
    Ok(())
}

/// A client of the workload cluster from the management cluster's copy of its kubeconfig.
///
/// # Errors
/// Reading the Secret failed or its kubeconfig is unusable.
pub async fn workload_client_from_copy(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<Option<Client>, Error> {
    objects::client_from_secret(
        &ctx.client,
        namespace,
        &kubeconfig_copy_name(name),
        ctx.call_timeout,
    )
    .await
}

/// Maps a mover error to a wait (retryable conditions) or a failure.
pub fn progress_of(err: PivotError, what: &'static str) -> Result<Progress, Error> {
    match err {
        PivotError::Precondition(message) => {
            Ok(Progress::waiting("WaitingForPivotPreconditions", message))
        }
        err @ PivotError::TargetUnreachable { .. } => {
            Ok(Progress::waiting("TargetUnreachable", err.to_string()))
        }
        err if err.is_target_unreachable() => {
            Ok(Progress::waiting("TargetUnreachable", err.to_string()))
        }
        // Another writer moved the journal on: look again.
        PivotError::Journal { source, .. } if crate::leader::is_status(&source, 409) => {
            Ok(Progress::waiting(what, "the journal changed; resuming"))
        }
        err => Err(Error::Pivot(err)),
    }
}

/// Runs (or resumes) the forward move.
///
/// # Errors
/// A read, the kubeconfig copy or the move failed for a non-retryable reason.
pub async fn run(ctx: &Context, cluster: &WorkloadCluster) -> Result<Progress, Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let journal = Journal::new(&ctx.client, &namespace, &name, Direction::Forward);
    let stored = journal.load().await.map_err(Error::Pivot)?;
    match stored
        .as_ref()
        .map(|s| (s.record.direction, s.record.state))
    {
        Some((Direction::Forward, State::Done)) => return Ok(Progress::Done),
        Some((Direction::Forward, State::RolledBack)) => {
            let record = stored.as_ref().map(|s| &s.record);
            let finished = record
                .and_then(|r| r.finished_at.clone())
                .unwrap_or_default();
            let age = chrono::DateTime::parse_from_rfc3339(&finished)
                .ok()
                .and_then(|t| {
                    (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                        .to_std()
                        .ok()
                })
                .unwrap_or_default();
            let retry = retry_after_rollback();
            if age < retry {
                return Ok(Progress::Waiting {
                    step: "PivotRolledBack",
                    message: format!(
                        "the pivot rolled back ({}); retrying in {}s",
                        record.and_then(|r| r.reason.clone()).unwrap_or_default(),
                        (retry - age).as_secs()
                    ),
                    retry_after: (retry - age).max(Duration::from_secs(1)),
                });
            }
            tracing::info!("Retrying the pivot after a rollback");
            journal.delete().await.map_err(Error::Pivot)?;
        }
        _ => {}
    }
    copy_kubeconfig(&ctx.client, &namespace, &name).await?;
    kill_point!("pivot-after-kubeconfig-copy", &name);
    let Some(target) = workload_client_from_copy(ctx, &namespace, &name).await? else {
        return Ok(Progress::waiting(
            "WaitingForKubeconfig",
            format!(
                "Secret {namespace}/{} does not exist",
                kubeconfig_copy_name(&name)
            ),
        ));
    };
    let options = MoveOptions::from_env();
    match pivot::move_cluster(&ctx.client, &target, &namespace, &name, &journal, &options).await {
        Ok(report) => match report.outcome {
            MoveOutcome::Moved => {
                if report.performed {
                    tracing::info!(
                        objects = report.objects,
                        duration_ms =
                            u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
                        "Pivot done: the CAPI objects live in the workload cluster"
                    );
                }
                Ok(Progress::Done)
            }
            MoveOutcome::RolledBack { reason } => Ok(Progress::Waiting {
                step: "PivotRolledBack",
                message: format!("the pivot rolled back: {reason}"),
                retry_after: retry_after_rollback(),
            }),
        },
        Err(err) => progress_of(err, "Pivoting"),
    }
}
