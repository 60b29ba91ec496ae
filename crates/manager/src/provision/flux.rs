//! Flux for the profile's Helm add-ons: part of `InstallingProviders` when the cluster's
//! profile has Helm add-ons. The agent renders each Helm add-on as Flux sources and a
//! `HelmRelease`, so Flux's CRDs and its source and helm controllers must run in the workload
//! cluster before the agent takes over.
//!
//! The CRDs are copied from the management cluster (like the CAPI providers' CRDs; a
//! management cluster without them is reported, not papered over); the controllers come from
//! `deploy/flux/flux.yaml`, where their versions are pinned. Every step is an idempotent
//! server-side apply, and the step is done once both Deployments are Available.

use fledge_core::spec::{ClusterProfile, WorkloadCluster};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client, ResourceExt};

use super::providers::{crd_resource, is_available, list_portable};
use super::{Context, Error, Progress, agent, objects};

/// The API groups of Flux's CRDs that Helm add-ons use.
pub const FLUX_GROUPS: &[&str] = &["source.toolkit.fluxcd.io", "helm.toolkit.fluxcd.io"];
/// Namespace of the Flux controllers.
pub const FLUX_NAMESPACE: &str = fledge_core::names::FLUX_NAMESPACE;
/// The controllers' Deployments, all of which must be Available.
pub const FLUX_DEPLOYMENTS: &[&str] = &["source-controller", "helm-controller"];
const MANIFESTS: &str = include_str!("../../../../deploy/flux/flux.yaml");

/// Whether the cluster's profile has a Helm add-on (a missing profile needs nothing yet: the
/// API refuses clusters naming an unknown profile, and the pipeline looks again later).
async fn needed(ctx: &Context, cluster: &WorkloadCluster) -> Result<bool, Error> {
    let Some(profile) = cluster.spec.profile.as_deref() else {
        return Ok(false);
    };
    let namespace = cluster.namespace().unwrap_or_default();
    let api: Api<ClusterProfile> = Api::namespaced(ctx.client.clone(), &namespace);
    let profile = api.get_opt(profile).await.map_err(Error::kube(
        "reading",
        format!("ClusterProfile {namespace}/{profile}"),
    ))?;
    Ok(profile.is_some_and(|p| p.spec.addons.iter().any(|a| a.helm.is_some())))
}

async fn available(target: &Client) -> Result<Vec<&'static str>, Error> {
    let api: Api<Deployment> = Api::namespaced(target.clone(), FLUX_NAMESPACE);
    let mut missing = Vec::new();
    for name in FLUX_DEPLOYMENTS {
        let deployment = api.get_opt(name).await.map_err(Error::workload(
            "reading",
            format!("Deployment {FLUX_NAMESPACE}/{name}"),
        ))?;
        if !deployment.as_ref().is_some_and(is_available) {
            missing.push(*name);
        }
    }
    Ok(missing)
}

/// Installs Flux into `target` when the profile needs it. `None` when nothing is left to do,
/// else the wait.
///
/// # Errors
/// The management cluster has no Flux CRDs to copy, or a read or an apply failed.
pub async fn ensure(
    ctx: &Context,
    cluster: &WorkloadCluster,
    target: &Client,
) -> Result<Option<Progress>, Error> {
    if !needed(ctx, cluster).await? || available(target).await?.is_empty() {
        return Ok(None);
    }
    let crds: Vec<serde_json::Value> = list_portable(&ctx.client, &crd_resource(), None, None)
        .await?
        .into_iter()
        .filter(|c| {
            c["spec"]["group"]
                .as_str()
                .is_some_and(|g| FLUX_GROUPS.contains(&g))
        })
        .collect();
    if crds.is_empty() {
        return Err(Error::Inventory(format!(
            "the profile has Helm add-ons but the management cluster has no Flux CRDs ({}) to install into the workload cluster",
            FLUX_GROUPS.join(", ")
        )));
    }
    tracing::info!("Installing Flux into the workload cluster for the profile's Helm add-ons");
    for crd in &crds {
        objects::apply(target, crd, true).await?;
    }
    for obj in agent::manifests("flux.yaml", MANIFESTS, &[])? {
        objects::apply(target, &obj, true).await?;
    }
    let missing = available(target).await?;
    if missing.is_empty() {
        return Ok(None);
    }
    Ok(Some(Progress::waiting(
        "WaitingForFlux",
        format!(
            "Flux Deployments not Available in the workload cluster yet: {}",
            missing.join(", ")
        ),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_hold_the_pinned_controllers() {
        let objects = agent::manifests("flux.yaml", MANIFESTS, &[]).expect("manifests parse");
        let deployments: Vec<(&str, &str)> = objects
            .iter()
            .filter(|o| o["kind"] == "Deployment")
            .map(|o| {
                (
                    o["metadata"]["name"].as_str().unwrap_or_default(),
                    o["spec"]["template"]["spec"]["containers"][0]["image"]
                        .as_str()
                        .unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            deployments,
            [
                (
                    "source-controller",
                    "ghcr.io/fluxcd/source-controller:v1.6.0"
                ),
                ("helm-controller", "ghcr.io/fluxcd/helm-controller:v1.3.0"),
            ]
        );
        assert!(
            objects
                .iter()
                .all(|o| o["kind"] != "Deployment" || o["metadata"]["namespace"] == FLUX_NAMESPACE)
        );
    }
}
