//! Renders a validated `WorkloadCluster` into the Cluster API v1beta2 objects (CAPV for
//! the infrastructure) that make it exist, and a profile's add-ons into the objects the
//! agent applies.
//!
//! There are two phases. [`Phase::Bootstrap`] is what the manager creates in the
//! management cluster to get the first control-plane machine: the `Cluster`, the
//! `VSphereCluster`, the control-plane `VSphereMachineTemplate` and a
//! `KubeadmControlPlane` with one replica. [`Phase::Full`] is the end state the agent keeps
//! inside the workload cluster after the pivot: the same objects with the spec's
//! control-plane replica count, plus per worker pool a `KubeadmConfigTemplate`, a
//! `VSphereMachineTemplate` and a `MachineDeployment`, and a `MachineHealthCheck` per pool
//! and for the control plane.
//!
//! # Guarantees
//! - Pure and deterministic: the same input gives the same objects, in the same order,
//!   serialized to byte-identical YAML by [`to_yaml_stream`].
//! - Every object carries [`names::CLUSTER_NAME_LABEL`] and [`names::FLEDGE_CLUSTER_LABEL`]
//!   and lives in the `WorkloadCluster`'s namespace.
//! - Templates are immutable in Cluster API, so the names of `VSphereMachineTemplate` and
//!   `KubeadmConfigTemplate` end in a short hash of their content ([`template_name`]): a
//!   changed machine shape, OS template, node label or taint gives a new name, hence a
//!   changed reference, which Cluster API rolls out. Everything else (replica counts,
//!   the Kubernetes version, which lives on the owners) leaves the names alone.
//! - A field that is absent from the spec is absent from the output, so a server-side
//!   apply of the output owns only the fields Fledge decides. In particular a pool with
//!   `autoscaling` renders no `MachineDeployment.spec.replicas`: the cluster autoscaler
//!   owns that field (Cluster API starts such a pool at its minimum size).
//!
//! # Caveats
//! - The input is assumed to have passed `validate`; rendering only rejects what it
//!   cannot express at all (see [`RenderError`]).
//! - The vCenter credentials Secret named by `infrastructure.vsphere.credentialsSecret` is
//!   not rendered: it must exist in the cluster's namespace (CAPV's `identityRef` of kind
//!   `Secret` only reads from there), and CAPV takes ownership of it.
//! - Nodes run the kubelet with `cloud-provider: external`, as CAPV's own templates do, so
//!   a vSphere cloud provider (CPI) must be among the add-ons for nodes to get their
//!   provider IDs.

mod addons;
mod cluster;
mod control_plane;
mod health;
mod kube_vip;
mod node;
mod vsphere;
mod workers;

#[cfg(test)]
mod tests;

pub use addons::render_addon;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::capi::{
    Cluster, KubeadmConfigTemplate, KubeadmControlPlane, MachineDeployment, MachineHealthCheck,
    VSphereCluster, VSphereMachineTemplate,
};
use crate::names;
use crate::spec::{VSphereInfrastructure, WorkloadCluster, WorkloadClusterSpec};

/// Template-name group of the control plane; no worker pool may have this name.
pub const CONTROL_PLANE_GROUP: &str = "control-plane";

/// Control-plane replica count of the bootstrap phase: one machine is enough to pivot to.
pub const BOOTSTRAP_CONTROL_PLANE_REPLICAS: i32 = 1;

/// Which set of objects to render.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// What the manager creates in the management cluster to get the first control-plane
    /// machine.
    Bootstrap,
    /// The end state the agent maintains inside the workload cluster.
    Full,
}

impl Phase {
    /// The phase's name as accepted by [`Phase::from_str`].
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Bootstrap => "bootstrap",
            Phase::Full => "full",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string was neither `bootstrap` nor `full`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown phase {0:?}: expected bootstrap or full")]
pub struct ParsePhaseError(pub String);

impl FromStr for Phase {
    type Err = ParsePhaseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bootstrap" => Ok(Phase::Bootstrap),
            "full" => Ok(Phase::Full),
            other => Err(ParsePhaseError(other.to_owned())),
        }
    }
}

