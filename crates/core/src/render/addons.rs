//! Add-ons of a `ClusterProfile`: inline manifests as written, Helm charts as Flux objects.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{RenderError, to_value};
use crate::capi::{
    CrossNamespaceObjectReference, CrossNamespaceSourceReference, HelmChartTemplate,
    HelmChartTemplateSpec, HelmInstall, HelmRelease, HelmReleaseSpec, HelmRemediation,
    HelmRepository, HelmRepositorySpec, HelmUpgrade, OCILayerSelector, OCIRepository,
    OCIRepositoryRef, OCIRepositorySpec,
};
use crate::names;
use crate::spec::{Addon, HelmChart, WorkloadCluster};

/// How often Flux re-reads a chart source.
const SOURCE_INTERVAL: &str = "1h";
/// How often Flux reconciles a release (and repairs drift).
const RELEASE_INTERVAL: &str = "10m";
/// Attempts of a failed install or upgrade before Flux gives up and the health gate
/// reports it.
const HELM_RETRIES: i64 = 3;
/// Media type of the layer that holds a Helm chart in an OCI artifact.
const HELM_CHART_MEDIA_TYPE: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// Renders one add-on into the objects the agent applies in the workload cluster.
///
/// Inline `manifests` are returned as written, in order; defaulting their namespace is
/// left to the caller. A `helm` chart becomes a Flux source, a `HelmRepository` for an
/// `https://` repository or an `OCIRepository` for an `oci://` one, followed by a
/// `HelmRelease`, both named after the add-on in [`names::FLUX_NAMESPACE`]. The release
/// installs into `helm.namespace` (the add-on's name when absent), creating it, and its
/// timeout is the health gate's.
///
/// # Errors
/// [`RenderError::MissingName`] if the cluster has no name, [`RenderError::EmptyAddon`],
/// [`RenderError::BadManifest`] for a manifest without `apiVersion` and `kind`,
/// [`RenderError::UnsupportedRepository`] for any other URL scheme.
pub fn render_addon(
    cluster: &WorkloadCluster,
    addon: &Addon,
) -> Result<Vec<serde_json::Value>, RenderError> {
    let cluster_name = cluster
        .metadata
        .name
        .as_deref()
        .ok_or(RenderError::MissingName)?;
    if addon.manifests.is_none() && addon.helm.is_none() {
        return Err(RenderError::EmptyAddon {
            addon: addon.name.clone(),
        });
    }
    let mut out = Vec::new();
    for (index, manifest) in addon.manifests.iter().flatten().enumerate() {
        check_manifest(addon, index, manifest)?;
        out.push(manifest.clone());
    }
    if let Some(helm) = &addon.helm {
        let meta = flux_meta(cluster_name, &addon.name);
        let (source, chart, chart_ref) = helm_source(addon, helm, meta.clone())?;
        out.push(source);
        let target_namespace = helm.namespace.clone().unwrap_or_else(|| addon.name.clone());
        let remediation = Some(HelmRemediation {
            retries: Some(HELM_RETRIES),
        });
        let mut release = HelmRelease::new(
            &addon.name,
            HelmReleaseSpec {
                interval: RELEASE_INTERVAL.to_owned(),
                chart,
                chart_ref,
                release_name: Some(
                    helm.release_name
                        .clone()
                        .unwrap_or_else(|| addon.name.clone()),
                ),
                target_namespace: Some(target_namespace.clone()),
                // Helm keeps the release next to what it installed, as `helm install -n`
                // would, so `helm ls -n <namespace>` finds it.
                storage_namespace: Some(target_namespace),
                timeout: addon
                    .health
                    .as_ref()
                    .and_then(|h| h.timeout_seconds)
                    .map(|s| format!("{s}s")),
                install: Some(HelmInstall {
                    create_namespace: Some(true),
                    remediation: remediation.clone(),
                }),
                upgrade: Some(HelmUpgrade { remediation }),
                values: helm.values.clone(),
            },
        );
        release.metadata = meta;
        out.push(to_value("HelmRelease", &release)?);
    }
    Ok(out)
}

