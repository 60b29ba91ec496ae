//! Well-known names shared by the manager, the agent and the renderer: labels, annotations,
//! field managers, finalizers, condition types and reasons.
//!
//! Call sites use these constants and never spell the strings out, so a rename is one edit
//! and a typo is a compile error.

// === Labels ===

/// Cluster API's label naming the `Cluster` an object belongs to. Set on every rendered
/// object; `clusterctl move` and CAPI's own controllers select by it.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// Fledge's label naming the `WorkloadCluster` an object was rendered from.
pub const FLEDGE_CLUSTER_LABEL: &str = "fledge.dev/cluster";
/// Fledge's label naming the worker pool an object belongs to.
pub const POOL_LABEL: &str = "fledge.dev/pool";
/// Fledge's label naming the add-on an object was rendered for.
pub const ADDON_LABEL: &str = "fledge.dev/addon";
/// Cluster API's label on the Machines of a MachineDeployment, valued with its name.
pub const DEPLOYMENT_NAME_LABEL: &str = "cluster.x-k8s.io/deployment-name";
/// Cluster API's label, with an empty value, on every control-plane Machine.
pub const CONTROL_PLANE_LABEL: &str = "cluster.x-k8s.io/control-plane";

// === Annotations ===

/// Cluster API's annotation that pauses reconciliation of an object (set during a pivot).
pub const PAUSED_ANNOTATION: &str = "cluster.x-k8s.io/paused";
/// Lower bound read by the cluster autoscaler's Cluster API provider.
pub const AUTOSCALER_MIN_SIZE_ANNOTATION: &str =
    "cluster.x-k8s.io/cluster-api-autoscaler-node-group-min-size";
/// Upper bound read by the cluster autoscaler's Cluster API provider.
pub const AUTOSCALER_MAX_SIZE_ANNOTATION: &str =
    "cluster.x-k8s.io/cluster-api-autoscaler-node-group-max-size";

// === Field managers (server-side apply) ===

/// Field manager of every server-side apply the manager makes.
pub const MANAGER_FIELD_MANAGER: &str = "fledge-manager";
/// Field manager of every server-side apply the agent makes.
pub const AGENT_FIELD_MANAGER: &str = "fledge-agent";

// === Finalizers ===

/// Finalizer the manager puts on a `WorkloadCluster` so that deleting it first tears the
/// cluster down.
pub const WORKLOAD_CLUSTER_FINALIZER: &str = "fledge.dev/workload-cluster";
/// Finalizer the agent puts on objects whose deletion it must observe (add-ons).
pub const AGENT_FINALIZER: &str = "fledge.dev/agent";

// === Namespaces ===

/// Namespace of Flux's controllers and of the Flux objects rendered for Helm add-ons.
pub const FLUX_NAMESPACE: &str = "flux-system";

// === Condition types (UpperCamelCase, as in Cluster API) ===

/// Summary condition of a `WorkloadCluster`.
pub const READY_CONDITION: &str = "Ready";
/// The spec passed validation.
pub const SPEC_VALID_CONDITION: &str = "SpecValid";
/// The control plane has as many ready machines as the spec asks for.
pub const CONTROL_PLANE_READY_CONDITION: &str = "ControlPlaneReady";
/// Every worker pool has as many ready machines as the spec asks for.
pub const WORKERS_READY_CONDITION: &str = "WorkersReady";
/// Every add-on of the profile is installed and healthy.
pub const ADDONS_READY_CONDITION: &str = "AddonsReady";
/// The agent of the cluster is connected to the manager.
pub const AGENT_CONNECTED_CONDITION: &str = "AgentConnected";
/// The Cluster API objects live in the workload cluster itself.
pub const PIVOTED_CONDITION: &str = "Pivoted";

// === Condition reasons ===

/// The first control-plane machine is not up yet.
pub const WAITING_FOR_FIRST_NODE_REASON: &str = "WaitingForFirstNode";
/// Machines are being created or replaced.
pub const SCALING_REASON: &str = "Scaling";
/// The condition holds.
pub const AS_EXPECTED_REASON: &str = "AsExpected";
/// The spec failed validation.
pub const INVALID_SPEC_REASON: &str = "InvalidSpec";
/// A read needed to compute the condition failed; its status is Unknown.
pub const READ_FAILED_REASON: &str = "ReadFailed";

// === Provisioning (manager) ===

/// Condition of a `WorkloadCluster`: the provisioning pipeline's state (True once the last
/// implemented phase is done, False with the phase's reason while it waits or fails).
pub const PROVISIONING_CONDITION: &str = "Provisioning";
/// Condition of a `WorkloadCluster` being deleted: what deletion waits for.
pub const DELETING_CONDITION: &str = "Deleting";
/// The vCenter credentials Secret named by the spec does not exist.
pub const CREDENTIALS_MISSING_REASON: &str = "CredentialsSecretMissing";
/// The phase is waiting for the world to catch up.
pub const WAITING_REASON: &str = "Waiting";
/// The phase failed and is retried.
pub const PHASE_FAILED_REASON: &str = "PhaseFailed";
/// Deletion of a provisioned cluster needs the reverse pivot, which is not available yet.
pub const DELETION_NEEDS_REVERSE_PIVOT_REASON: &str = "ReversePivotRequired";
/// Label clusterctl puts on every component of a provider, valued with the provider's
/// inventory name (`cluster-api`, `infrastructure-vsphere`).
pub const PROVIDER_LABEL: &str = "cluster.x-k8s.io/provider";
/// Namespace of the manager (its Lease) and, in workload clusters, of the agent.
pub const FLEDGE_NAMESPACE: &str = "fledge-system";
/// Name of the manager's leader-election Lease.
pub const MANAGER_LEASE: &str = "fledge-manager";

// === Spec generation (the AgentService contract) ===

/// The generation of a cluster's desired state as the manager and the agent see it: the
/// WorkloadCluster's `metadata.generation` in the high 32 bits and its ClusterProfile's
/// `metadata.generation` (0 without a profile) in the low 32 bits.
///
/// Why both: the agent applies spec and profile together, so a change to either must yield a
/// larger number. A profile switch changes the cluster's spec, hence its generation, so the
/// combined value never goes backwards even if the new profile has a smaller generation.
pub fn spec_generation(cluster_generation: i64, profile_generation: i64) -> i64 {
    (cluster_generation << 32) | (profile_generation & 0xffff_ffff)
}

/// Heartbeat interval of the agent stream, both ways (the AgentService contract). 20 s: at
/// 10,000 idle streams each heartbeat is a TLS record, an HTTP/2 frame and a protobuf message
/// on the manager, and 10 s intervals cost about 16 % of a core there (measured); a dead peer
/// is still noticed within a minute, and a closed connection at once.
pub const AGENT_HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(20);
/// Heartbeats a peer may miss before it counts as dead.
pub const AGENT_MISSED_HEARTBEATS: u32 = 3;

#[cfg(test)]
mod spec_generation_tests {
    use super::spec_generation;

    #[test]
    fn cluster_generation_dominates_profile_generation() {
        assert_eq!(spec_generation(1, 0), 1 << 32);
        assert_eq!(spec_generation(1, 7), (1 << 32) | 7);
        assert!(spec_generation(2, 1) > spec_generation(1, 900));
        assert!(spec_generation(1, 2) > spec_generation(1, 1));
    }
}