/// Why a spec or an add-on could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    /// The `WorkloadCluster` has no `metadata.name`.
    #[error("metadata.name: required")]
    MissingName,
    /// The `WorkloadCluster` has no `metadata.namespace`.
    #[error("metadata.namespace: required")]
    MissingNamespace,
    /// No infrastructure provider is set; vSphere is the only one.
    #[error("spec.infrastructure.vsphere: required")]
    MissingVSphere,
    /// `spec.kubernetesVersion` is not `vX.Y.Z`.
    #[error("spec.kubernetesVersion: {version:?} is not a vX.Y.Z version")]
    BadVersion {
        /// The version as written.
        version: String,
        /// What the semver parser said.
        #[source]
        source: semver::Error,
    },
    /// A worker pool's name collides with the control plane's object names.
    #[error("spec.workers[{index}].name: {name:?} is reserved for the control plane")]
    ReservedPoolName {
        /// Index of the pool.
        index: usize,
        /// The pool's name.
        name: String,
    },
    /// A derived object name would exceed a Kubernetes limit.
    #[error("{path}: derived name {name:?} is longer than {max} characters")]
    NameTooLong {
        /// Field the name derives from.
        path: String,
        /// The derived name.
        name: String,
        /// The limit.
        max: usize,
    },
    /// An add-on has neither inline manifests nor a Helm chart.
    #[error("add-on {addon}: neither manifests nor helm is set")]
    EmptyAddon {
        /// The add-on's name.
        addon: String,
    },
    /// An inline manifest is not a Kubernetes object.
    #[error("add-on {addon}: manifests[{index}]: {reason}")]
    BadManifest {
        /// The add-on's name.
        addon: String,
        /// Index of the manifest.
        index: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A Helm repository URL has an unsupported scheme.
    #[error("add-on {addon}: helm.repository {url:?} is neither https:// nor oci://")]
    UnsupportedRepository {
        /// The add-on's name.
        addon: String,
        /// The URL as written.
        url: String,
    },
    /// A rendered object could not be turned into JSON (an internal error).
    #[error("serializing {kind} {name}: {source}")]
    Serialize {
        /// Kind of the object.
        kind: &'static str,
        /// Name of the object.
        name: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
}

/// The objects of one cluster, typed, in render order.
#[derive(Clone, Debug)]
pub struct RenderedCluster {
    /// The Cluster API `Cluster`.
    pub cluster: Cluster,
    /// The CAPV infrastructure cluster.
    pub vsphere_cluster: VSphereCluster,
    /// The control plane's machine template.
    pub control_plane_template: VSphereMachineTemplate,
    /// The control plane.
    pub control_plane: KubeadmControlPlane,
    /// The worker pools, in spec order (empty in the bootstrap phase).
    pub pools: Vec<RenderedPool>,
    /// Health checks: the control plane's first, then one per pool (empty in the bootstrap
    /// phase).
    pub health_checks: Vec<MachineHealthCheck>,
}

/// The objects of one worker pool.
#[derive(Clone, Debug)]
pub struct RenderedPool {
    /// The pool's name in the spec.
    pub name: String,
    /// How the pool's machines join the cluster.
    pub config_template: KubeadmConfigTemplate,
    /// The pool's VM shape.
    pub machine_template: VSphereMachineTemplate,
    /// The pool.
    pub machine_deployment: MachineDeployment,
}

impl RenderedCluster {
    /// Converts the objects to JSON values, in the documented order: `Cluster`,
    /// `VSphereCluster`, control-plane `VSphereMachineTemplate`, `KubeadmControlPlane`,
    /// then per pool `KubeadmConfigTemplate`, `VSphereMachineTemplate`,
    /// `MachineDeployment`, then the `MachineHealthCheck`s.
    ///
    /// # Errors
    /// [`RenderError::Serialize`] if an object does not serialize, which the types rule out.
    pub fn to_values(&self) -> Result<Vec<serde_json::Value>, RenderError> {
        let mut out = Vec::with_capacity(4 + 3 * self.pools.len() + self.health_checks.len());
        out.push(to_value("Cluster", &self.cluster)?);
        out.push(to_value("VSphereCluster", &self.vsphere_cluster)?);
        out.push(to_value(
            "VSphereMachineTemplate",
            &self.control_plane_template,
        )?);
        out.push(to_value("KubeadmControlPlane", &self.control_plane)?);
        for pool in &self.pools {
            out.push(to_value("KubeadmConfigTemplate", &pool.config_template)?);
            out.push(to_value("VSphereMachineTemplate", &pool.machine_template)?);
            out.push(to_value("MachineDeployment", &pool.machine_deployment)?);
        }
        for check in &self.health_checks {
            out.push(to_value("MachineHealthCheck", check)?);
        }
        Ok(out)
    }
}

/// Renders the objects of `phase` for `cluster` as JSON values, in the order documented on
/// [`RenderedCluster::to_values`].
///
/// # Errors
/// See [`RenderError`]; a spec that passed validation only fails on internal errors.
pub fn render(
    cluster: &WorkloadCluster,
    phase: Phase,
) -> Result<Vec<serde_json::Value>, RenderError> {
    render_objects(cluster, phase)?.to_values()
}

/// Renders the objects of `phase` for `cluster` as typed values, for callers that apply
/// or compare them field by field.
///
/// # Errors
/// See [`RenderError`].
pub fn render_objects(
    cluster: &WorkloadCluster,
    phase: Phase,
) -> Result<RenderedCluster, RenderError> {
    let ctx = Ctx::new(cluster)?;
    let control_plane_replicas = match phase {
        Phase::Bootstrap => BOOTSTRAP_CONTROL_PLANE_REPLICAS,
        Phase::Full => ctx.spec.control_plane.replicas,
    };
    let control_plane_template = vsphere::control_plane_template(&ctx)?;
    let control_plane = control_plane::kubeadm_control_plane(
        &ctx,
        control_plane_replicas,
        &control_plane_template,
    )?;
    let mut rendered = RenderedCluster {
        cluster: cluster::cluster(&ctx),
        vsphere_cluster: vsphere::vsphere_cluster(&ctx),
        control_plane_template,
        control_plane,
        pools: Vec::new(),
        health_checks: Vec::new(),
    };
    if phase == Phase::Full {
        for (index, pool) in ctx.spec.workers.iter().enumerate() {
            rendered.pools.push(workers::pool(&ctx, index, pool)?);
        }
        rendered.health_checks.push(health::control_plane(&ctx));
        for pool in &rendered.pools {
            rendered.health_checks.push(health::pool(&ctx, pool));
        }
    }
    Ok(rendered)
}

/// Serializes objects as a multi-document YAML stream, documents separated by `---\n`.
///
/// # Guarantees
/// The same objects give byte-identical output: maps keep their insertion order
/// (`serde_json`'s `preserve_order`) and rendered label maps are sorted.
///
/// # Caveats
/// A value the YAML serializer rejects (none of ours can be) is written as one line of
/// JSON, which is valid YAML too, rather than dropped.
pub fn to_yaml_stream(objs: &[serde_json::Value]) -> String {
    let mut out = String::new();
    for (i, obj) in objs.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        // Long one-line strings (SSH keys, shell commands) stay on one line instead of being
        // folded at 80 columns, so the output greps and reads like kubectl's; multi-line
        // strings (file contents) are still literal blocks.
        let options = serde_saphyr::ser_options! { folded_wrap_chars: usize::MAX };
        match serde_saphyr::to_string_with_options(obj, options) {
            Ok(doc) => out.push_str(&doc),
            Err(_) => {
                out.push_str(&obj.to_string());
                out.push('\n');
            }
        }
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// Name of an immutable template: `<cluster>-<group>-<hash>`, where `hash` is the first 6
/// hex digits of the SHA-256 of `content`'s JSON serialization, e.g.
/// `edge-1-general-4f9c2a`.
///
/// # Guarantees
/// Equal content gives equal names. Optional fields that are absent are not serialized, so
/// adding a new optional field to a type does not rename existing templates.
///
/// # Caveats
/// If `content` cannot be serialized (maps with non-string keys), the error message is
/// hashed instead; render itself uses a variant that reports the error.
pub fn template_name(cluster: &str, group: &str, content: &impl Serialize) -> String {
    let bytes = serde_json::to_vec(content).unwrap_or_else(|err| err.to_string().into_bytes());
    name_with_hash(cluster, group, &bytes)
}

/// Name of the `KubeadmControlPlane` (and of its `MachineHealthCheck`).
pub fn control_plane_name(cluster: &str) -> String {
    format!("{cluster}-{CONTROL_PLANE_GROUP}")
}

/// Name of a pool's `MachineDeployment` (and of its `MachineHealthCheck`).
pub fn machine_deployment_name(cluster: &str, pool: &str) -> String {
    format!("{cluster}-{pool}")
}

// === internals ===

/// Like [`template_name`], but reports a serialization failure.
fn hashed_name(
    kind: &'static str,
    cluster: &str,
    group: &str,
    content: &impl Serialize,
) -> Result<String, RenderError> {
    let bytes = serde_json::to_vec(content).map_err(|source| RenderError::Serialize {
        kind,
        name: format!("{cluster}-{group}"),
        source,
    })?;
    Ok(name_with_hash(cluster, group, &bytes))
}

fn name_with_hash(cluster: &str, group: &str, bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    // Three bytes (6 hex digits) keep names short; a collision needs two different shapes
    // of the same pool to coexist, and even then only reuses an identical-looking name.
    format!("{cluster}-{group}-{}", hex::encode(&digest[..3]))
}

fn to_value(kind: &'static str, obj: &impl Serialize) -> Result<serde_json::Value, RenderError> {
    serde_json::to_value(obj).map_err(|source| RenderError::Serialize {
        kind,
        name: String::new(),
        source,
    })
}

/// What every renderer needs: the cluster's identity and its spec, with the preconditions
/// (a name, a namespace, vSphere, a parseable version) already checked.
struct Ctx<'a> {
    name: &'a str,
    namespace: &'a str,
    spec: &'a WorkloadClusterSpec,
    vsphere: &'a VSphereInfrastructure,
    version: semver::Version,
}

impl<'a> Ctx<'a> {
    fn new(cluster: &'a WorkloadCluster) -> Result<Self, RenderError> {
        let name = cluster
            .metadata
            .name
            .as_deref()
            .ok_or(RenderError::MissingName)?;
        let namespace = cluster
            .metadata
            .namespace
            .as_deref()
            .ok_or(RenderError::MissingNamespace)?;
        let spec = &cluster.spec;
        let vsphere = spec
            .infrastructure
            .vsphere
            .as_ref()
            .ok_or(RenderError::MissingVSphere)?;
        let raw = &spec.kubernetes_version;
        let version =
            semver::Version::parse(raw.strip_prefix('v').unwrap_or(raw)).map_err(|source| {
                RenderError::BadVersion {
                    version: raw.clone(),
                    source,
                }
            })?;
        Ok(Ctx {
            name,
            namespace,
            spec,
            vsphere,
            version,
        })
    }

    /// The labels every object carries.
    fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (names::CLUSTER_NAME_LABEL.to_owned(), self.name.to_owned()),
            (names::FLEDGE_CLUSTER_LABEL.to_owned(), self.name.to_owned()),
        ])
    }

    /// Metadata of an object named `name` with the standard labels plus `extra`.
    fn meta(&self, name: String, extra: &[(&str, &str)]) -> ObjectMeta {
        let mut labels = self.labels();
        for (k, v) in extra {
            labels.insert((*k).to_owned(), (*v).to_owned());
        }
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        }
    }

    /// `spec.certificates.rotateAfter`, the `rollout.after` of every owner of machines.
    fn rotate_after(&self) -> Option<String> {
        self.spec
            .certificates
            .as_ref()
            .and_then(|c| c.rotate_after.clone())
    }
}
