//! The agent binary as the node runtime starts it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn version_prints_the_crate_version_and_exits_0() {
    let out = Command::new(env!("CARGO_BIN_EXE_fledge-agent"))
        .arg("--version")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text.trim(),
        format!("fledge-agent {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn without_its_cluster_identity_it_names_what_is_missing_and_fails() {
    let out = Command::new(env!("CARGO_BIN_EXE_fledge-agent"))
        .env_remove("FLEDGE_CLUSTER_NAMESPACE")
        .env_remove("FLEDGE_CLUSTER_NAME")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--cluster-namespace"), "{stderr}");
}
