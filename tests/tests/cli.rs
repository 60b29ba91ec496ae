//! The client CLI (`fledge-manager cluster|profile|login|completion`) and `serve --embedded`,
//! run as processes against a world. Most tests use a bare world (no CAPI controllers, a
//! fake agent) and a manager without the provisioning controller: the CLI only talks to the
//! API, and the test plays the controller by patching the status.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use fledge_core::spec::{ClusterProfile, WorkloadCluster};
use fledge_e2e::*;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const TOKEN: &str = "token-a";
const TENANT: &str = "team-a";

/// A bare world with one API-only manager and the tenant's credentials.
async fn api_world() -> World {
    let mut world = World::start(WorldOptions {
        controllers: false,
        agent: AgentBin::Fake,
        ..Default::default()
    })
    .await;
    world
        .start_manager_with("m0", &["--no-provisioning"], &[])
        .await;
    create_credentials(&world.kube().await, TENANT).await;
    world
}

fn example_path(file: &str) -> String {
    repo_root()
        .join("examples")
        .join(file)
        .display()
        .to_string()
}

fn json_of(run: &CliRun) -> Value {
    assert_eq!(run.code, 0, "command failed: {run:?}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {run:?}"))
}

async fn stored(world: &World, name: &str) -> WorkloadCluster {
    let api: Api<WorkloadCluster> = Api::namespaced(world.kube().await, TENANT);
    api.get(name).await.expect("stored WorkloadCluster")
}

async fn set_status(world: &World, name: &str, status: Value) {
    let api: Api<WorkloadCluster> = Api::namespaced(world.kube().await, TENANT);
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .expect("patch status");
}

