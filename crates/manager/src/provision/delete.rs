//! Deletion (phase `Deleting`). A self-managed cluster cannot delete itself cleanly, so a
//! pivoted cluster is first moved back into the management cluster (reverse pivot, same
//! crash-safe mover, source = the workload cluster through `<name>-fledge-kubeconfig`); then
//! the Cluster is deleted there, Cluster API deletes the machines, and the leftovers (templates,
//! the kubeconfig copy, the journal) go; the WorkloadCluster's finalizer goes last. A cluster
//! that was never pivoted skips the reverse pivot. Every step observes the world first, so a
//! manager killed at any line finishes the deletion after a restart.

use std::time::Duration;

use fledge_core::names;
use fledge_core::spec::WorkloadCluster;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{Context, Error, Progress, accept, pivoting, status};
use crate::pivot::kill::kill_point;
use crate::pivot::{self, Direction, Journal, MoveOptions, MoveOutcome, State};

const RETRY: Duration = Duration::from_secs(2);

/// Drives the deletion one step as far as the world allows and records where it waits.
///
/// # Errors
/// A call failed for a non-retryable reason.
pub async fn run(ctx: &Context, cluster: &WorkloadCluster) -> Result<Action, Error> {
    if !accept::has_finalizer(cluster) {
        return Ok(Action::await_change());
    }
    match step(ctx, cluster).await {
        Ok(Progress::Done) => {
            accept::remove_finalizer(ctx, cluster).await?;
            Ok(Action::await_change())
        }
        Ok(Progress::Waiting {
            step,
            message,
            retry_after,
        }) => {
            let desired = status::deleting(cluster, step, &message);
            super::write_status(ctx, cluster, desired).await?;
            Ok(Action::requeue(retry_after))
        }
        Ok(Progress::Invalid(_) | Progress::Degraded(_)) => Ok(Action::requeue(RETRY)),
        Err(err) => {
            let desired = status::deleting(cluster, names::PHASE_FAILED_REASON, &err.to_string());
            super::write_status(ctx, cluster, desired).await?;
            Err(err)
        }
    }
}

fn cluster_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cluster.x-k8s.io",
        "v1beta2",
        "Cluster",
    ))
}

async fn step(ctx: &Context, cluster: &WorkloadCluster) -> Result<Progress, Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let forward = Journal::new(&ctx.client, &namespace, &name, Direction::Forward);
    let reverse = Journal::new(&ctx.client, &namespace, &name, Direction::Reverse);
    let options = MoveOptions::from_env();
    let stored = forward.load().await.map_err(Error::Pivot)?;
    // Pivoted: a forward move started and did not roll back, or the reverse move is under way.
    // A finished reverse move needs nothing more from the workload cluster.
    let pivoted = stored.as_ref().is_some_and(|s| match s.record.direction {
        Direction::Forward => s.record.state != State::RolledBack,
        Direction::Reverse => s.record.state != State::Done,
    });
    if pivoted {
        let Some(workload) = pivoting::workload_client_from_copy(ctx, &namespace, &name).await?
        else {
            return Err(Error::Internal(format!(
                "Secret {namespace}/{} is missing: cannot reach the workload cluster",
                pivoting::kubeconfig_copy_name(&name)
            )));
        };
        // A forward move still under way finishes first (never leave objects on both sides).
        let forward_unfinished = stored.as_ref().is_some_and(|s| {
            s.record.direction == Direction::Forward && s.record.state != State::Done
        });
        if forward_unfinished
            && let Err(err) = pivot::move_cluster(
                &ctx.client,
                &workload,
                &namespace,
                &name,
                &forward,
                &options,
            )
            .await
        {
            return pivoting::progress_of(err, "FinishingPivot");
        }
        match pivot::move_cluster(
            &workload,
            &ctx.client,
            &namespace,
            &name,
            &reverse,
            &options,
        )
        .await
        {
            Ok(report) => {
                if let MoveOutcome::RolledBack { reason } = report.outcome {
                    // Try again: the journal of the rolled-back attempt makes way for a new one.
                    reverse.delete().await.map_err(Error::Pivot)?;
                    return Ok(Progress::waiting(
                        "ReversePivotRolledBack",
                        format!("the reverse pivot rolled back ({reason}); retrying"),
                    ));
                }
                if report.performed {
                    tracing::info!(
                        objects = report.objects,
                        duration_ms =
                            u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
                        "Reverse pivot done: the CAPI objects are back in the management cluster"
                    );
                }
            }
            Err(err) => return pivoting::progress_of(err, "ReversePivoting"),
        }
    }
    // The Cluster in the management cluster: delete it and wait until Cluster API is done.
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &namespace, &cluster_resource());
    if let Some(capi) = clusters.get_opt(&name).await.map_err(Error::kube(
        "reading",
        format!("Cluster {namespace}/{name}"),
    ))? {
        if capi.metadata.deletion_timestamp.is_none() {
            tracing::info!("Deleting the CAPI Cluster in the management cluster");
            match clusters.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    return Err(Error::kube(
                        "deleting",
                        format!("Cluster {namespace}/{name}"),
                    )(e));
                }
            }
            kill_point!("delete-after-cluster-delete", &name);
        }
        return Ok(Progress::waiting(
            "WaitingForClusterDeletion",
            "Cluster API is deleting the machines and the Cluster",
        ));
    }
    // Leftovers no Cluster owned (templates): anything of the cluster's Cluster API kinds.
    let kinds = pivot::graph::capi_kinds(&ctx.client)
        .await
        .map_err(Error::Pivot)?;
    let selector = format!("{}={name}", names::CLUSTER_NAME_LABEL);
    let mut remaining = 0;
    for kind in kinds {
        let api: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), &namespace, &kind.resource);
        let list = match api.list(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            Err(kube::Error::Api(s)) if s.code == 404 => continue,
            Err(e) => return Err(Error::kube("listing", kind.resource.plural.clone())(e)),
        };
        for obj in list.items {
            remaining += 1;
            if obj.metadata.deletion_timestamp.is_none() {
                let obj_name = obj.name_any();
                match api.delete(&obj_name, &DeleteParams::default()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        return Err(Error::kube(
                            "deleting",
                            format!("{} {obj_name}", kind.resource.kind),
                        )(e));
                    }
                }
            }
        }
    }
    if remaining > 0 {
        return Ok(Progress::waiting(
            "DeletingLeftovers",
            format!("{remaining} Cluster API objects of the cluster are being deleted"),
        ));
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let copy = pivoting::kubeconfig_copy_name(&name);
    match secrets.delete(&copy, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => {
            return Err(Error::kube(
                "deleting",
                format!("Secret {namespace}/{copy}"),
            )(e));
        }
    }
    forward.delete().await.map_err(Error::Pivot)?;
    kill_point!("delete-after-cleanup", &name);
    Ok(Progress::Done)
}
