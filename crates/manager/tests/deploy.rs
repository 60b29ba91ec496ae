//! `deploy/manager/` applies cleanly with kubectl against `fledge-sim serve --no-controllers`
//! (started as a process), and `serve` without `--kubeconfig` infers its configuration, as it
//! must in a Pod.

// Helpers outside `#[test]` functions fail the test the same way: with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

/// Safety net for anything the world has to do; never a timing assertion.
const DEADLINE: Duration = Duration::from_secs(60);

const KUBECTL: &str = "/usr/bin/kubectl";

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_fledge-manager"))
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A simulated management cluster, killed on drop.
struct Sim {
    dir: tempfile::TempDir,
    _sim: Child,
    kubeconfig: PathBuf,
}

impl Sim {
    async fn start() -> Sim {
        let sim_bin = bin_dir().join("fledge-sim");
        assert!(
            sim_bin.exists(),
            "{} is missing: run cargo build -p fledge-sim first",
            sim_bin.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("sim");
        let mut sim = Command::new(&sim_bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--no-controllers",
                "--state-dir",
            ])
            .arg(&state)
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start fledge-sim");
        let kubeconfig = state.join("kubeconfig");
        // The sim announces readiness only by writing its kubeconfig.
        let poll = async {
            while !kubeconfig.exists() {
                if let Ok(Some(status)) = sim.try_wait() {
                    panic!("fledge-sim exited with {status} before writing its kubeconfig");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(DEADLINE, poll)
            .await
            .expect("fledge-sim never wrote its kubeconfig");
        Sim {
            dir,
            _sim: sim,
            kubeconfig,
        }
    }

    async fn kubectl(&self, args: &[&str]) -> Output {
        assert!(
            Path::new(KUBECTL).exists(),
            "{KUBECTL} is missing: this test needs kubectl installed there"
        );
        let run = Command::new(KUBECTL)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .current_dir(repo_root())
            .output();
        tokio::time::timeout(DEADLINE, run)
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish"))
            .unwrap_or_else(|err| panic!("running {KUBECTL}: {err}"))
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn manager_manifests_apply_cleanly_and_idempotently() {
    let sim = Sim::start().await;
    let first = sim.kubectl(&["apply", "-k", "deploy/manager"]).await;
    assert!(
        first.status.success(),
        "first apply failed: {}\n{}",
        text(&first.stdout),
        text(&first.stderr)
    );
    let stdout = text(&first.stdout);
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/workloadclusters.fledge.dev",
        "customresourcedefinition.apiextensions.k8s.io/clusterprofiles.fledge.dev",
        "namespace/fledge-system",
        "serviceaccount/fledge-manager",
        "clusterrole.rbac.authorization.k8s.io/fledge-manager",
        "clusterrolebinding.rbac.authorization.k8s.io/fledge-manager",
        "role.rbac.authorization.k8s.io/fledge-manager-leader-election",
        "rolebinding.rbac.authorization.k8s.io/fledge-manager-leader-election",
        "service/fledge-manager",
        "deployment.apps/fledge-manager",
    ] {
        assert!(
            stdout.contains(&format!("{object} created")),
            "{object} not created:\n{stdout}"
        );
    }

    let get = sim
        .kubectl(&[
            "get",
            "deployment",
            "-n",
            "fledge-system",
            "fledge-manager",
            "-o",
            "json",
        ])
        .await;
    assert!(get.status.success(), "get failed: {}", text(&get.stderr));
    let deployment: serde_json::Value =
        serde_json::from_slice(&get.stdout).expect("deployment JSON");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        "ghcr.io/fledge-dev/fledge-manager:0.1.0"
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);

    let second = sim.kubectl(&["apply", "-k", "deploy/manager"]).await;
    assert!(
        second.status.success(),
        "second apply failed: {}",
        text(&second.stderr)
    );
    let lines: Vec<String> = text(&second.stdout).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 10, "one line per object: {lines:?}");
    for line in &lines {
        assert!(line.ends_with(" unchanged"), "second apply changed {line}");
    }
}

/// In a Pod there is no kubeconfig: `serve` must infer its configuration. Here inference
/// finds `$HOME/.kube/config`; in a Pod it falls through to the ServiceAccount.
#[tokio::test]
async fn serve_without_kubeconfig_infers_configuration() {
    let sim = Sim::start().await;
    let home = sim.dir.path().join("home");
    std::fs::create_dir_all(home.join(".kube")).expect("mkdir .kube");
    std::fs::copy(&sim.kubeconfig, home.join(".kube/config")).expect("copy kubeconfig");
    let mut manager = Command::new(env!("CARGO_BIN_EXE_fledge-manager"))
        .args(["serve", "--listen", "127.0.0.1:0", "--no-provisioning"])
        .arg("--tls-dir")
        .arg(sim.dir.path().join("tls"))
        .env_remove("KUBECONFIG")
        .env("HOME", &home)
        .env("FLEDGE_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start fledge-manager");
    let stdout = manager.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("manager never printed its address")
        .expect("read stdout")
        .unwrap_or_else(|| panic!("manager exited early: {:?}", manager.try_wait()));
    assert!(
        line.starts_with("listening on "),
        "unexpected line {line:?}"
    );
    // It got there by installing its CRDs through the inferred configuration.
    let crd = sim
        .kubectl(&["get", "crd", "workloadclusters.fledge.dev", "-o", "name"])
        .await;
    assert!(
        crd.status.success(),
        "CRD not installed: {}",
        text(&crd.stderr)
    );
}
