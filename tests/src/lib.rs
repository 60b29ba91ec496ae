//! The end-to-end harness: a simulated world (`fledge-sim serve`) and manager processes
//! (`fledge-manager serve`), started as real processes, plus the clients and waits the tests
//! in `tests/tests/` share.
//!
//! The binaries are the workspace's own, found next to the test executable's `deps/`
//! directory (`target/<profile>/`); `make test` builds them before running the tests.
//! Everything a test starts is killed when its [`World`] drops.

// This crate is test support: a failed expectation fails the calling test with a clear message.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fledge_core::proto::v1::cluster_service_client::ClusterServiceClient;
use fledge_core::spec::{ClusterProfile, WorkloadCluster, WorkloadClusterStatus};
use fledge_core::validate::{Document, load_and_validate};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Safety net for anything the world has to do; never a timing assertion. Generous because
/// tests share two cores with each other and with builds.
pub const DEADLINE: Duration = Duration::from_secs(180);

/// The tokens file every world writes: tenant `team-a` and tenant `team-b`.
pub const TOKENS: &str = "token-a team-a\ntoken-b team-b\n";

/// `target/<profile>/`, where cargo puts the workspace's binaries.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test>-<hash>
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .to_path_buf()
}

/// Path of a workspace binary; fails with the command to build it when missing.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` (make test does) first",
        path.display()
    );
    path
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Polls for a file; the sim announces readiness only by writing it.
pub async fn wait_for_file(path: &Path, child: &mut Child, what: &str) {
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

/// Which agent binary the world's node runtime starts.
#[derive(Debug, Clone, Default)]
pub enum AgentBin {
    /// The real `fledge-agent` of this workspace.
    #[default]
    Real,
    /// A stand-in shell script that exits at once (for tests of the manager alone).
    Fake,
}

/// How to start a world.
#[derive(Debug, Clone)]
pub struct WorldOptions {
    /// Run the sim's CAPI/vSphere controllers (false: a bare management API).
    pub controllers: bool,
    /// The sim's clock speed.
    pub speed: u32,
    /// The agent binary.
    pub agent: AgentBin,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            controllers: true,
            speed: 100,
            agent: AgentBin::Real,
        }
    }
}

/// One manager process.
pub struct Manager {
    /// The process.
    pub child: Child,
    /// `127.0.0.1:<port>` it listens on.
    pub addr: String,
    /// Its stderr (logs).
    pub log: PathBuf,
}

/// A simulated world plus managers, killed on drop.
pub struct World {
    /// Temporary directory of everything (sim state, TLS, tokens, logs).
    pub dir: tempfile::TempDir,
    /// The `fledge-sim` process.
    pub sim: Child,
    /// Managers started so far (index = the value `start_manager` returned).
    pub managers: Vec<Manager>,
    /// Kubeconfig of the management cluster.
    pub kubeconfig: PathBuf,
    /// The sim's state directory.
    pub state_dir: PathBuf,
}

