use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of one workload cluster.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "fledge.dev",
    version = "v1alpha1",
    kind = "WorkloadCluster",
    plural = "workloadclusters",
    shortname = "wc",
    category = "fledge",
    namespaced,
    status = "WorkloadClusterStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Progress","type":"integer","jsonPath":".status.progressPercent"}"#,
    printcolumn = r#"{"name":"Step","type":"string","priority":1,"jsonPath":".status.step"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.kubernetesVersion"}"#,
    printcolumn = r#"{"name":"CP-Ready","type":"integer","jsonPath":".status.controlPlane.ready"}"#,
    printcolumn = r#"{"name":"CP-Desired","type":"integer","jsonPath":".spec.controlPlane.replicas"}"#,
    printcolumn = r#"{"name":"Workers-Ready","type":"integer","jsonPath":".status.workers.ready"}"#,
    printcolumn = r#"{"name":"Workers-Desired","type":"integer","jsonPath":".status.workers.desired"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadClusterSpec {
    /// Kubernetes version of every node, `vX.Y.Z`.
    pub kubernetes_version: String,
    /// Where the machines run.
    pub infrastructure: Infrastructure,
    /// The control plane: replica count, endpoint and machine shape.
    pub control_plane: ControlPlaneSpec,
    /// Worker pools; each becomes one MachineDeployment.
    #[serde(default)]
    pub workers: Vec<WorkerPool>,
    /// Pod and service networks.
    pub network: NetworkSpec,
    /// Name of a `ClusterProfile` in the same namespace whose add-ons the agent installs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// SSH public keys authorized on every node (user `capv`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
    /// Certificate renewal policy of the nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<CertificatesSpec>,
}

/// Infrastructure provider settings. Exactly one provider must be set; vSphere is the
/// only one today.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Infrastructure {
    /// VMware vSphere (Cluster API Provider vSphere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsphere: Option<VSphereInfrastructure>,
}

/// Where and how vSphere VMs are cloned.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VSphereInfrastructure {
    /// vCenter host name or address.
    pub server: String,
    /// SHA-1 or SHA-256 TLS thumbprint of vCenter; when absent, the system trust store is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbprint: Option<String>,
    /// Datacenter the VMs are cloned into.
    pub datacenter: String,
    /// Datastore for the VM disks.
    pub datastore: String,
    /// Port group every VM's first NIC joins.
    pub network: String,
    /// Resource pool for the VMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_pool: Option<String>,
    /// VM folder for the VMs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<String>,
    /// VM template (OS image) cloned for every machine unless a node group overrides it.
    pub template: String,
    /// Secret in the cluster's namespace with keys `username` and `password` for vCenter.
    pub credentials_secret: String,
}

/// The control plane.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ControlPlaneSpec {
    /// Number of control-plane machines: 1, 3, 5 or 7.
    pub replicas: i32,
    /// The API server endpoint (a virtual IP served by kube-vip on the control-plane nodes).
    pub endpoint: Endpoint,
    /// Size of each control-plane VM.
    pub machine: MachineShape,
    /// VM template (OS image) for the control plane; defaults to `infrastructure.vsphere.template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

/// A host and port.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Endpoint {
    /// IP address or DNS name.
    pub host: String,
    /// TCP port, 1 to 65535.
    pub port: i32,
}

/// Size of a VM.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MachineShape {
    /// Virtual CPUs.
    pub cpus: i32,
    /// Memory in MiB.
    #[serde(rename = "memoryMiB")]
    pub memory_mib: i64,
    /// Boot disk size in GiB.
    #[serde(rename = "diskGiB")]
    pub disk_gib: i32,
}

/// One pool of identical worker machines.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkerPool {
    /// Pool name, unique in the cluster (DNS-1123 label).
    pub name: String,
    /// Number of machines, 0 to 1000. Required unless `autoscaling` is set, in which case
    /// it is only the initial size and the cluster autoscaler owns it afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Size of each VM.
    pub machine: MachineShape,
    /// VM template (OS image) for this pool; defaults to `infrastructure.vsphere.template`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Labels put on every node of the pool.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Taints put on every node of the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taints: Vec<Taint>,
    /// Bounds for the cluster autoscaler (Cluster API provider).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<Autoscaling>,
}

