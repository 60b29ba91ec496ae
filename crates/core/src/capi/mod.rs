//! Typed Cluster API (v1beta2), CAPV (v1beta2) and Flux objects.
//!
//! Each kind covers only the fields Fledge writes or reads, so these types are small on
//! purpose; the upstream CRDs (`cluster-api` v1.14, `cluster-api-provider-vsphere` v1.17,
//! Flux v2) are the source of truth for names and shapes, and the render tests check every
//! rendered object against them with `capi-validate`.
//!
//! Deserialization tolerates unknown fields (objects read back from an API server carry
//! many more), and every optional field is skipped when absent, so serializing a value
//! yields exactly the fields Fledge means to own under server-side apply.
//!
//! # Layout
//! - `cluster`: `Cluster`, `MachineDeployment`, `MachineHealthCheck` (`cluster.x-k8s.io`).
//! - `control_plane`: `KubeadmControlPlane` (`controlplane.cluster.x-k8s.io`).
//! - `bootstrap`: `KubeadmConfigTemplate` and the kubeadm config shared with the control plane.
//! - `vsphere`: `VSphereCluster`, `VSphereMachineTemplate` (`infrastructure.cluster.x-k8s.io`).
//! - `flux`: `HelmRepository`, `OCIRepository` (`source.toolkit.fluxcd.io/v1`) and
//!   `HelmRelease` (`helm.toolkit.fluxcd.io/v2`).

mod bootstrap;
mod cluster;
mod control_plane;
mod flux;
mod vsphere;

pub use bootstrap::*;
pub use cluster::*;
pub use control_plane::*;
pub use flux::*;
pub use vsphere::*;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// API group of Cluster API's core kinds.
pub const CLUSTER_GROUP: &str = "cluster.x-k8s.io";
/// API group of the kubeadm control-plane provider.
pub const CONTROL_PLANE_GROUP: &str = "controlplane.cluster.x-k8s.io";
/// API group of the kubeadm bootstrap provider.
pub const BOOTSTRAP_GROUP: &str = "bootstrap.cluster.x-k8s.io";
/// API group of infrastructure providers (CAPV).
pub const INFRASTRUCTURE_GROUP: &str = "infrastructure.cluster.x-k8s.io";
/// Version of every Cluster API and CAPV kind Fledge writes.
pub const CAPI_VERSION: &str = "v1beta2";

/// A reference to an object in the same namespace by API group, kind and name
/// (`ContractVersionedObjectReference`); the version is resolved by Cluster API through
/// the provider's contract.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ContractVersionedObjectReference {
    /// API group of the referenced object, e.g. `infrastructure.cluster.x-k8s.io`.
    pub api_group: String,
    /// Kind of the referenced object.
    pub kind: String,
    /// Name of the referenced object.
    pub name: String,
}

/// A host and port of an API server.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiEndpoint {
    /// IP address or DNS name.
    pub host: String,
    /// TCP port.
    pub port: i32,
}

/// Labels and annotations given to objects created from a template (Cluster API's own
/// `ObjectMeta`, which has only these two fields).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateMetadata {
    /// Labels of the created objects.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the created objects.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A status condition in the `metav1.Condition` shape, as Cluster API v1beta2 and Flux
/// report them. Every field but `type` and `status` is optional here so that a partially
/// written status still parses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Available` or `Ready`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// Generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// Whether the condition's status is `True`.
    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// Finds the condition of type `type_` in a status's condition list.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}