impl World {
    /// Starts `fledge-sim serve` and waits for its kubeconfig.
    pub async fn start(options: WorldOptions) -> World {
        let sim_bin = bin("fledge-sim");
        let dir = tempfile::tempdir().expect("tempdir");
        let agent = match options.agent {
            AgentBin::Real => bin("fledge-agent"),
            AgentBin::Fake => {
                let agent = dir.path().join("fake-agent");
                std::fs::write(&agent, "#!/bin/sh\nexit 0\n").expect("write fake agent");
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755))
                    .expect("chmod fake agent");
                agent
            }
        };
        let state_dir = dir.path().join("sim");
        let mut command = Command::new(&sim_bin);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--speed"])
            .arg(options.speed.to_string())
            .arg("--state-dir")
            .arg(&state_dir)
            .arg("--agent-bin")
            .arg(&agent);
        if !options.controllers {
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
        let kubeconfig = state_dir.join("kubeconfig");
        wait_for_file(&kubeconfig, &mut sim, "fledge-sim").await;
        wait_for_file(&state_dir.join("admin-addr"), &mut sim, "fledge-sim").await;
        std::fs::write(dir.path().join("tokens"), TOKENS).expect("write tokens");
        World {
            dir,
            sim,
            managers: Vec::new(),
            kubeconfig,
            state_dir,
        }
    }

    /// The manager's `--tls-dir` (shared by every manager of this world: one CA).
    pub fn tls_dir(&self) -> PathBuf {
        self.dir.path().join("tls")
    }

    /// Starts a manager whose identity (HOSTNAME) is `host`; returns its index.
    pub async fn start_manager(&mut self, host: &str) -> usize {
        self.start_manager_with(host, &[], &[]).await
    }

    /// Starts a manager with extra arguments and environment; returns its index.
    pub async fn start_manager_with(
        &mut self,
        host: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> usize {
        let log = self
            .dir
            .path()
            .join(format!("{host}-{}.log", self.managers.len()));
        let mut command = Command::new(bin("fledge-manager"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--kubeconfig"])
            .arg(&self.kubeconfig)
            .arg("--tls-dir")
            .arg(self.tls_dir())
            .arg("--tokens")
            .arg(self.dir.path().join("tokens"))
            .args(args)
            .env("FLEDGE_LOG", "info")
            .env("HOSTNAME", host)
            .env("NO_COLOR", "1");
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
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
        // Keep draining stdout so the manager never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.managers.push(Manager { child, addr, log });
        self.managers.len() - 1
    }

    /// Client of the management cluster.
    pub async fn kube(&self) -> Client {
        client_from_file(&self.kubeconfig).await
    }

    /// Admin kubeconfig of a workload cluster (written by the sim when the cluster's API exists).
    pub fn workload_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        self.state_dir
            .join("clusters")
            .join(namespace)
            .join(name)
            .join("kubeconfig")
    }

    /// Client of a workload cluster (admin).
    pub async fn workload_kube(&self, namespace: &str, name: &str) -> Client {
        client_from_file(&self.workload_kubeconfig(namespace, name)).await
    }

    /// The manager CA's certificate (PEM).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.tls_dir().join("ca.crt")).expect("ca.crt")
    }

    /// A TLS channel to manager `manager` (no client certificate).
    pub async fn channel(&self, manager: usize) -> Channel {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca_pem()))
            .domain_name("localhost");
        Endpoint::from_shared(format!("https://{}", self.managers[manager].addr))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls config")
            .timeout(Duration::from_secs(20))
            .connect()
            .await
            .expect("connect to the manager")
    }

    /// A `ClusterService` client of manager `manager`; add a token with [`authed`].
    pub async fn grpc(&self, manager: usize) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.channel(manager).await)
    }

    /// The logs of manager `manager` so far.
    pub fn manager_log(&self, manager: usize) -> String {
        std::fs::read_to_string(&self.managers[manager].log).unwrap_or_default()
    }

    /// The sim's logs so far.
    pub fn sim_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sim.log")).unwrap_or_default()
    }

    /// Stops a manager with SIGTERM (it releases the Lease) and waits for it to exit.
    pub async fn stop_manager(&mut self, manager: usize) {
        let child = &mut self.managers[manager].child;
        if let Some(pid) = child.id() {
            let pid =
                rustix::process::Pid::from_raw(i32::try_from(pid).expect("pid")).expect("pid");
            rustix::process::kill_process(pid, rustix::process::Signal::TERM).expect("SIGTERM");
        }
        tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("manager did not stop after SIGTERM")
            .expect("wait");
    }

    /// Kills a manager with SIGKILL (it cannot release the Lease) and reaps it.
    pub async fn kill_manager(&mut self, manager: usize) {
        let child = &mut self.managers[manager].child;
        child.kill().await.expect("SIGKILL the manager");
    }

    /// Waits until manager `manager` exits on its own (e.g. at a kill-point failpoint).
    pub async fn wait_manager_exit(&mut self, manager: usize) -> std::process::ExitStatus {
        let child = &mut self.managers[manager].child;
        tokio::time::timeout(DEADLINE, child.wait())
            .await
            .expect("manager did not exit")
            .expect("wait")
    }

    /// The sim's admin endpoint address (`127.0.0.1:<port>`).
    pub fn admin_addr(&self) -> String {
        std::fs::read_to_string(self.state_dir.join("admin-addr"))
            .expect("admin-addr")
            .trim()
            .to_string()
    }

    /// Calls the sim's admin endpoint (see `crates/sim/src/faults.rs`); returns status and body.
    pub async fn admin(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.admin_addr();
        let mut stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect to the sim's admin endpoint");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("write request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("read response");
        let (head, body) = response.split_once("\r\n\r\n").expect("http response");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status code");
        (status, serde_json::from_str(body).unwrap_or_default())
    }

    /// Admin call that must succeed.
    pub async fn admin_ok(&self, method: &str, path: &str, body: &str) -> serde_json::Value {
        let (status, value) = self.admin(method, path, body).await;
        assert_eq!(status, 200, "{method} {path}: {value}");
        value
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = self.sim.start_kill();
        for manager in &mut self.managers {
            let _ = manager.child.start_kill();
        }
        if std::env::var_os("FLEDGE_E2E_KEEP").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            eprintln!("kept {}", kept.keep().display());
        }
    }
}