/// Reads lines of a child's stdout until one satisfies `want`; returns every line read.
async fn read_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: &mut Vec<String>,
    want: impl Fn(&str) -> bool,
) {
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            let done = want(&line);
            seen.push(line);
            if done {
                return;
            }
        }
        panic!("stdout ended before the expected line; got {seen:?}");
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .unwrap_or_else(|_| panic!("the expected line never came; got {seen:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_commands_print_json_and_change_the_stored_spec() {
    let world = api_world().await;
    let edge = example_path("edge-1.yaml");

    let created = world
        .cli(0, TOKEN, &["cluster", "create", "-f", &edge])
        .await;
    assert_eq!(created.code, 0, "{created:?}");
    assert!(
        created.stdout.contains("clusterprofile/standard created"),
        "{created:?}"
    );
    assert!(
        created.stdout.contains("workloadcluster/edge-1 created"),
        "{created:?}"
    );
    // Again: the profile is unchanged and creating the same cluster is idempotent.
    let again = world
        .cli(0, TOKEN, &["cluster", "create", "-f", &edge])
        .await;
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stdout.contains("clusterprofile/standard unchanged"),
        "{again:?}"
    );

    // get / list in every format.
    let got = json_of(
        &world
            .cli(0, TOKEN, &["cluster", "get", "edge-1", "-o", "json"])
            .await,
    );
    assert_eq!(got["apiVersion"], "fledge.dev/v1alpha1");
    assert_eq!(got["kind"], "WorkloadCluster");
    assert_eq!(got["metadata"]["name"], "edge-1");
    assert_eq!(got["metadata"]["namespace"], TENANT);
    assert_eq!(got["spec"]["controlPlane"]["replicas"], 3);
    assert_eq!(got["spec"]["workers"][0]["name"], "general");
    assert_eq!(got["spec"]["profile"], "standard");
    let generation = got["metadata"]["generation"].as_i64().expect("generation");
    let yaml = world
        .cli(0, TOKEN, &["cluster", "get", "edge-1", "-o", "yaml"])
        .await;
    assert_eq!(yaml.code, 0, "{yaml:?}");
    assert!(yaml.stdout.contains("kind: WorkloadCluster"), "{yaml:?}");
    assert!(
        yaml.stdout.contains("kubernetesVersion: v1.32.4"),
        "{yaml:?}"
    );
    let list = json_of(
        &world
            .cli(0, TOKEN, &["cluster", "list", "-o", "json"])
            .await,
    );
    assert_eq!(list["kind"], "List");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["items"][0]["metadata"]["name"], "edge-1");
    let table = world.cli(0, TOKEN, &["cluster", "list"]).await;
    assert_eq!(table.code, 0, "{table:?}");
    let mut rows = table.stdout.lines();
    let header: Vec<&str> = rows.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME", "PHASE", "PROGRESS", "VERSION", "CP", "WORKERS", "AGE"
        ]
    );
    let row: Vec<&str> = rows.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(&row[..2], ["edge-1", "Pending"], "{table:?}");
    assert_eq!(row[3], "v1.32.4");
    assert_eq!(row[4], "0/3");
    assert_eq!(row[5], "0/5");
    let wide = world
        .cli(0, TOKEN, &["cluster", "get", "edge-1", "-o", "wide"])
        .await;
    assert!(
        wide.stdout
            .lines()
            .next()
            .unwrap_or_default()
            .ends_with("STEP   AGENT"),
        "{wide:?}"
    );

    // scale, upgrade, rotate-certs: each changes the stored spec.
    let scaled = world
        .cli(
            0,
            TOKEN,
            &["cluster", "scale", "edge-1", "--control-plane", "5"],
        )
        .await;
    assert_eq!(scaled.code, 0, "{scaled:?}");
    assert_eq!(
        stored(&world, "edge-1").await.spec.control_plane.replicas,
        5
    );
    let scaled = world
        .cli(
            0,
            TOKEN,
            &[
                "cluster",
                "scale",
                "edge-1",
                "--pool",
                "general",
                "--replicas",
                "7",
            ],
        )
        .await;
    assert_eq!(scaled.code, 0, "{scaled:?}");
    let spec = stored(&world, "edge-1").await.spec;
    assert_eq!(spec.workers[0].replicas, Some(7));
    assert_eq!(spec.control_plane.replicas, 5, "the earlier change stays");
    let upgraded = world
        .cli(
            0,
            TOKEN,
            &[
                "cluster",
                "upgrade",
                "edge-1",
                "--kubernetes-version",
                "v1.33.0",
            ],
        )
        .await;
    assert_eq!(upgraded.code, 0, "{upgraded:?}");
    assert_eq!(
        stored(&world, "edge-1").await.spec.kubernetes_version,
        "v1.33.0"
    );
    let os = world
        .cli(
            0,
            TOKEN,
            &[
                "cluster",
                "upgrade",
                "edge-1",
                "--template",
                "os-2",
                "--pool",
                "batch",
            ],
        )
        .await;
    assert_eq!(os.code, 0, "{os:?}");
    let os = world
        .cli(
            0,
            TOKEN,
            &["cluster", "upgrade", "edge-1", "--template", "os-cp-2"],
        )
        .await;
    assert_eq!(os.code, 0, "{os:?}");
    let spec = stored(&world, "edge-1").await.spec;
    assert_eq!(spec.workers[1].template.as_deref(), Some("os-2"));
    assert_eq!(spec.workers[0].template, None, "other pools keep theirs");
    assert_eq!(spec.control_plane.template.as_deref(), Some("os-cp-2"));
    let rotated = world
        .cli(0, TOKEN, &["cluster", "rotate-certs", "edge-1"])
        .await;
    assert_eq!(rotated.code, 0, "{rotated:?}");
    let rotate_after = stored(&world, "edge-1")
        .await
        .spec
        .certificates
        .and_then(|c| c.rotate_after)
        .expect("rotateAfter is set");
    assert!(
        chrono_like_rfc3339(&rotate_after),
        "rotateAfter {rotate_after:?} is RFC 3339"
    );
    let got = json_of(
        &world
            .cli(0, TOKEN, &["cluster", "get", "edge-1", "-o", "json"])
            .await,
    );
    assert_eq!(
        got["metadata"]["generation"].as_i64(),
        Some(generation + 6),
        "one generation per change"
    );
    assert_eq!(
        got["spec"]["certificates"]["rotateAfter"],
        rotate_after.as_str()
    );

    // Bad input: a pool that does not exist (client side) and an even control plane
    // (the manager's validation, with the field path).
    let no_pool = world
        .cli(
            0,
            TOKEN,
            &[
                "cluster",
                "scale",
                "edge-1",
                "--pool",
                "nope",
                "--replicas",
                "1",
            ],
        )
        .await;
    assert_eq!(no_pool.code, 2, "{no_pool:?}");
    assert!(no_pool.stderr.contains("no pool \"nope\""), "{no_pool:?}");
    let even = world
        .cli(
            0,
            TOKEN,
            &["cluster", "scale", "edge-1", "--control-plane", "2"],
        )
        .await;
    assert_eq!(even.code, 2, "{even:?}");
    assert!(
        even.stderr
            .lines()
            .any(|l| l.starts_with("spec.controlPlane.replicas: ")),
        "one `path: reason` line per problem: {even:?}"
    );

    // kubeconfig: stdout, or a private file.
    let secrets: Api<Secret> = Api::namespaced(world.kube().await, TENANT);
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "edge-1-kubeconfig", "namespace": TENANT},
        "stringData": {"value": "apiVersion: v1\nkind: Config\n"},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let kubeconfig = world
        .cli(0, TOKEN, &["cluster", "kubeconfig", "edge-1"])
        .await;
    assert_eq!(kubeconfig.code, 0, "{kubeconfig:?}");
    assert_eq!(kubeconfig.stdout, "apiVersion: v1\nkind: Config\n");
    let file = world.dir.path().join("edge-1.kubeconfig");
    let written = world
        .cli(
            0,
            TOKEN,
            &[
                "cluster",
                "kubeconfig",
                "edge-1",
                "--write",
                &file.display().to_string(),
            ],
        )
        .await;
    assert_eq!(written.code, 0, "{written:?}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), kubeconfig.stdout);
    assert_eq!(mode(&file), 0o600);

    // Profiles.
    let profile = json_of(
        &world
            .cli(0, TOKEN, &["profile", "get", "standard", "-o", "json"])
            .await,
    );
    assert_eq!(profile["kind"], "ClusterProfile");
    assert_eq!(profile["spec"]["addons"][0]["name"], "cni");
    assert_eq!(
        profile["spec"]["addons"][1]["helm"]["chart"],
        "kube-prometheus-stack"
    );
    let profiles = json_of(
        &world
            .cli(0, TOKEN, &["profile", "list", "-o", "json"])
            .await,
    );
    assert_eq!(profiles["items"].as_array().map(Vec::len), Some(1));
    let table = world.cli(0, TOKEN, &["profile", "list"]).await;
    assert!(table.stdout.starts_with("NAME"), "{table:?}");
    assert!(table.stdout.contains("cni,monitoring"), "{table:?}");
    // A changed profile is updated in place.
    let changed = std::fs::read_to_string(&edge)
        .unwrap()
        .replace("version: 65.1.0", "version: 65.2.0");
    let changed_file = world.dir.path().join("edge-1-changed.yaml");
    std::fs::write(&changed_file, changed).unwrap();
    let applied = world
        .cli(
            0,
            TOKEN,
            &[
                "profile",
                "apply",
                "-f",
                &changed_file.display().to_string(),
            ],
        )
        .await;
    assert_eq!(applied.code, 0, "{applied:?}");
    assert!(
        applied
            .stdout
            .contains("clusterprofile/standard configured"),
        "{applied:?}"
    );
    let profiles: Api<ClusterProfile> = Api::namespaced(world.kube().await, TENANT);
    let stored_profile = profiles.get("standard").await.unwrap();
    assert_eq!(
        stored_profile.spec.addons[1]
            .helm
            .as_ref()
            .map(|h| h.version.as_str()),
        Some("65.2.0")
    );
    // In use: refused.
    let in_use = world
        .cli(0, TOKEN, &["profile", "delete", "standard"])
        .await;
    assert_eq!(in_use.code, 1, "{in_use:?}");

    // Delete and wait (no provisioning controller, so no finalizer: it goes at once).
    let deleted = world
        .cli(
            0,
            TOKEN,
            &["cluster", "delete", "edge-1", "--wait", "--timeout", "60s"],
        )
        .await;
    assert_eq!(deleted.code, 0, "{deleted:?}");
    assert!(
        deleted.stdout.contains("Cluster edge-1 is deleted"),
        "{deleted:?}"
    );
    let api: Api<WorkloadCluster> = Api::namespaced(world.kube().await, TENANT);
    assert!(api.get_opt("edge-1").await.unwrap().is_none());
    let gone = world
        .cli(0, TOKEN, &["cluster", "get", "edge-1", "-o", "json"])
        .await;
    assert_eq!(gone.code, 4, "not found: {gone:?}");
    let deleted = world
        .cli(0, TOKEN, &["profile", "delete", "standard"])
        .await;
    assert_eq!(deleted.code, 0, "{deleted:?}");
    let gone = world.cli(0, TOKEN, &["profile", "get", "standard"]).await;
    assert_eq!(gone.code, 4, "{gone:?}");
    let empty = json_of(
        &world
            .cli(0, TOKEN, &["cluster", "list", "-o", "json"])
            .await,
    );
    assert_eq!(empty["items"].as_array().map(Vec::len), Some(0));
}

