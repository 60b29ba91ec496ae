//! The offline CLI (`validate`, `render`) as users run it: the real binary, real files,
//! exit codes and output streams asserted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fledge-manager"))
}

fn example(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("fledge-manager runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn write_temp(content: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), content).expect("write temp file");
    file
}

#[test]
fn validate_accepts_every_example_with_one_ok_line() {
    for name in ["edge-1.yaml", "single-node.yaml"] {
        let path = example(name);
        let out = run(&["validate", "-f", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        let text = stdout(&out);
        assert_eq!(
            text.lines().count(),
            1,
            "{name}: one line expected, got {text:?}"
        );
        assert!(text.contains("OK"), "{name}: {text}");
    }
}

#[test]
fn validate_reports_every_problem_with_its_path_and_exits_2() {
    let good = std::fs::read_to_string(example("edge-1.yaml")).unwrap();
    let bad = good
        .replacen("replicas: 3", "replicas: 2", 1)
        .replace("port: 6443", "port: 70000");
    assert_ne!(good, bad, "the fixture edits must apply");
    let file = write_temp(&bad);
    let out = run(&["validate", "-f", file.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("spec.controlPlane.replicas: must be odd"),
        "missing replicas error: {err}"
    );
    assert!(
        err.contains("spec.controlPlane.endpoint.port:"),
        "missing port error: {err}"
    );
    assert!(stdout(&out).is_empty(), "errors go to stderr only");
}

#[test]
fn validate_rejects_unknown_fields_with_their_path() {
    let good = std::fs::read_to_string(example("single-node.yaml")).unwrap();
    let bad = good.replacen(
        "  kubernetesVersion:",
        "  kubernetesVersoin: v1.32.4\n  kubernetesVersion:",
        1,
    );
    let file = write_temp(&bad);
    let out = run(&["validate", "-f", file.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("spec.kubernetesVersoin"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn unreadable_file_exits_1_with_a_clear_message() {
    for cmd in ["validate", "render"] {
        let out = run(&[cmd, "-f", "/nonexistent/fledge.yaml"]);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert!(
            stderr(&out).contains("cannot read /nonexistent/fledge.yaml"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn render_bootstrap_has_one_control_plane_replica_and_no_workers() {
    let path = example("edge-1.yaml");
    let out = run(&[
        "render",
        "-f",
        path.to_str().unwrap(),
        "--phase",
        "bootstrap",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = list["items"].as_array().unwrap();
    let kinds: Vec<&str> = items.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    for kind in [
        "Cluster",
        "VSphereCluster",
        "KubeadmControlPlane",
        "VSphereMachineTemplate",
    ] {
        assert!(kinds.contains(&kind), "bootstrap lacks {kind}: {kinds:?}");
    }
    assert!(
        !kinds.contains(&"MachineDeployment"),
        "bootstrap must not create workers: {kinds:?}"
    );
    let kcp = items
        .iter()
        .find(|o| o["kind"] == "KubeadmControlPlane")
        .unwrap();
    assert_eq!(kcp["spec"]["replicas"], 1);
    for obj in items {
        assert_eq!(obj["metadata"]["namespace"], "team-a", "{}", obj["kind"]);
        assert_eq!(
            obj["metadata"]["labels"]["cluster.x-k8s.io/cluster-name"],
            "edge-1"
        );
    }
}

#[test]
fn render_full_scales_the_control_plane_and_adds_pools() {
    let path = example("edge-1.yaml");
    let out = run(&[
        "render",
        "-f",
        path.to_str().unwrap(),
        "--phase",
        "full",
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = list["items"].as_array().unwrap();
    let kcp = items
        .iter()
        .find(|o| o["kind"] == "KubeadmControlPlane")
        .unwrap();
    assert_eq!(kcp["spec"]["replicas"], 3);
    let mds = items
        .iter()
        .filter(|o| o["kind"] == "MachineDeployment")
        .count();
    assert_eq!(mds, 2, "one MachineDeployment per pool");
    let mhcs = items
        .iter()
        .filter(|o| o["kind"] == "MachineHealthCheck")
        .count();
    assert_eq!(
        mhcs, 3,
        "one MachineHealthCheck per pool and one for the control plane"
    );
}

#[test]
fn render_yaml_is_deterministic() {
    let path = example("edge-1.yaml");
    let args = ["render", "-f", path.to_str().unwrap(), "--phase", "full"];
    let first = run(&args);
    let second = run(&args);
    assert_eq!(first.status.code(), Some(0));
    assert!(!first.stdout.is_empty());
    assert_eq!(
        first.stdout, second.stdout,
        "same input must give byte-identical YAML"
    );
}

#[test]
fn render_of_an_invalid_spec_exits_2_without_output() {
    let good = std::fs::read_to_string(example("single-node.yaml")).unwrap();
    let bad = good.replacen("kubernetesVersion: v1.", "kubernetesVersion: 1.", 1);
    let file = write_temp(&bad);
    let out = run(&["render", "-f", file.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("spec.kubernetesVersion"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn render_rejects_an_unknown_phase_as_bad_input() {
    let path = example("edge-1.yaml");
    let out = run(&["render", "-f", path.to_str().unwrap(), "--phase", "middle"]);
    assert_eq!(out.status.code(), Some(2), "clap usage errors exit 2");
}

#[test]
fn validate_reads_standard_input() {
    use std::io::Write;
    let text = std::fs::read_to_string(example("edge-1.yaml")).unwrap();
    let mut child = bin()
        .args(["validate", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn crds_prints_the_files_in_deploy_crds() {
    let out = run(&["crds"]);
    assert!(out.status.success(), "{out:?}");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    let want = ["workloadclusters.yaml", "clusterprofiles.yaml"]
        .map(|f| std::fs::read_to_string(dir.join(f)).expect("deploy/crds file"))
        .join("---\n");
    assert_eq!(String::from_utf8(out.stdout).expect("utf-8"), want);
}
