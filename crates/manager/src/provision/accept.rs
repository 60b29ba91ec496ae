//! `Accepted`: the spec is valid and the finalizer is on; and deletion of a cluster.

use fledge_core::names;
use fledge_core::spec::WorkloadCluster;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};

use super::{Context, Error, Progress, status};

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

/// Deletion: removes the finalizer when nothing was provisioned (no CAPI `Cluster` in the
/// management cluster); otherwise says in a condition that deletion needs the reverse pivot,
/// which a later step brings, and waits.
///
/// # Errors
/// Reading the CAPI `Cluster` or writing the WorkloadCluster failed.
pub async fn cleanup(ctx: &Context, cluster: &WorkloadCluster) -> Result<Action, Error> {
    if !has_finalizer(cluster) {
        return Ok(Action::await_change());
    }
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "cluster.x-k8s.io",
        "v1beta2",
        "Cluster",
    ));
    let capi: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
    let provisioned = capi
        .get_opt(&name)
        .await
        .map_err(Error::kube(
            "reading",
            format!("Cluster {namespace}/{name}"),
        ))?
        .is_some();
    let past_bootstrap = cluster
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| ["Pivoting", "HandedOver", "Ready"].contains(&p));
    if !provisioned && !past_bootstrap {
        tracing::info!("Removing the WorkloadCluster finalizer: nothing was provisioned");
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
            ))?;
        return Ok(Action::await_change());
    }
    let mut desired = cluster.status.clone().unwrap_or_default();
    status::set_condition(
        &mut desired,
        cluster.metadata.generation,
        names::DELETING_CONDITION,
        "False",
        names::DELETION_NEEDS_REVERSE_PIVOT_REASON,
        "the cluster has provisioned objects; deleting it comes with the reverse pivot",
    );
    super::write_status(ctx, cluster, desired).await?;
    Ok(Action::requeue(std::time::Duration::from_secs(60)))
}

fn has_finalizer(cluster: &WorkloadCluster) -> bool {
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
