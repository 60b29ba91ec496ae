//! `WaitingForControlPlane`: the KubeadmControlPlane is initialized, the `<cluster>-kubeconfig`
//! Secret exists and the workload cluster's API answers.

use fledge_core::render::control_plane_name;
use fledge_core::spec::WorkloadCluster;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, ResourceExt};

use super::{Context, Error, Progress, objects};

/// Observes the three conditions in order; each unmet one is a wait with its own step name.
///
/// # Errors
/// Reading the KubeadmControlPlane or the kubeconfig Secret failed.
pub async fn run(ctx: &Context, cluster: &WorkloadCluster) -> Result<Progress, Error> {
    let name = cluster.name_any();
    let namespace = cluster.namespace().unwrap_or_default();
    let kcp_name = control_plane_name(&name);
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(
        "controlplane.cluster.x-k8s.io",
        "v1beta2",
        "KubeadmControlPlane",
    ));
    let kcps: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &namespace, &resource);
    let kcp = kcps.get_opt(&kcp_name).await.map_err(Error::kube(
        "reading",
        format!("KubeadmControlPlane {namespace}/{kcp_name}"),
    ))?;
    let initialized = kcp.as_ref().is_some_and(|k| {
        k.data["status"]["initialization"]["controlPlaneInitialized"] == serde_json::json!(true)
    });
    if !initialized {
        return Ok(Progress::waiting(
            "WaitingForControlPlaneInitialized",
            format!(
                "KubeadmControlPlane {namespace}/{kcp_name}: status.initialization.controlPlaneInitialized is not true yet"
            ),
        ));
    }
    let Some(client) =
        objects::workload_client(&ctx.client, &namespace, &name, ctx.call_timeout).await?
    else {
        return Ok(Progress::waiting(
            "WaitingForKubeconfig",
            format!("Secret {namespace}/{name}-kubeconfig does not exist yet"),
        ));
    };
    match tokio::time::timeout(ctx.call_timeout, client.apiserver_version()).await {
        Ok(Ok(_)) => Ok(Progress::Done),
        Ok(Err(err)) => Ok(Progress::waiting(
            "WaitingForWorkloadApi",
            format!("the workload cluster's API does not answer /version: {err}"),
        )),
        Err(_) => Ok(Progress::waiting(
            "WaitingForWorkloadApi",
            format!(
                "the workload cluster's API did not answer /version within {}s",
                ctx.call_timeout.as_secs()
            ),
        )),
    }
}
