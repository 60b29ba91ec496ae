//! `fledge-core`: the parts of Fledge that do no I/O.
//!
//! # Layout
//! - `spec`: the user-facing `WorkloadCluster` and `ClusterProfile` types (`fledge.dev/v1alpha1`).
//! - `validate`: loading YAML into spec documents and checking them, every error with its field path.
//! - `render`: a spec into Cluster API v1beta2 / CAPV objects (`bootstrap` and `full`
//!   phases) and add-ons into manifests and Flux objects; pure and deterministic.
//! - `capi`: typed Cluster API, CAPV and Flux objects, only the fields Fledge uses.
//! - `names`: labels, annotations, field managers, finalizers and condition types.
//! - `proto`: the generated gRPC types of `proto/fledge/v1`.
//!
//! **Invariant:** nothing here opens a socket, reads a file or spawns a task; callers hand
//! in bytes and get values back, so everything is testable as plain functions.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![warn(missing_docs)]

pub mod capi;
pub mod names;
pub mod proto;
pub mod render;
pub mod spec;
pub mod validate;
