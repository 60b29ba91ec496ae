use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A named set of add-ons installed into every cluster that refers to it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "fledge.dev",
    version = "v1alpha1",
    kind = "ClusterProfile",
    plural = "clusterprofiles",
    shortname = "cprof",
    category = "fledge",
    namespaced,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterProfileSpec {
    /// Add-ons, installed as a graph by `order` and `dependsOn`.
    #[serde(default)]
    pub addons: Vec<Addon>,
}

/// One add-on: inline manifests or a Helm chart, with a health gate.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Addon {
    /// Unique name in the profile (DNS-1123 label).
    pub name: String,
    /// Lower orders install first; add-ons with the same order install in parallel.
    #[serde(default)]
    pub order: i32,
    /// Add-ons that must be healthy before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Inline Kubernetes objects, applied with server-side apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::preserve_unknown_object_list")]
    pub manifests: Option<Vec<serde_json::Value>>,
    /// A Helm chart, installed through Flux (`HelmRepository`/`OCIRepository` + `HelmRelease`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helm: Option<HelmChart>,
    /// When the add-on counts as installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthGate>,
}

/// A Helm chart from an HTTP(S) repository or an OCI registry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HelmChart {
    /// `https://…` chart repository, or `oci://…` registry path.
    pub repository: String,
    /// Chart name.
    pub chart: String,
    /// Chart version (semver or a range Flux accepts).
    pub version: String,
    /// Namespace the release is installed into; the add-on's name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Release name; the add-on's name when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_name: Option<String>,
    /// Values passed to the chart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::preserve_unknown_object")]
    pub values: Option<serde_json::Value>,
}

/// What must be true before an add-on counts as healthy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthGate {
    /// Every Deployment (and DaemonSet) the add-on applied is available.
    #[serde(default)]
    pub deployments_available: bool,
    /// The add-on's HelmRelease has condition Ready=True.
    #[serde(default)]
    pub helm_release_ready: bool,
    /// How long the gate may take before the add-on is marked Failed; 300 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<i32>,
}