/// A kube client from a kubeconfig file.
pub async fn client_from_file(path: &Path) -> Client {
    let yaml =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    client_from_kubeconfig(&yaml).await
}

/// A kube client from kubeconfig YAML.
pub async fn client_from_kubeconfig(yaml: &str) -> Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("kube config");
    Client::try_from(config).expect("kube client")
}

/// A gRPC request with a bearer token.
pub fn authed<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii"),
    );
    request
}

/// The documents of an example file (`examples/<file>`), validated.
pub fn example(file: &str) -> Vec<Document> {
    let yaml = std::fs::read_to_string(repo_root().join("examples").join(file)).expect("example");
    load_and_validate(&yaml).expect("example is valid")
}

/// The WorkloadCluster of an example, moved to `namespace` and renamed `name`.
pub fn example_cluster(file: &str, namespace: &str, name: &str) -> WorkloadCluster {
    let mut cluster = example(file)
        .into_iter()
        .find_map(|d| match d {
            Document::WorkloadCluster(c) => Some(c),
            _ => None,
        })
        .expect("the example holds a WorkloadCluster");
    cluster.metadata.namespace = Some(namespace.into());
    cluster.metadata.name = Some(name.into());
    cluster
}

/// The ClusterProfiles of an example, moved to `namespace`.
pub fn example_profiles(file: &str, namespace: &str) -> Vec<ClusterProfile> {
    example(file)
        .into_iter()
        .filter_map(|d| match d {
            Document::ClusterProfile(mut p) => {
                p.metadata.namespace = Some(namespace.into());
                Some(p)
            }
            _ => None,
        })
        .collect()
}

/// Creates a namespace unless it exists.
pub async fn ensure_namespace(client: &Client, name: &str) {
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

/// Creates the vSphere credentials Secret the examples name (`vsphere-credentials`).
pub async fn create_credentials(client: &Client, namespace: &str) {
    ensure_namespace(client, namespace).await;
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "vsphere-credentials", "namespace": namespace},
        "stringData": {"username": "administrator@vsphere.local", "password": "secret"},
    }))
    .expect("secret");
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(err) => panic!("creating the credentials Secret: {err}"),
    }
}

