//! `Accepted`: the spec is valid and the finalizer is on (deletion: `delete.rs`).

use fledge_core::names;
use fledge_core::spec::WorkloadCluster;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use super::{Context, Error, Progress};

/// Validates the spec, then adds the finalizer if it is missing. An invalid spec gets no
/// finalizer: nothing is provisioned for it, so there is nothing to tear down.
///
/// # Errors
/// Adding the finalizer failed.
pub async fn run(ctx: &Context, cluster: &WorkloadCluster) -> Result<Progress, Error> {
    if let Err(errors) = fledge_core::validate::validate_cluster(cluster) {
        return Ok(Progress::Invalid(errors));
    }
    if has_finalizer(cluster) {
        return Ok(Progress::Done);
    }
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    tracing::info!("Adding the WorkloadCluster finalizer");
    let mut finalizers = cluster.finalizers().to_vec();
    finalizers.push(names::WORKLOAD_CLUSTER_FINALIZER.to_string());
    set_finalizers(ctx, cluster, finalizers)
        .await
        .map_err(Error::kube(
            "adding the finalizer to",
            format!("WorkloadCluster {namespace}/{name}"),
        ))?;
    Ok(Progress::Done)
}

/// Removes the WorkloadCluster finalizer (the last step of deletion).
///
/// # Errors
/// The write failed.
pub async fn remove_finalizer(ctx: &Context, cluster: &WorkloadCluster) -> Result<(), Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    tracing::info!("Removing the WorkloadCluster finalizer: the cluster is gone");
    let finalizers = cluster
        .finalizers()
        .iter()
        .filter(|f| *f != names::WORKLOAD_CLUSTER_FINALIZER)
        .cloned()
        .collect();
    set_finalizers(ctx, cluster, finalizers)
        .await
        .map_err(Error::kube(
            "removing the finalizer from",
            format!("WorkloadCluster {namespace}/{name}"),
        ))
}

/// Whether the WorkloadCluster carries the manager's finalizer.
pub fn has_finalizer(cluster: &WorkloadCluster) -> bool {
    cluster
        .finalizers()
        .iter()
        .any(|f| f == names::WORKLOAD_CLUSTER_FINALIZER)
}

/// Writes `metadata.finalizers` with a merge patch carrying the resourceVersion we read, so a
/// concurrent change makes this a 409 and the next reconcile starts from the new object.
async fn set_finalizers(
    ctx: &Context,
    cluster: &WorkloadCluster,
    finalizers: Vec<String>,
) -> Result<(), kube::Error> {
    let api: Api<WorkloadCluster> =
        Api::namespaced(ctx.client.clone(), &cluster.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": cluster.resource_version()},
    });
    api.patch(
        &cluster.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map(|_| ())
}