fn chrono_like_rfc3339(text: &str) -> bool {
    text.parse::<k8s_openapi::jiff::Timestamp>().is_ok() && text.ends_with('Z')
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// A CA certificate that did not sign the manager's certificate: the sim's own CA.
fn other_ca(world: &World) -> PathBuf {
    fn find(dir: &Path) -> Option<PathBuf> {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if let Some(found) = find(&path) {
                    return Some(found);
                }
            } else if std::fs::read_to_string(&path)
                .is_ok_and(|t| t.starts_with("-----BEGIN CERTIFICATE-----"))
            {
                return Some(path);
            }
        }
        None
    }
    find(&world.state_dir.join("pki")).expect("the sim keeps a CA certificate in pki/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_to_fix_with_their_exit_codes() {
    let world = api_world().await;
    let edge = example_path("edge-1.yaml");
    let config_home = world.dir.path().join("cli-config");
    let addr = world.managers[0].addr.clone();
    let ca = world.tls_dir().join("ca.crt").display().to_string();

    // Bad token / no token: 3.
    let bad = world.cli(0, "wrong", &["cluster", "list"]).await;
    assert_eq!(bad.code, 3, "{bad:?}");
    assert!(bad.stderr.contains("rejected the token"), "{bad:?}");
    let mut command = cli_command(&config_home);
    command.args([
        "cluster",
        "list",
        "--server",
        &format!("https://{addr}"),
        "--ca-file",
        &ca,
    ]);
    let none = cli_output(command).await;
    assert_eq!(none.code, 3, "{none:?}");
    assert!(none.stderr.contains("no token"), "{none:?}");

    // Unreachable: 3.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut command = cli_command(&config_home);
    command.args([
        "cluster",
        "list",
        "--server",
        &format!("https://{closed}"),
        "--ca-file",
        &ca,
        "--token",
        TOKEN,
    ]);
    let unreachable = cli_output(command).await;
    assert_eq!(unreachable.code, 3, "{unreachable:?}");
    assert!(
        unreachable.stderr.contains("connection refused"),
        "{unreachable:?}"
    );

    // TLS mismatch (another CA): 3, naming the CA file.
    let other = other_ca(&world).display().to_string();
    let mut command = cli_command(&config_home);
    command.args([
        "cluster",
        "list",
        "--server",
        &format!("https://{addr}"),
        "--ca-file",
        &other,
        "--token",
        TOKEN,
    ]);
    let mismatch = cli_output(command).await;
    assert_eq!(mismatch.code, 3, "{mismatch:?}");
    assert!(mismatch.stderr.contains("TLS"), "{mismatch:?}");
    assert!(mismatch.stderr.contains(&other), "{mismatch:?}");

    // Bad input: 2 (plain http, missing CA file, bad usage, an invalid file with its paths).
    let mut command = cli_command(&config_home);
    command.args([
        "cluster",
        "list",
        "--server",
        &format!("http://{addr}"),
        "--ca-file",
        &ca,
        "--token",
        TOKEN,
    ]);
    let http = cli_output(command).await;
    assert_eq!(http.code, 2, "{http:?}");
    assert!(http.stderr.contains("https://"), "{http:?}");
    let mut command = cli_command(&config_home);
    command.args([
        "cluster",
        "list",
        "--server",
        &format!("https://{addr}"),
        "--token",
        TOKEN,
    ]);
    let no_ca = cli_output(command).await;
    assert_eq!(no_ca.code, 2, "{no_ca:?}");
    assert!(no_ca.stderr.contains("--ca-file"), "{no_ca:?}");
    let usage = world.cli(0, TOKEN, &["cluster", "scale", "edge-1"]).await;
    assert_eq!(usage.code, 2, "{usage:?}");
    let invalid = std::fs::read_to_string(&edge)
        .unwrap()
        .replace("replicas: 3\n    endpoint", "replicas: 2\n    endpoint")
        .replace("kubernetesVersion: v1.32.4", "kubernetesVersion: v1.32");
    let invalid_file = world.dir.path().join("invalid.yaml");
    std::fs::write(&invalid_file, invalid).unwrap();
    let invalid = world
        .cli(
            0,
            TOKEN,
            &[
                "cluster",
                "create",
                "-f",
                &invalid_file.display().to_string(),
            ],
        )
        .await;
    assert_eq!(invalid.code, 2, "{invalid:?}");
    assert!(
        invalid
            .stderr
            .lines()
            .any(|l| l.contains("spec.controlPlane.replicas: ")),
        "{invalid:?}"
    );
    assert!(
        invalid
            .stderr
            .lines()
            .any(|l| l.contains("spec.kubernetesVersion: ")),
        "{invalid:?}"
    );

    // Not found: 4.
    for args in [
        &["cluster", "get", "missing"][..],
        &["cluster", "scale", "missing", "--control-plane", "3"],
        &["cluster", "delete", "missing"],
        &["cluster", "watch", "missing"],
        &["profile", "get", "missing"],
    ] {
        let missing = world.cli(0, TOKEN, args).await;
        assert_eq!(missing.code, 4, "{args:?}: {missing:?}");
        assert!(
            missing.stderr.contains("not found"),
            "{args:?}: {missing:?}"
        );
    }

    // --wait that never gets there (no provisioning controller): 1 with the reason.
    let timeout = world
        .cli(
            0,
            TOKEN,
            &[
                "cluster",
                "create",
                "-f",
                &edge,
                "--wait",
                "--timeout",
                "2s",
            ],
        )
        .await;
    assert_eq!(timeout.code, 1, "{timeout:?}");
    assert!(timeout.stderr.contains("timed out after 2s"), "{timeout:?}");
    assert!(
        timeout.stdout.contains("workloadcluster/edge-1 created"),
        "{timeout:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_and_watch_print_one_line_per_change_without_a_terminal() {
    let world = api_world().await;
    let single = example_path("single-node.yaml");
    let name = single_node_name();

    // `cluster watch -o json` prints one object per line, until the cluster is deleted.
    let created = world
        .cli(0, TOKEN, &["cluster", "create", "-f", &single])
        .await;
    assert_eq!(created.code, 0, "{created:?}");
    let mut watch = cli_command(&world.dir.path().join("cli-config"));
    watch
        .args(["cluster", "watch", &name, "-o", "json"])
        .args(world.cli_flags(0, TOKEN))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut watch = watch.spawn().unwrap();
    let mut watch_lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    read_until(&mut watch_lines, &mut seen, |l| l.starts_with('{')).await;
    set_status(
        &world,
        &name,
        json!({"phase": "Bootstrapping", "message": "cloning VMs"}),
    )
    .await;
    read_until(&mut watch_lines, &mut seen, |l| {
        serde_json::from_str::<Value>(l).is_ok_and(|v| v["status"]["phase"] == "Bootstrapping")
    })
    .await;

    // `create --wait` with stdout not a terminal: `[  12.3s] Phase: message` lines.
    let mut wait = cli_command(&world.dir.path().join("cli-config"));
    wait.args([
        "cluster",
        "create",
        "-f",
        &single,
        "--wait",
        "--timeout",
        "120s",
    ])
    .args(world.cli_flags(0, TOKEN))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut wait = wait.spawn().unwrap();
    let mut lines = BufReader::new(wait.stdout.take().unwrap()).lines();
    let mut wait_seen = Vec::new();
    read_until(&mut lines, &mut wait_seen, |l| {
        l.ends_with("] Bootstrapping: cloning VMs")
    })
    .await;
    set_status(
        &world,
        &name,
        json!({"phase": "WaitingForControlPlane", "message": ""}),
    )
    .await;
    read_until(&mut lines, &mut wait_seen, |l| {
        l.ends_with("] WaitingForControlPlane")
    })
    .await;
    set_status(
        &world,
        &name,
        json!({"phase": "Ready", "message": "all good"}),
    )
    .await;
    read_until(&mut lines, &mut wait_seen, |l| l.starts_with("Cluster ")).await;
    let status = tokio::time::timeout(DEADLINE, wait.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{wait_seen:?}");
    let progress: Vec<&String> = wait_seen.iter().filter(|l| l.starts_with('[')).collect();
    assert_eq!(progress.len(), 3, "one line per phase: {wait_seen:?}");
    for line in &progress {
        let (stamp, _) = line.split_once("] ").expect("[elapsed] prefix");
        let secs = stamp.trim_start_matches('[').trim().trim_end_matches('s');
        assert!(secs.parse::<f64>().is_ok(), "elapsed seconds in {line:?}");
    }
    assert!(progress[2].ends_with("] Ready: all good"), "{wait_seen:?}");
    assert_eq!(
        wait_seen
            .last()
            .map(|l| l.starts_with(&format!("Cluster {name} is Ready"))),
        Some(true)
    );

    // Failed: exit 1 with the reason.
    set_status(
        &world,
        &name,
        json!({"phase": "Failed", "message": "the VM template is gone"}),
    )
    .await;
    let failed = world
        .cli(
            0,
            TOKEN,
            &[
                "cluster",
                "create",
                "-f",
                &single,
                "--wait",
                "--timeout",
                "60s",
            ],
        )
        .await;
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(
        failed.stderr.contains("is Failed: the VM template is gone"),
        "{failed:?}"
    );

    // The watch saw every change, and ends when the cluster is deleted.
    let api: Api<WorkloadCluster> = Api::namespaced(world.kube().await, TENANT);
    api.delete(&name, &Default::default()).await.unwrap();
    read_until(&mut watch_lines, &mut seen, |l| l.ends_with("deleted")).await;
    let status = tokio::time::timeout(DEADLINE, watch.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0), "{seen:?}");
    let phases: Vec<String> = seen
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v["status"]["phase"].as_str().map(String::from))
        .collect();
    for phase in ["Bootstrapping", "WaitingForControlPlane", "Ready", "Failed"] {
        assert!(phases.iter().any(|p| p == phase), "{phase} in {phases:?}");
    }
}