/// The chart source object, and how the release refers to it.
fn helm_source(
    addon: &Addon,
    helm: &HelmChart,
    meta: ObjectMeta,
) -> Result<
    (
        serde_json::Value,
        Option<HelmChartTemplate>,
        Option<CrossNamespaceSourceReference>,
    ),
    RenderError,
> {
    let url = helm.repository.trim_end_matches('/');
    if url.starts_with("https://") {
        let mut repo = HelmRepository::new(
            &addon.name,
            HelmRepositorySpec {
                url: url.to_owned(),
                interval: Some(SOURCE_INTERVAL.to_owned()),
            },
        );
        repo.metadata = meta;
        let chart = HelmChartTemplate {
            spec: HelmChartTemplateSpec {
                chart: helm.chart.clone(),
                version: Some(helm.version.clone()),
                source_ref: CrossNamespaceObjectReference {
                    kind: "HelmRepository".to_owned(),
                    name: addon.name.clone(),
                    namespace: Some(names::FLUX_NAMESPACE.to_owned()),
                },
            },
        };
        Ok((to_value("HelmRepository", &repo)?, Some(chart), None))
    } else if url.starts_with("oci://") {
        // An exact version is a tag; anything else (a range) is resolved by Flux.
        let version = &helm.version;
        let reference =
            if semver::Version::parse(version.strip_prefix('v').unwrap_or(version)).is_ok() {
                OCIRepositoryRef {
                    tag: Some(version.clone()),
                    semver: None,
                }
            } else {
                OCIRepositoryRef {
                    tag: None,
                    semver: Some(version.clone()),
                }
            };
        let mut repo = OCIRepository::new(
            &addon.name,
            OCIRepositorySpec {
                url: format!("{url}/{}", helm.chart),
                interval: SOURCE_INTERVAL.to_owned(),
                reference: Some(reference),
                layer_selector: Some(OCILayerSelector {
                    media_type: HELM_CHART_MEDIA_TYPE.to_owned(),
                    operation: Some("copy".to_owned()),
                }),
            },
        );
        repo.metadata = meta;
        let chart_ref = CrossNamespaceSourceReference {
            kind: "OCIRepository".to_owned(),
            name: addon.name.clone(),
            namespace: Some(names::FLUX_NAMESPACE.to_owned()),
        };
        Ok((to_value("OCIRepository", &repo)?, None, Some(chart_ref)))
    } else {
        Err(RenderError::UnsupportedRepository {
            addon: addon.name.clone(),
            url: helm.repository.clone(),
        })
    }
}

fn flux_meta(cluster: &str, addon: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(addon.to_owned()),
        namespace: Some(names::FLUX_NAMESPACE.to_owned()),
        labels: Some(BTreeMap::from([
            (names::ADDON_LABEL.to_owned(), addon.to_owned()),
            (names::CLUSTER_NAME_LABEL.to_owned(), cluster.to_owned()),
            (names::FLEDGE_CLUSTER_LABEL.to_owned(), cluster.to_owned()),
        ])),
        ..ObjectMeta::default()
    }
}

fn check_manifest(
    addon: &Addon,
    index: usize,
    manifest: &serde_json::Value,
) -> Result<(), RenderError> {
    let bad = |reason| RenderError::BadManifest {
        addon: addon.name.clone(),
        index,
        reason,
    };
    let obj = manifest.as_object().ok_or_else(|| bad("not an object"))?;
    for field in ["apiVersion", "kind"] {
        let value = obj.get(field).and_then(|v| v.as_str()).unwrap_or_default();
        if value.is_empty() {
            return Err(bad("apiVersion and kind must be non-empty strings"));
        }
    }
    Ok(())
}
