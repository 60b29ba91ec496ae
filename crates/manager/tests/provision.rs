//! End-to-end tests of the provisioning pipeline: `fledge-sim serve` (with its CAPI/vSphere
//! controllers, sped up) and `fledge-manager serve`, both started as processes.
//!
//! Each test owns its world (sim, managers, state directory) and its cluster names.

// Helpers outside `#[test]` functions fail the test the same way: with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fledge_core::proto::v1;
use fledge_core::proto::v1::cluster_service_client::ClusterServiceClient;
use fledge_core::spec::WorkloadCluster;
use fledge_core::validate::{Document, load_and_validate};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tonic::Request;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

/// Safety net for anything the world has to do; never a timing assertion. Generous because
/// the tests share two cores with each other and with other builds.
const DEADLINE: Duration = Duration::from_secs(120);

const TOKENS: &str = "token-a team-a\n";

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_fledge-manager"))
        .parent()
        .expect("bin dir")
        .to_path_buf()
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Polls for a file; the sim announces readiness only by writing it.
async fn wait_for_file(path: &Path, child: &mut Child, what: &str) {
    let poll = async {
        while !path.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "{what} exited with {status} before writing {}",
                    path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(DEADLINE, poll)
        .await
        .unwrap_or_else(|_| panic!("{what} never wrote {}", path.display()));
}

/// One manager process.
struct Manager {
    child: Child,
    addr: String,
    log: PathBuf,
}

/// A simulated world plus managers, killed on drop.
struct World {
    dir: tempfile::TempDir,
    sim: Child,
    managers: Vec<Manager>,
    kubeconfig: PathBuf,
}

impl World {
    async fn start(controllers: bool) -> World {
        let sim_bin = bin_dir().join("fledge-sim");
        assert!(
            sim_bin.exists(),
            "{} is missing: run cargo build -p fledge-sim first",
            sim_bin.display()
        );
        let dir = tempfile::tempdir().expect("tempdir");
        // The agent binary is not built yet: a stand-in that exits at once is enough, since
        // the pipeline does not wait for the agent to be ready.
        let agent = dir.path().join("fake-agent");
        std::fs::write(&agent, "#!/bin/sh\nexit 0\n").expect("write fake agent");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755))
                .expect("chmod fake agent");
        }
        let state = dir.path().join("sim");
        let mut command = Command::new(&sim_bin);
        command
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--speed",
                "100",
                "--state-dir",
            ])
            .arg(&state)
            .arg("--agent-bin")
            .arg(&agent);
        if !controllers {
            command.arg("--no-controllers");
        }
        let sim_log = std::fs::File::create(dir.path().join("sim.log")).expect("sim log");
        let mut sim = command
            .stdout(Stdio::null())
            .stderr(sim_log)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("start fledge-sim");
        let kubeconfig = state.join("kubeconfig");
        wait_for_file(&kubeconfig, &mut sim, "fledge-sim").await;
        std::fs::write(dir.path().join("tokens"), TOKENS).expect("write tokens");
        World {
            dir,
            sim,
            managers: Vec::new(),
            kubeconfig,
        }
    }

    /// Starts a manager whose identity starts with `host`; returns its index.
    async fn start_manager(&mut self, host: &str) -> usize {
        let log = self.dir.path().join(format!("{host}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_fledge-manager"))
            .args(["serve", "--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(&self.kubeconfig)
            .arg("--tls-dir")
            .arg(self.dir.path().join("tls"))
            .arg("--tokens")
            .arg(self.dir.path().join("tokens"))
            .env("FLEDGE_LOG", "info")
            .env("HOSTNAME", host)
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("manager log"))
            .kill_on_drop(true)
            .spawn()
            .expect("start fledge-manager");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(DEADLINE, lines.next_line())
            .await
            .expect("manager never printed its address")
            .expect("read stdout")
            .unwrap_or_else(|| panic!("manager exited early: {:?}", std::fs::read_to_string(&log)));
        let addr = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        self.managers.push(Manager { child, addr, log });
        self.managers.len() - 1
    }

    async fn kube(&self) -> Client {
        client_from_kubeconfig(&std::fs::read_to_string(&self.kubeconfig).expect("kubeconfig"))
            .await
    }

    async fn grpc(&self, manager: usize) -> ClusterServiceClient<tonic::transport::Channel> {
        let ca_pem = std::fs::read_to_string(self.dir.path().join("tls/ca.crt")).expect("ca.crt");
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&ca_pem))
            .domain_name("localhost");
        let channel = Endpoint::from_shared(format!("https://{}", self.managers[manager].addr))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls config")
            .timeout(Duration::from_secs(20))
            .connect()
            .await
            .expect("connect to the manager");
        ClusterServiceClient::new(channel)
    }

    fn manager_log(&self, manager: usize) -> String {
        std::fs::read_to_string(&self.managers[manager].log).unwrap_or_default()
    }

    /// Stops a manager with SIGTERM (it releases the Lease) and waits for it to exit.
    async fn stop_manager(&mut self, manager: usize) {
        let child = &mut self.managers[manager].child;
        let pid = i32::try_from(child.id().expect("manager running")).expect("pid");
        let pid = rustix::process::Pid::from_raw(pid).expect("pid");
        rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("manager did not stop after SIGTERM")
            .expect("wait");
    }
}