/// A node taint, as in `core/v1` Taint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Taint {
    /// Taint key.
    pub key: String,
    /// Taint value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// `NoSchedule`, `PreferNoSchedule` or `NoExecute`.
    pub effect: TaintEffect,
}

/// Effect of a taint.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TaintEffect {
    /// Pods that do not tolerate the taint are not scheduled.
    NoSchedule,
    /// The scheduler tries to avoid the node.
    PreferNoSchedule,
    /// Pods that do not tolerate the taint are evicted.
    NoExecute,
}

/// Autoscaling bounds of a pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Autoscaling {
    /// Lower bound of the pool size.
    pub min_replicas: i32,
    /// Upper bound of the pool size.
    pub max_replicas: i32,
}

/// Pod and service networks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSpec {
    /// Pod CIDR, e.g. `192.168.0.0/16`.
    pub pods: String,
    /// Service CIDR, e.g. `10.96.0.0/12`.
    pub services: String,
    /// DNS domain of services; `cluster.local` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_domain: Option<String>,
}

/// Certificate renewal of the nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificatesSpec {
    /// Control-plane machines are rolled when their certificates expire within this many
    /// days (KubeadmControlPlane `rollout.before.certificatesExpiryDays`); default 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew_before_expiry_days: Option<i32>,
    /// Every machine created before this RFC 3339 time is replaced, which renews its
    /// certificates (`rollout.after`). Set by `cluster rotate-certs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_after: Option<String>,
}

/// Observed state of a workload cluster, written by the manager.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadClusterStatus {
    /// Pipeline phase: Accepted, Bootstrapping, WaitingForControlPlane, InstallingProviders,
    /// InstallingAgent, Pivoting, HandedOver, Ready, Degraded, Deleting, Invalid, Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Human-readable summary of the current phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Control-plane machine counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<ReplicaCounts>,
    /// Worker machine counts over all pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<ReplicaCounts>,
    /// Conditions in the `metav1.Condition` shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Provisioning progress, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_percent: Option<i32>,
    /// What the current phase is doing or waiting for, e.g. `WaitingForKubeconfig`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Per worker pool counts and version, keyed by pool name (reported by the agent).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pools: BTreeMap<String, ReplicaCounts>,
    /// State of each add-on of the profile (reported by the agent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addons: Vec<AddonState>,
    /// The agent's connection and its last report (written by the manager replica holding
    /// the agent's stream).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentConnection>,
}

/// State of one add-on in a cluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AddonState {
    /// The add-on's name in the profile.
    pub name: String,
    /// Pending, Applying, Healthy, Failed, Blocked.
    pub state: String,
    /// Why, for Failed and Blocked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// When the add-on was last applied (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
}

/// Connection state of a cluster's agent and what it last reported.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentConnection {
    /// Whether an agent stream is open to some manager replica.
    pub connected: bool,
    /// When the manager last heard from the agent (RFC 3339; refreshed on connect, report,
    /// disconnect and at most every few minutes in between).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// The agent's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The newest spec generation the agent acknowledged (see the AgentService contract).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_generation: Option<i64>,
    /// The agent's own phase: Ready, Progressing or Degraded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_phase: Option<String>,
    /// The agent's message with its phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reported_message: Option<String>,
    /// Digest of the last status report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_digest: Option<String>,
    /// The manager replica holding the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

/// Ready and desired machine counts of a node group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaCounts {
    /// Machines whose Node is Ready.
    pub ready: i32,
    /// Machines wanted.
    pub desired: i32,
    /// Kubernetes version the group runs (the oldest node's), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A condition in the shape of `metav1.Condition`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// UpperCamelCase condition type, e.g. `ControlPlaneReady`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// UpperCamelCase reason.
    #[serde(default)]
    pub reason: String,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// Generation the condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
