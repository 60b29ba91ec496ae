//! Conformance of the simulated API server, driven through kube-rs: one binary, a module per
//! area. Each test starts its own server (see `support`).

// Test helpers fail the test by panicking; that is what a failed expectation means here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod apply;
mod auth;
mod bad_input;
mod builtin;
mod capi;
mod controller;
mod crd;
mod crud;
mod discovery;
mod finalizers;
mod gc;
mod leader;
mod more;
mod namespaces;
mod pagination;
mod patch;
mod protobuf;
mod selectors;
mod support;
mod watch;