impl World {
    /// Kills a manager with SIGKILL (it cannot release the Lease) and reaps it.
    async fn kill_manager(&mut self, manager: usize) {
        let child = &mut self.managers[manager].child;
        child.kill().await.expect("SIGKILL the manager");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.sim.start_kill();
        for manager in &mut self.managers {
            let _ = manager.child.start_kill();
        }
    }
}

async fn client_from_kubeconfig(yaml: &str) -> Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube config");
    Client::try_from(config).expect("kube client")
}

/// The single-node example's cluster, moved to `namespace` and renamed `name`.
fn single_node(namespace: &str, name: &str) -> WorkloadCluster {
    let yaml =
        std::fs::read_to_string(repo_root().join("examples/single-node.yaml")).expect("example");
    let docs = load_and_validate(&yaml).expect("example is valid");
    let Some(Document::WorkloadCluster(mut cluster)) = docs.into_iter().next() else {
        panic!("the example holds a WorkloadCluster first");
    };
    cluster.metadata.namespace = Some(namespace.into());
    cluster.metadata.name = Some(name.into());
    cluster
}

async fn ensure_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("creating namespace {name}: {err}"),
    }
}

async fn create_credentials(client: &Client, namespace: &str) {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "vsphere-credentials", "namespace": namespace},
        "stringData": {"username": "administrator@vsphere.local", "password": "secret"},
    }))
    .expect("secret");
    api.create(&PostParams::default(), &secret)
        .await
        .expect("create the credentials Secret");
}

/// Waits until the cluster's status satisfies `cond`; on timeout, fails with the last state.
async fn wait_for_status(
    api: &Api<WorkloadCluster>,
    name: &str,
    what: &str,
    cond: impl Fn(&fledge_core::spec::WorkloadClusterStatus) -> bool,
) -> WorkloadCluster {
    let condition =
        move |obj: Option<&WorkloadCluster>| obj.and_then(|o| o.status.as_ref()).is_some_and(&cond);
    match tokio::time::timeout(DEADLINE, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(Some(obj))) => obj,
        Ok(other) => panic!("waiting for {name} to be {what}: watch ended with {other:?}"),
        Err(_) => panic!(
            "{name} never became {what}; last seen: {:#?}",
            api.get_opt(name).await.map(|o| o.and_then(|o| o.status))
        ),
    }
}

/// Records every distinct `status.phase` of `name` until `last` is seen.
/// Every phase seen so far is also published on `seen`, so the test can wait for one.
async fn record_phases(
    api: Api<WorkloadCluster>,
    name: String,
    last: &'static str,
    seen: tokio::sync::watch::Sender<Vec<String>>,
) -> Vec<String> {
    let config = kube::runtime::watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = Box::pin(kube::runtime::WatchStreamExt::applied_objects(
        kube::runtime::watcher(api.clone(), config),
    ));
    let mut phases: Vec<String> = Vec::new();
    let collect = async {
        while let Some(event) = stream.next().await {
            let Ok(obj) = event else { continue };
            if let Some(phase) = obj.status.and_then(|s| s.phase)
                && phases.last() != Some(&phase)
            {
                phases.push(phase.clone());
                seen.send_replace(phases.clone());
                if phase == last {
                    return;
                }
            }
        }
    };
    if tokio::time::timeout(DEADLINE, collect).await.is_err() {
        panic!(
            "{name} never reached {last}; phases seen {phases:?}; last status {:#?}",
            api.get_opt(&name).await.map(|o| o.and_then(|o| o.status))
        );
    }
    phases
}

