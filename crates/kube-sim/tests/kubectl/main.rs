//! The simulated API server driven by the real `kubectl` (`/usr/bin/kubectl`): one binary, a
//! module per area. Each test starts its own cluster (see `support`). A missing kubectl fails
//! every test with a message saying so.

// Test helpers fail the test by panicking; that is what a failed expectation means here.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod apply;
mod create;
mod discovery;
mod get;
mod manifests;
mod more;
mod mutate;
mod support;
