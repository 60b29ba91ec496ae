//! `fledge-core`: the parts of Fledge that do no I/O.
//!
//! # Layout
//! - `spec`: the user-facing `WorkloadCluster` and `ClusterProfile` types (`fledge.dev/v1alpha1`).
//! - `proto`: the generated gRPC types of `proto/fledge/v1`.
//!
//! **Invariant:** nothing here opens a socket, reads a file or spawns a task; callers hand
//! in bytes and get values back, so everything is testable as plain functions.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![warn(missing_docs)]

pub mod proto;
pub mod spec;
