//! `controlplane.cluster.x-k8s.io/v1beta2`: `KubeadmControlPlane`.

use kube::CustomResource;
use serde::{Deserialize, Serialize};

use super::{Condition, ContractVersionedObjectReference, KubeadmConfigSpec, TemplateMetadata};

/// Desired state of a `KubeadmControlPlane`: the control-plane machines and their kubeadm
/// configuration.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "controlplane.cluster.x-k8s.io",
    version = "v1beta2",
    kind = "KubeadmControlPlane",
    plural = "kubeadmcontrolplanes",
    namespaced,
    status = "KubeadmControlPlaneStatus",
    schema = "disabled",
    derive = "PartialEq"
)]
#[serde(rename_all = "camelCase")]
pub struct KubeadmControlPlaneSpec {
    /// Number of control-plane machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Kubernetes version, `vX.Y.Z`.
    pub version: String,
    /// Template of each control-plane machine.
    pub machine_template: KubeadmControlPlaneMachineTemplate,
    /// kubeadm and cloud-init settings.
    #[serde(default)]
    pub kubeadm_config_spec: KubeadmConfigSpec,
    /// When machines are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<KubeadmControlPlaneRollout>,
}

/// Template of a control-plane machine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeadmControlPlaneMachineTemplate {
    /// Labels and annotations of each machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// Spec of each machine.
    pub spec: KubeadmControlPlaneMachineTemplateSpec,
}

/// Spec of a control-plane machine.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeadmControlPlaneMachineTemplateSpec {
    /// The infrastructure template (a `VSphereMachineTemplate`).
    pub infrastructure_ref: ContractVersionedObjectReference,
}

/// When control-plane machines are replaced.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeadmControlPlaneRollout {
    /// Machines created before this RFC 3339 time are replaced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// Machines are replaced before something expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<RolloutBefore>,
}

/// Expiry-driven replacement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutBefore {
    /// Machines whose certificates expire within this many days are replaced (at least 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates_expiry_days: Option<i32>,
}

/// Observed state of a `KubeadmControlPlane`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubeadmControlPlaneStatus {
    /// Initialization milestones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialization: Option<KubeadmControlPlaneInitialization>,
    /// Machines that exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Machines whose node is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// Machines that are available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_replicas: Option<i32>,
    /// Machines that match the current spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_date_replicas: Option<i32>,
    /// Lowest Kubernetes version among the machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Conditions such as `Available`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Initialization milestones of a `KubeadmControlPlane`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct KubeadmControlPlaneInitialization {
    /// The first control-plane machine is up and the API server answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane_initialized: Option<bool>,
}
