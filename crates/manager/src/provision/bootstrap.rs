//! `Bootstrapping`: the bootstrap render (Cluster, VSphereCluster, control-plane template,
//! KubeadmControlPlane with one replica) applied to the management cluster.

use fledge_core::render::{Phase as RenderPhase, render};
use fledge_core::spec::WorkloadCluster;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, ResourceExt};

use super::{Context, Error, Progress, objects};

/// Waits for the user's vCenter credentials Secret, then applies the bootstrap objects.
/// Server-side apply of an unchanged object changes nothing, so re-running is safe.
///
/// # Errors
/// Reading the Secret, rendering or an apply failed.
pub async fn run(ctx: &Context, cluster: &WorkloadCluster) -> Result<Progress, Error> {
    let namespace = cluster.namespace().unwrap_or_default();
    let Some(vsphere) = cluster.spec.infrastructure.vsphere.as_ref() else {
        // Validation requires vSphere; rendering reports it precisely if that ever changes.
        return Err(Error::Render(
            fledge_core::render::RenderError::MissingVSphere,
        ));
    };
    let secret_name = &vsphere.credentials_secret;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let secret = secrets.get_opt(secret_name).await.map_err(Error::kube(
        "reading",
        format!("Secret {namespace}/{secret_name}"),
    ))?;
    if secret.is_none() {
        return Ok(Progress::waiting(
            fledge_core::names::CREDENTIALS_MISSING_REASON,
            format!(
                "Secret {namespace}/{secret_name} (spec.infrastructure.vsphere.credentialsSecret) does not exist; create it with keys username and password"
            ),
        ));
    }
    for obj in render(cluster, RenderPhase::Bootstrap)? {
        objects::apply(&ctx.client, &obj, false).await?;
    }
    Ok(Progress::Done)
}
