//! `infrastructure.cluster.x-k8s.io/v1beta2` (CAPV): `VSphereCluster` and
//! `VSphereMachineTemplate`.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::{ApiEndpoint, Condition};

// === VSphereCluster ===

/// Desired state of a `VSphereCluster`: the vCenter a cluster lives in and the
/// credentials CAPV uses there.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1beta2",
    kind = "VSphereCluster",
    plural = "vsphereclusters",
    namespaced,
    status = "VSphereClusterStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct VSphereClusterSpec {
    /// vCenter host name or address.
    pub server: String,
    /// TLS thumbprint of vCenter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbprint: Option<String>,
    /// The API server endpoint (the kube-vip address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_endpoint: Option<ApiEndpoint>,
    /// Where CAPV reads the vCenter credentials from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_ref: Option<VSphereIdentityReference>,
}

/// The credentials of a `VSphereCluster`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VSphereIdentityReference {
    /// `Secret` (in the cluster's namespace, keys `username` and `password`) or
    /// `VSphereClusterIdentity`.
    pub kind: VSphereIdentityKind,
    /// Name of the Secret or identity.
    pub name: String,
}

/// Kind of a `VSphereCluster` identity.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VSphereIdentityKind {
    /// A Secret in the cluster's namespace. CAPV takes ownership of it, so it moves and is
    /// deleted with the cluster.
    #[default]
    Secret,
    /// A cluster-scoped `VSphereClusterIdentity`.
    VSphereClusterIdentity,
}

/// Observed state of a `VSphereCluster`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VSphereClusterStatus {
    /// Initialization milestones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<VSphereClusterInitialization>,
    /// Conditions such as `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Initialization milestones of a `VSphereCluster`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VSphereClusterInitialization {
    /// CAPV reached vCenter with the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioned: Option<bool>,
}

// === VSphereMachineTemplate ===

/// Desired state of a `VSphereMachineTemplate`: the VM every machine of a node group is
/// cloned as. Immutable once created, so a changed shape gets a new name.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "infrastructure.cluster.x-k8s.io",
    version = "v1beta2",
    kind = "VSphereMachineTemplate",
    plural = "vspheremachinetemplates",
    namespaced,
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct VSphereMachineTemplateSpec {
    /// The template.
    pub template: VSphereMachineTemplateResource,
}

/// Body of a `VSphereMachineTemplate`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VSphereMachineTemplateResource {
    /// The VM clone settings.
    pub spec: VSphereMachineSpec,
}

/// How a VM is cloned.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VSphereMachineSpec {
    /// vCenter host name or address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// TLS thumbprint of vCenter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbprint: Option<String>,
    /// Datacenter the VM is cloned into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datacenter: Option<String>,
    /// Datastore of the VM's disks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datastore: Option<String>,
    /// VM folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// Resource pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_pool: Option<String>,
    /// The VM template (OS image) to clone.
    pub template: String,
    /// `fullClone` or `linkedClone`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_mode: Option<String>,
    /// Virtual CPUs.
    #[serde(default, rename = "numCPUs", skip_serializing_if = "Option::is_none")]
    pub num_cpus: Option<i32>,
    /// Memory in MiB.
    #[serde(default, rename = "memoryMiB", skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<i64>,
    /// Boot disk size in GiB.
    #[serde(default, rename = "diskGiB", skip_serializing_if = "Option::is_none")]
    pub disk_gib: Option<i32>,
    /// Guest operating system family, `Linux` or `Windows`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// Network interfaces.
    pub network: VSphereNetwork,
}

/// Network interfaces of a VM.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VSphereNetwork {
    /// One entry per NIC.
    pub devices: Vec<NetworkDevice>,
}

/// A NIC of a VM.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkDevice {
    /// Port group the NIC joins.
    pub network_name: String,
    /// Whether the NIC takes an IPv4 address from DHCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp4: Option<bool>,
}