fn dynamic(
    client: &Client,
    namespace: &str,
    group: &str,
    version: &str,
    kind: &str,
) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), namespace, &resource)
}

fn managed_by_fledge(obj: &DynamicObject) -> bool {
    obj.metadata.managed_fields.iter().flatten().any(|m| {
        matches!(
            m.manager.as_deref(),
            Some("fledge-manager" | "fledge-pivot")
        )
    })
}

fn condition_message(cluster: &WorkloadCluster, type_: &str) -> Option<(String, String)> {
    cluster
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.message.clone()))
}

#[tokio::test]
async fn clusters_from_grpc_and_kube_rs_advance_to_installing_agent() {
    let mut world = World::start(true).await;
    world.start_manager("manager-a").await;
    let kube = world.kube().await;
    ensure_namespace(&kube, "team-a").await;
    let clusters: Api<WorkloadCluster> = Api::namespaced(kube.clone(), "team-a");

    // Over gRPC: the single-node example in tenant team-a.
    let from_grpc = single_node("team-a", "single-node");
    let mut grpc = world.grpc(0).await;
    let mut request = Request::new(v1::CreateClusterRequest {
        name: "single-node".into(),
        spec: Some(v1::ClusterSpec::from(&from_grpc.spec)),
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer token-a".parse().expect("ascii"));
    grpc.create_cluster(request)
        .await
        .expect("create over gRPC");
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(Vec::new());
    let recorder = tokio::spawn(record_phases(
        clusters.clone(),
        "single-node".into(),
        "InstallingAgent",
        seen_tx,
    ));

    // Without the credentials Secret, Bootstrapping waits and says why.
    let waiting = wait_for_status(&clusters, "single-node", "waiting for credentials", |s| {
        s.step.as_deref() == Some("CredentialsSecretMissing")
    })
    .await;
    assert_eq!(
        waiting.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Bootstrapping")
    );
    assert!(
        waiting
            .metadata
            .finalizers
            .iter()
            .flatten()
            .any(|f| f == "fledge.dev/workload-cluster"),
        "{:?}",
        waiting.metadata.finalizers
    );

    // The recorder must have seen Bootstrapping before the Secret lets the cluster move on.
    tokio::time::timeout(
        DEADLINE,
        seen_rx.wait_for(|p| p.iter().any(|p| p == "Bootstrapping")),
    )
    .await
    .expect("the recorder never saw Bootstrapping")
    .expect("recorder alive");

    // Written with kube-rs directly: provisioned the same way.
    let mut direct = single_node("team-a", "direct-1");
    direct.spec.control_plane.endpoint.host = "10.20.0.11".into();
    clusters
        .create(&PostParams::default(), &direct)
        .await
        .expect("create with kube-rs");
    create_credentials(&kube, "team-a").await;

    let phases = recorder.await.expect("recorder");
    let want = [
        "Bootstrapping",
        "WaitingForControlPlane",
        "InstallingProviders",
        "InstallingAgent",
    ];
    let positions: Vec<Option<usize>> = want
        .iter()
        .map(|w| phases.iter().position(|p| p == w))
        .collect();
    assert!(
        positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1]),
        "phases seen {phases:?}"
    );
    // The stand-in agent never connects: the pipeline ends waiting for it, after the pivot.
    let done = wait_for_status(&clusters, "direct-1", "HandedOver", |s| {
        s.phase.as_deref() == Some("HandedOver") && s.step.as_deref() == Some("WaitingForAgent")
    })
    .await;
    assert_eq!(
        done.status.as_ref().and_then(|s| s.progress_percent),
        Some(95)
    );
    wait_for_status(&clusters, "single-node", "HandedOver", |s| {
        s.phase.as_deref() == Some("HandedOver")
    })
    .await;

    // After the pivot the management cluster keeps a copy of the workload kubeconfig.
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), "team-a");
    let kubeconfig = secrets
        .get("single-node-fledge-kubeconfig")
        .await
        .expect("kubeconfig Secret");
    let value = kubeconfig
        .data
        .as_ref()
        .and_then(|d| d.get("value"))
        .expect("value key");
    let workload = client_from_kubeconfig(&String::from_utf8_lossy(&value.0)).await;

    // The bootstrap objects, applied by fledge-manager, now live in the workload cluster
    // (created there by the mover).
    for (group, version, kind, name) in [
        ("cluster.x-k8s.io", "v1beta2", "Cluster", "single-node"),
        (
            "infrastructure.cluster.x-k8s.io",
            "v1beta2",
            "VSphereCluster",
            "single-node",
        ),
        (
            "controlplane.cluster.x-k8s.io",
            "v1beta2",
            "KubeadmControlPlane",
            "single-node-control-plane",
        ),
    ] {
        let obj = dynamic(&workload, "team-a", group, version, kind)
            .get(name)
            .await
            .unwrap_or_else(|err| panic!("{kind} {name}: {err}"));
        assert!(
            managed_by_fledge(&obj),
            "{kind} {name} is not managed by fledge-manager"
        );
        assert_eq!(
            obj.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("fledge.dev/cluster"))
                .map(String::as_str),
            Some("single-node")
        );
    }

    // The workload cluster has the providers and the agent.
    let crds: Api<CustomResourceDefinition> = Api::all(workload.clone());
    for crd in [
        "clusters.cluster.x-k8s.io",
        "kubeadmcontrolplanes.controlplane.cluster.x-k8s.io",
        "kubeadmconfigs.bootstrap.cluster.x-k8s.io",
        "vsphereclusters.infrastructure.cluster.x-k8s.io",
        "providers.clusterctl.cluster.x-k8s.io",
    ] {
        assert!(
            crds.get_opt(crd).await.expect("read CRD").is_some(),
            "CRD {crd} missing in the workload cluster"
        );
    }
    for (namespace, deployment) in [
        ("capi-system", "capi-controller-manager"),
        (
            "capi-kubeadm-bootstrap-system",
            "capi-kubeadm-bootstrap-controller-manager",
        ),
        (
            "capi-kubeadm-control-plane-system",
            "capi-kubeadm-control-plane-controller-manager",
        ),
        ("capv-system", "capv-controller-manager"),
        ("fledge-system", "fledge-agent"),
    ] {
        let api: Api<Deployment> = Api::namespaced(workload.clone(), namespace);
        assert!(
            api.get_opt(deployment)
                .await
                .expect("read Deployment")
                .is_some(),
            "Deployment {namespace}/{deployment} missing in the workload cluster"
        );
    }
    let inventory = dynamic(
        &workload,
        "capv-system",
        "clusterctl.cluster.x-k8s.io",
        "v1alpha3",
        "Provider",
    )
    .get("infrastructure-vsphere")
    .await
    .expect("inventory entry in the workload cluster");
    assert_eq!(inventory.data["version"], "v1.17.0");
    let agent_sa: Api<ServiceAccount> = Api::namespaced(workload.clone(), "fledge-system");
    assert!(
        agent_sa
            .get_opt("fledge-agent")
            .await
            .expect("read SA")
            .is_some()
    );
    let identity: Api<Secret> = Api::namespaced(workload.clone(), "fledge-system");
    let identity = identity
        .get("fledge-agent-identity")
        .await
        .expect("agent identity Secret");
    let data = identity.data.unwrap_or_default();
    for key in ["tls.crt", "tls.key", "ca.crt", "endpoint"] {
        assert!(
            data.get(key).is_some_and(|v| !v.0.is_empty()),
            "identity Secret lacks {key}"
        );
    }
    let cert = String::from_utf8_lossy(&data["tls.crt"].0).to_string();
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
}