/// Waits until the cluster's status satisfies `cond`; on timeout, fails with the last state.
pub async fn wait_for_status(
    api: &Api<WorkloadCluster>,
    name: &str,
    what: &str,
    cond: impl Fn(&WorkloadClusterStatus) -> bool,
) -> WorkloadCluster {
    wait_for_status_within(api, name, what, DEADLINE, cond).await
}

/// [`wait_for_status`] with another deadline.
pub async fn wait_for_status_within(
    api: &Api<WorkloadCluster>,
    name: &str,
    what: &str,
    deadline: Duration,
    cond: impl Fn(&WorkloadClusterStatus) -> bool,
) -> WorkloadCluster {
    let condition =
        move |obj: Option<&WorkloadCluster>| obj.and_then(|o| o.status.as_ref()).is_some_and(&cond);
    match tokio::time::timeout(deadline, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(Some(obj))) => obj,
        Ok(other) => panic!("waiting for {name} to be {what}: watch ended with {other:?}"),
        Err(_) => panic!(
            "{name} never became {what}; last seen: {:#?}",
            api.get_opt(name).await.map(|o| o.and_then(|o| o.status))
        ),
    }
}

/// Polls `check` every 100 ms until it returns `Some`; fails with `what` after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let poll = async {
        loop {
            if let Some(value) = check().await {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(DEADLINE, poll)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Records every distinct `status.phase` of `name` until `last` is seen.
/// Every phase seen so far is also published on `seen`, so the test can wait for one.
pub async fn record_phases(
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

/// A namespaced API of an untyped kind.
pub fn dynamic(
    client: &Client,
    namespace: &str,
    group: &str,
    version: &str,
    kind: &str,
) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// The CAPI/CAPV kinds a cluster's move concerns, as (group, version, kind).
pub const CAPI_KINDS: &[(&str, &str, &str)] = &[
    ("cluster.x-k8s.io", "v1beta2", "Cluster"),
    ("cluster.x-k8s.io", "v1beta2", "Machine"),
    ("cluster.x-k8s.io", "v1beta2", "MachineSet"),
    ("cluster.x-k8s.io", "v1beta2", "MachineDeployment"),
    ("cluster.x-k8s.io", "v1beta2", "MachineHealthCheck"),
    (
        "controlplane.cluster.x-k8s.io",
        "v1beta2",
        "KubeadmControlPlane",
    ),
    ("bootstrap.cluster.x-k8s.io", "v1beta2", "KubeadmConfig"),
    (
        "bootstrap.cluster.x-k8s.io",
        "v1beta2",
        "KubeadmConfigTemplate",
    ),
    (
        "infrastructure.cluster.x-k8s.io",
        "v1beta2",
        "VSphereCluster",
    ),
    (
        "infrastructure.cluster.x-k8s.io",
        "v1beta2",
        "VSphereMachine",
    ),
    (
        "infrastructure.cluster.x-k8s.io",
        "v1beta2",
        "VSphereMachineTemplate",
    ),
    ("infrastructure.cluster.x-k8s.io", "v1beta2", "VSphereVM"),
];

/// Names (`Kind/name`) of every CAPI object of cluster `cluster` in `namespace` of `client`,
/// found by the `cluster.x-k8s.io/cluster-name` label or, for the Cluster, by name.
pub async fn capi_objects(client: &Client, namespace: &str, cluster: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (group, version, kind) in CAPI_KINDS {
        let api = dynamic(client, namespace, group, version, kind);
        let list = match api.list(&Default::default()).await {
            Ok(list) => list,
            // The kind may not be installed in that cluster (yet).
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(err) => panic!("listing {kind}: {err}"),
        };
        for obj in list {
            let name = obj.metadata.name.clone().unwrap_or_default();
            let owned = obj
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(fledge_core::names::CLUSTER_NAME_LABEL))
                .is_some_and(|c| c == cluster);
            if owned || (*kind == "Cluster" && name == cluster) {
                out.push(format!("{kind}/{name}"));
            }
        }
    }
    out.sort();
    out
}