fn single_node_name() -> String {
    example("single-node.yaml")
        .into_iter()
        .find_map(|d| match d {
            fledge_core::validate::Document::WorkloadCluster(c) => c.metadata.name,
            _ => None,
        })
        .expect("single-node.yaml names its cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_saves_the_settings_and_completion_prints_scripts() {
    let world = api_world().await;
    let config_home = world.dir.path().join("login-config");
    let flags = world.cli_flags(0, TOKEN);

    // A bad token is refused and nothing is saved.
    let mut command = cli_command(&config_home);
    command.arg("login").args(world.cli_flags(0, "wrong"));
    let refused = cli_output(command).await;
    assert_eq!(refused.code, 3, "{refused:?}");
    let config = config_home.join("fledge").join("config.yaml");
    assert!(!config.exists());

    let mut command = cli_command(&config_home);
    command.arg("login").args(&flags);
    let login = cli_output(command).await;
    assert_eq!(login.code, 0, "{login:?}");
    assert_eq!(mode(&config), 0o600, "the file holds the token");

    // Later commands need no flags.
    let mut command = cli_command(&config_home);
    command.args(["cluster", "list", "-o", "json"]);
    let list = json_of(&cli_output(command).await);
    assert_eq!(list["kind"], "List");
    // An environment variable beats the file.
    let mut command = cli_command(&config_home);
    command
        .args(["cluster", "list"])
        .env("FLEDGE_TOKEN", "wrong");
    let overridden = cli_output(command).await;
    assert_eq!(overridden.code, 3, "{overridden:?}");

    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef fledge-manager"),
        ("fish", "complete -c fledge-manager"),
    ] {
        let mut command = cli_command(&config_home);
        command.args(["completion", shell]);
        let script = cli_output(command).await;
        assert_eq!(script.code, 0, "{script:?}");
        assert!(
            script.stdout.contains(marker),
            "{shell}: {}",
            &script.stdout[..200.min(script.stdout.len())]
        );
        assert!(
            script.stdout.contains("rotate-certs"),
            "{shell} completes subcommands"
        );
    }
}

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// Live processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) && pid_alive(pid) {
            found.push(pid);
        }
    }
    found
}