/// Waits until the manager Lease's holder satisfies `cond`; returns the holder.
async fn wait_for_holder(leases: &Api<Lease>, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let condition = move |lease: Option<&Lease>| {
        lease
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.as_deref())
            .is_some_and(|h| !h.is_empty() && cond(h))
    };
    match tokio::time::timeout(
        DEADLINE,
        await_condition(leases.clone(), "fledge-manager", condition),
    )
    .await
    {
        Ok(Ok(Some(lease))) => lease
            .spec
            .and_then(|s| s.holder_identity)
            .unwrap_or_default(),
        other => panic!(
            "the Lease never got {what}: {other:?}; last seen {:?}",
            leases.get_opt("fledge-manager").await
        ),
    }
}

/// The manager (index into `hosts`) whose identity `holder` is.
fn holder_index(hosts: &[&str], holder: &str) -> usize {
    hosts
        .iter()
        .position(|h| holder.starts_with(&format!("{h}-")))
        .unwrap_or_else(|| panic!("holder {holder:?} is none of {hosts:?}"))
}

#[tokio::test]
async fn only_the_lease_holder_provisions_and_invalid_specs_get_nothing() {
    // No CAPI controllers: this test is about who writes, not about machines.
    let mut world = World::start(false).await;
    let hosts = ["manager-a", "manager-b", "manager-c"];
    for host in hosts {
        world.start_manager(host).await;
    }
    let kube = world.kube().await;
    ensure_namespace(&kube, "team-a").await;
    let clusters: Api<WorkloadCluster> = Api::namespaced(kube.clone(), "team-a");

    // An invalid spec written with kube-rs: Invalid, the field error in a condition, no
    // finalizer, nothing rendered.
    let mut invalid = single_node("team-a", "bad-1");
    invalid.spec.control_plane.replicas = 2;
    clusters
        .create(&PostParams::default(), &invalid)
        .await
        .expect("the CRD schema accepts it");
    let got = wait_for_status(&clusters, "bad-1", "Invalid", |s| {
        s.phase.as_deref() == Some("Invalid")
    })
    .await;
    let (status, message) = condition_message(&got, "SpecValid").expect("SpecValid condition");
    assert_eq!(status, "False");
    assert!(message.contains("spec.controlPlane.replicas"), "{message}");
    assert!(got.metadata.finalizers.unwrap_or_default().is_empty());
    let capi = dynamic(&kube, "team-a", "cluster.x-k8s.io", "v1beta2", "Cluster");
    assert!(
        !matches!(capi.get_opt("bad-1").await, Ok(Some(_))),
        "a CAPI Cluster was rendered for an invalid spec"
    );

    // Exactly one manager holds the Lease and runs the controller.
    let started = "Starting the provisioning controller";
    let leases: Api<Lease> = Api::namespaced(kube.clone(), "fledge-system");
    let first = holder_index(
        &hosts,
        &wait_for_holder(&leases, "a holder", |_| true).await,
    );
    for (i, host) in hosts.iter().enumerate() {
        assert_eq!(
            world.manager_log(i).contains(started),
            i == first,
            "{host}: {}",
            world.manager_log(i)
        );
    }

    // The leader stops with SIGTERM: it releases the Lease and another replica takes over.
    world.stop_manager(first).await;
    let second = holder_index(
        &hosts,
        &wait_for_holder(&leases, "a new holder", |h| {
            !h.starts_with(&format!("{}-", hosts[first]))
        })
        .await,
    );
    let valid = single_node("team-a", "after-failover");
    clusters
        .create(&PostParams::default(), &valid)
        .await
        .expect("create");
    wait_for_status(
        &clusters,
        "after-failover",
        "waiting for credentials",
        |s| {
            s.phase.as_deref() == Some("Bootstrapping")
                && s.step.as_deref() == Some("CredentialsSecretMissing")
        },
    )
    .await;
    assert!(
        world.manager_log(second).contains(started),
        "{}",
        world.manager_log(second)
    );

    // The new leader dies without releasing (SIGKILL): the last replica takes over once the
    // Lease expires, and provisions.
    world.kill_manager(second).await;
    let third = holder_index(
        &hosts,
        &wait_for_holder(&leases, "the last replica", |h| {
            !h.starts_with(&format!("{}-", hosts[first]))
                && !h.starts_with(&format!("{}-", hosts[second]))
        })
        .await,
    );
    assert!(third != first && third != second);
    let another = single_node("team-a", "after-crash");
    clusters
        .create(&PostParams::default(), &another)
        .await
        .expect("create");
    wait_for_status(&clusters, "after-crash", "waiting for credentials", |s| {
        s.step.as_deref() == Some("CredentialsSecretMissing")
    })
    .await;
    assert!(
        world.manager_log(third).contains(started),
        "{}",
        world.manager_log(third)
    );
}
