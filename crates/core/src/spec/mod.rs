//! User-facing spec types of `fledge.dev/v1alpha1`: `WorkloadCluster` and `ClusterProfile`.
//!
//! These types are an API boundary: they are what users write in YAML, what the manager
//! stores as CRDs in the management cluster, and what the agent caches in its cluster.
//! Field names follow Kubernetes conventions (camelCase); every struct rejects unknown
//! fields, so a typo is an error with its path rather than a silently ignored line.

mod cluster;
mod profile;

pub use cluster::*;
pub use profile::*;

use schemars::Schema;

/// API group of Fledge's own kinds.
pub const GROUP: &str = "fledge.dev";
/// API version of Fledge's own kinds.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` string of Fledge's own kinds.
pub const API_VERSION: &str = "fledge.dev/v1alpha1";

/// Schema for a free-form JSON object that the API server must keep as written
/// (`x-kubernetes-preserve-unknown-fields`), e.g. Helm values.
pub(crate) fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// Schema for a list of free-form Kubernetes objects (inline add-on manifests).
pub(crate) fn preserve_unknown_object_list(_: &mut schemars::SchemaGenerator) -> Schema {
    schemars::json_schema!({
        "type": "array",
        "items": {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": true
        }
    })
}