/// Starts `serve --embedded` on `state`; returns the child and its address.
async fn embedded_manager(state: &Path, log: &Path) -> (tokio::process::Child, String) {
    let mut command = cli_command(&state.join("cli-config"));
    command
        .args([
            "serve",
            "--embedded",
            "--listen",
            "127.0.0.1:0",
            "--sim-speed",
            "100",
            "--state-dir",
        ])
        .arg(state)
        .env("FLEDGE_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap());
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("the manager printed its address")
        .unwrap()
        .unwrap_or_else(|| {
            panic!(
                "manager exited: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
    let addr = line
        .strip_prefix("listening on ")
        .expect("address line")
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_embedded_starts_a_world_and_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (mut first, addr) = embedded_manager(&state, &dir.path().join("m1.log")).await;
    let log = std::fs::read_to_string(dir.path().join("m1.log")).unwrap();
    assert!(log.contains("(started)"), "{log}");
    assert!(
        log.contains(&state.join("token").display().to_string()),
        "prints the token path: {log}"
    );
    let token = std::fs::read_to_string(state.join("token"))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(mode(&state.join("token")), 0o600);
    let pid: u32 = std::fs::read_to_string(state.join("sim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(pid));

    let list = |addr: String, token: String| {
        let mut command = cli_command(&dir.path().join("cli-config"));
        command
            .args([
                "cluster",
                "list",
                "-o",
                "json",
                "--server",
                &format!("https://{addr}"),
                "--ca-file",
            ])
            .arg(state.join("tls").join("ca.crt"))
            .args(["--token", &token]);
        cli_output(command)
    };
    let listed = json_of(&list(addr, token.clone()).await);
    assert_eq!(listed["kind"], "List");

    // Killing the manager leaves the world running; a second manager reuses it.
    first.kill().await.unwrap();
    assert!(pid_alive(pid), "the sim outlives the manager");
    let (mut second, addr) = embedded_manager(&state, &dir.path().join("m2.log")).await;
    let log = std::fs::read_to_string(dir.path().join("m2.log")).unwrap();
    assert!(log.contains(&format!("pid {pid} (reused)")), "{log}");
    let again: u32 = std::fs::read_to_string(state.join("sim.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(again, pid);
    let token_again = std::fs::read_to_string(state.join("token"))
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(token_again, token, "the token is kept");
    let listed = json_of(&list(addr, token).await);
    assert_eq!(listed["kind"], "List");

    // Stop everything; nothing of this state dir keeps running.
    second.kill().await.unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(i32::try_from(pid).unwrap()).unwrap(),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let needle = state.display().to_string();
    eventually("no process of the state dir is left", || {
        let left = processes_mentioning(&needle);
        async move { left.is_empty().then_some(()) }
    })
    .await;
}
