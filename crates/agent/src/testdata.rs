//! Test fixtures: the specs of `examples/edge-1.yaml`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use fledge_core::spec::{ClusterProfileSpec, WorkloadClusterSpec};
use fledge_core::validate::{Document, load_and_validate};

/// The cluster and profile specs of `examples/edge-1.yaml`.
pub fn edge1() -> (WorkloadClusterSpec, ClusterProfileSpec) {
    let yaml = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/edge-1.yaml"
    ));
    let mut spec = None;
    let mut profile = None;
    for doc in load_and_validate(yaml).unwrap() {
        match doc {
            Document::WorkloadCluster(c) => spec = Some(c.spec),
            Document::ClusterProfile(p) => profile = Some(p.spec),
        }
    }
    (spec.unwrap(), profile.unwrap())
}
