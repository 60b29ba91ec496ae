//! Loading and validating Fledge specs (`WorkloadCluster`, `ClusterProfile`).
//!
//! Every check collects *all* problems instead of stopping at the first, and each problem is
//! a [`FieldError`] whose path uses Kubernetes notation (`spec.workers[1].name`), so the
//! manager can turn them into one gRPC BadRequest violation each and the CLI can print them
//! as `path: reason` lines.
//!
//! # Layout
//! - `load`: YAML to typed [`Document`]s: `apiVersion`/`kind`, unknown fields, types.
//! - `schema`: the structural-schema walk `load` uses, as the API server would do it.
//! - `cluster`, `profile`: the rules of each kind; `update`: the day-2 rules between two specs.
//! - `syntax`: DNS-1123 names, qualified names, URLs and other shared formats.
//!
//! **Invariant:** pure functions over values; nothing here does I/O.

mod cluster;
mod load;
mod profile;
mod schema;
mod syntax;
mod update;

#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::ops::RangeInclusive;

use crate::spec::{ClusterProfile, WorkloadCluster, WorkloadClusterSpec};

/// Kubernetes minor versions (of major version 1) a cluster may run.
///
/// This is the workload-cluster window of Cluster API v1.14 (v1.31.x to v1.37.x), the release
/// whose CRDs Fledge renders: kubeadm bootstrap and KubeadmControlPlane are only tested by
/// upstream against these versions, so anything outside is refused rather than half-working.
/// Move the window when the Cluster API release Fledge targets moves.
pub const SUPPORTED_KUBERNETES_MINORS: RangeInclusive<u64> = 31..=37;

/// One problem in a spec: where it is and what is wrong.
///
/// `path` uses Kubernetes field-path notation (`spec.controlPlane.replicas`,
/// `spec.workers[1].name`, `metadata.labels[team]`). In a multi-document file it starts with
/// the document (`ClusterProfile/basic: spec.addons[1].dependsOn`). It is empty only for
/// problems with the input as a whole (invalid YAML, no documents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where the problem is.
    pub path: String,
    /// What is wrong: lowercase, no trailing period, usually ending with the offending value.
    pub reason: String,
}

impl FieldError {
    /// An error at `path` for `reason`.
    pub fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    /// `path: reason`, or only the reason when the error concerns the input as a whole.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.reason)
        } else {
            write!(f, "{}: {}", self.path, self.reason)
        }
    }
}

impl std::error::Error for FieldError {}

/// One document of a spec file.
// Not boxed: a file holds a handful of documents, and callers match on the plain types.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Document {
    /// A `WorkloadCluster`.
    WorkloadCluster(WorkloadCluster),
    /// A `ClusterProfile`.
    ClusterProfile(ClusterProfile),
}

impl Document {
    /// The document's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Document::WorkloadCluster(_) => "WorkloadCluster",
            Document::ClusterProfile(_) => "ClusterProfile",
        }
    }

    /// The document's `metadata.name` (empty when unset).
    pub fn name(&self) -> &str {
        let metadata = match self {
            Document::WorkloadCluster(cluster) => &cluster.metadata,
            Document::ClusterProfile(profile) => &profile.metadata,
        };
        metadata.name.as_deref().unwrap_or_default()
    }

    /// The document's `metadata.namespace`, if set.
    pub fn namespace(&self) -> Option<&str> {
        let metadata = match self {
            Document::WorkloadCluster(cluster) => &cluster.metadata,
            Document::ClusterProfile(profile) => &profile.metadata,
        };
        metadata.namespace.as_deref()
    }
}

