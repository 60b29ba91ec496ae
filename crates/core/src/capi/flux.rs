//! Flux: `HelmRepository` and `OCIRepository` (`source.toolkit.fluxcd.io/v1`) and
//! `HelmRelease` (`helm.toolkit.fluxcd.io/v2`), through which Helm add-ons are installed.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::Condition;

/// Observed state of a Flux object: its conditions (`Ready` above all).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FluxStatus {
    /// Conditions such as `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

// === HelmRepository ===

/// Desired state of a `HelmRepository`: an HTTP(S) chart repository Flux indexes.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "HelmRepository",
    plural = "helmrepositories",
    namespaced,
    status = "FluxStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct HelmRepositorySpec {
    /// Repository URL, `https://…`.
    pub url: String,
    /// How often the index is fetched, e.g. `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

// === OCIRepository ===

/// Desired state of an `OCIRepository`: a chart stored as an OCI artifact.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "source.toolkit.fluxcd.io",
    version = "v1",
    kind = "OCIRepository",
    plural = "ocirepositories",
    namespaced,
    status = "FluxStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct OCIRepositorySpec {
    /// Artifact URL including the chart name, `oci://registry/path/chart`.
    pub url: String,
    /// How often the reference is resolved, e.g. `1h`.
    pub interval: String,
    /// Which tag or version range to pull.
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub reference: Option<OCIRepositoryRef>,
    /// Which layer of the artifact holds the chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_selector: Option<OCILayerSelector>,
}

/// Tag or version range of an `OCIRepository`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OCIRepositoryRef {
    /// An exact tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A semver range; the highest matching tag wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
}

/// Layer selection of an `OCIRepository`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OCILayerSelector {
    /// Media type of the layer.
    pub media_type: String,
    /// `extract` or `copy`; Helm charts are copied as-is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
}

// === HelmRelease ===

/// Desired state of a `HelmRelease`: a chart installed with values.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "helm.toolkit.fluxcd.io",
    version = "v2",
    kind = "HelmRelease",
    plural = "helmreleases",
    namespaced,
    status = "FluxStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct HelmReleaseSpec {
    /// How often the release is reconciled, e.g. `10m`.
    pub interval: String,
    /// The chart from a `HelmRepository` (exclusive with `chart_ref`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<HelmChartTemplate>,
    /// The chart from an `OCIRepository` (exclusive with `chart`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart_ref: Option<CrossNamespaceSourceReference>,
    /// Helm release name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    /// Namespace the chart's objects are installed into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Namespace Helm stores the release in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_namespace: Option<String>,
    /// Time limit of each Helm action, e.g. `600s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Install settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install: Option<HelmInstall>,
    /// Upgrade settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<HelmUpgrade>,
    /// Chart values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<serde_json::Value>,
}

/// The chart of a `HelmRelease` from a `HelmRepository`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartTemplate {
    /// Chart coordinates.
    pub spec: HelmChartTemplateSpec,
}

/// Chart coordinates in a `HelmRepository`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartTemplateSpec {
    /// Chart name.
    pub chart: String,
    /// Chart version or semver range.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The repository.
    pub source_ref: CrossNamespaceObjectReference,
}

/// A reference to a Flux source of a `HelmChartTemplate`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CrossNamespaceObjectReference {
    /// `HelmRepository`, `GitRepository` or `Bucket`.
    pub kind: String,
    /// Name of the source.
    pub name: String,
    /// Namespace of the source; the release's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A reference to a source that holds a packaged chart (`OCIRepository`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CrossNamespaceSourceReference {
    /// `OCIRepository`, `HelmChart` or `ExternalArtifact`.
    pub kind: String,
    /// Name of the source.
    pub name: String,
    /// Namespace of the source; the release's own when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Install settings of a `HelmRelease`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmInstall {
    /// Create the target namespace when missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_namespace: Option<bool>,
    /// What happens when the install fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<HelmRemediation>,
}

/// Upgrade settings of a `HelmRelease`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmUpgrade {
    /// What happens when the upgrade fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remediation: Option<HelmRemediation>,
}

/// Retry policy of a failed Helm action.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HelmRemediation {
    /// Retries before giving up; negative means forever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
}
