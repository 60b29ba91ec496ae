//! Every example renders, in both phases and with its add-ons, into objects the upstream
//! CRDs accept: `../shared/tools/capi-validate` must report `0 invalid`.
//!
//! The tool needs `python3` with PyYAML (`make deps`). A missing tool fails the test
//! rather than skipping it, because a skipped check looks exactly like a passing one.
//! Set `CAPI_VALIDATE` to use a tool elsewhere. All streams go to the tool in one run,
//! since loading the CRDs is most of its time.

// Helpers outside `#[test]` functions fail the test the same way a failed assert does.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use fledge_core::render::{Phase, render, render_addon, to_yaml_stream};
use fledge_core::spec::{Addon, ClusterProfile, WorkloadCluster};

/// Kinds the tool has CRDs for among what we render; everything else is "skipped".
const CRD_KINDS: &[&str] = &[
    "Cluster",
    "VSphereCluster",
    "VSphereMachineTemplate",
    "KubeadmControlPlane",
    "KubeadmConfigTemplate",
    "MachineDeployment",
    "MachineHealthCheck",
    "HelmRepository",
    "OCIRepository",
    "HelmRelease",
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn tool() -> PathBuf {
    let path = std::env::var_os("CAPI_VALIDATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/tools/capi-validate"));
    assert!(
        path.is_file(),
        "capi-validate not found at {} (set CAPI_VALIDATE to its path)",
        path.display()
    );
    path
}

/// The rendered streams to check, as (file stem, objects).
struct Streams(Vec<(String, Vec<serde_json::Value>)>);

impl Streams {
    fn add(&mut self, name: String, objs: Vec<serde_json::Value>) {
        self.0.push((name, objs));
    }

    /// Writes every stream to a file, runs the tool once on all of them, and fails unless
    /// it reports `0 invalid` for every object of a CRD kind.
    #[track_caller]
    fn validate(&self) -> String {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("capi-validate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut files = Vec::new();
        let mut expected = 0;
        for (name, objs) in &self.0 {
            let path = dir.join(format!("{name}.yaml"));
            std::fs::write(&path, to_yaml_stream(objs)).unwrap();
            files.push(path);
            expected += objs
                .iter()
                .filter(|o| CRD_KINDS.iter().any(|k| o["kind"] == *k))
                .count();
        }
        let out = Command::new("python3")
            .arg(tool())
            .args(&files)
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3 for capi-validate: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let summary = stdout.lines().last().unwrap_or_default().to_owned();
        assert!(
            out.status.success() && summary.starts_with(&format!("{expected} checked, 0 invalid")),
            "capi-validate: expected {expected} checked, 0 invalid ({}):\n{stdout}\n{stderr}",
            out.status
        );
        std::fs::remove_dir_all(&dir).unwrap();
        summary
    }
}

fn parse_example(file: &Path) -> (WorkloadCluster, Vec<ClusterProfile>) {
    let text = std::fs::read_to_string(file).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
    let mut clusters = Vec::new();
    let mut profiles = Vec::new();
    for doc in docs {
        match doc["kind"].as_str() {
            Some("WorkloadCluster") => clusters.push(serde_json::from_value(doc).unwrap()),
            Some("ClusterProfile") => profiles.push(serde_json::from_value(doc).unwrap()),
            other => panic!("{}: unexpected kind {other:?}", file.display()),
        }
    }
    assert_eq!(
        clusters.len(),
        1,
        "{}: one WorkloadCluster per example",
        file.display()
    );
    (clusters.remove(0), profiles)
}

fn examples() -> Vec<PathBuf> {
    let dir = workspace_root().join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    files
}

#[test]
fn every_example_renders_objects_the_upstream_crds_accept() {
    let mut streams = Streams(Vec::new());
    let mut edge_1 = None;
    for file in examples() {
        let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
        let (cluster, profiles) = parse_example(&file);
        for phase in [Phase::Bootstrap, Phase::Full] {
            let objs = render(&cluster, phase).unwrap_or_else(|e| panic!("{stem}: {e}"));
            streams.add(format!("{stem}.{phase}"), objs);
        }
        for profile in &profiles {
            let mut objs = Vec::new();
            for addon in &profile.spec.addons {
                objs.extend(render_addon(&cluster, addon).unwrap());
            }
            streams.add(
                format!(
                    "{stem}.addons.{}",
                    profile.metadata.name.as_deref().unwrap_or("profile")
                ),
                objs,
            );
        }
        if stem == "edge-1" {
            edge_1 = Some(cluster);
        }
    }
    // The examples use an https chart repository; OCI charts render other Flux kinds.
    let oci: Addon = serde_json::from_value(serde_json::json!({
        "name": "podinfo",
        "helm": {"repository": "oci://ghcr.io/stefanprodan/charts", "chart": "podinfo", "version": "6.7.1"},
        "health": {"helmReleaseReady": true, "timeoutSeconds": 120}
    }))
    .unwrap();
    let edge_1 = edge_1.expect("examples/edge-1.yaml exists");
    streams.add("oci-addon".into(), render_addon(&edge_1, &oci).unwrap());

    let summary = streams.validate();
    eprintln!("capi-validate: {summary}");
}