/// Parses a YAML file of one or more documents (separated by `---`) into typed documents.
///
/// Each document must have `apiVersion: fledge.dev/v1alpha1` and `kind: WorkloadCluster` or
/// `ClusterProfile`, and is then held to the structural schema of that kind's CRD the way
/// the API server does with strict field validation. Empty documents are skipped.
///
/// # Errors
/// Every unknown field (`spec.controlPlane.replica: unknown field`), wrong type and missing
/// required field of every document, each with its path; invalid YAML; a file with no
/// documents. With more than one document, paths are prefixed with `Kind/name: ` (or
/// `documents[i]: ` when the document has no kind or name).
pub fn load_documents(yaml: &str) -> Result<Vec<Document>, Vec<FieldError>> {
    let loaded = load::load_all(yaml)?;
    let multi = loaded.len() > 1;
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    for doc in loaded {
        match doc.result {
            Ok(document) => documents.push(document),
            Err(errs) if multi => errors.extend(load::prefix(&doc.label, errs)),
            Err(errs) => errors.extend(errs),
        }
    }
    if errors.is_empty() {
        Ok(documents)
    } else {
        Err(errors)
    }
}

/// Validates a `WorkloadCluster`: its name and namespace, then every rule of its spec.
///
/// # Errors
/// Every rule the cluster breaks, each with its path from the object root.
pub fn validate_cluster(c: &WorkloadCluster) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    cluster::check_metadata(&c.metadata, &mut errors);
    cluster::check_spec(&c.spec, &mut errors);
    cluster::check_pool_names_in_cluster(
        c.metadata.name.as_deref().unwrap_or_default(),
        &c.spec,
        &mut errors,
    );
    into_result(errors)
}

/// Validates a `ClusterProfile`: its name and namespace, then its add-ons and their graph.
///
/// # Errors
/// Every rule the profile breaks, each with its path from the object root.
pub fn validate_profile(p: &ClusterProfile) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    profile::check_metadata(&p.metadata, &mut errors);
    profile::check_spec(&p.spec, &mut errors);
    into_result(errors)
}

/// Loads every document of `yaml` (see [`load_documents`]) and validates each that loaded.
///
/// # Errors
/// The load errors and the validation errors of all documents together, plus a
/// `metadata.name` error for a kind, namespace and name that appear twice. With more than
/// one document, every path is prefixed with `Kind/name: `.
pub fn load_and_validate(yaml: &str) -> Result<Vec<Document>, Vec<FieldError>> {
    let loaded = load::load_all(yaml)?;
    let multi = loaded.len() > 1;
    let mut documents = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for doc in loaded {
        let errs = match doc.result {
            Ok(document) => {
                let mut errs = match &document {
                    Document::WorkloadCluster(c) => validate_cluster(c).err(),
                    Document::ClusterProfile(p) => validate_profile(p).err(),
                }
                .unwrap_or_default();
                let key = (
                    document.kind(),
                    document.namespace().map(str::to_string),
                    document.name().to_string(),
                );
                if !document.name().is_empty() && !seen.insert(key) {
                    errs.push(FieldError::new(
                        "metadata.name",
                        format!(
                            "duplicate {} {:?} in this file",
                            document.kind(),
                            document.name()
                        ),
                    ));
                }
                documents.push(document);
                errs
            }
            Err(errs) => errs,
        };
        if multi {
            errors.extend(load::prefix(&doc.label, errs));
        } else {
            errors.extend(errs);
        }
    }
    if errors.is_empty() {
        Ok(documents)
    } else {
        Err(errors)
    }
}

/// Checks the day-2 rules for replacing the stored spec `old` with `new`.
///
/// - Kubernetes version skew: no downgrade, and at most one minor version up at a time (the
///   kubeadm upgrade policy; KubeadmControlPlane upgrades one minor per rollout).
/// - Infrastructure that cannot change under running machines: the provider, the vCenter
///   `server`, the `datacenter` and the `credentialsSecret`.
/// - The pod and service CIDRs, the service domain and the control-plane endpoint: baked
///   into certificates, kubeadm config and every node.
/// - The control plane stays odd.
///
/// It does not re-run [`validate_cluster`] on `new`; callers do both.
///
/// # Errors
/// Every broken rule, with paths from the object root (`spec.kubernetesVersion`).
pub fn validate_update(
    old: &WorkloadClusterSpec,
    new: &WorkloadClusterSpec,
) -> Result<(), Vec<FieldError>> {
    let mut errors = Vec::new();
    update::check(old, new, &mut errors);
    into_result(errors)
}

fn into_result(errors: Vec<FieldError>) -> Result<(), Vec<FieldError>> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
