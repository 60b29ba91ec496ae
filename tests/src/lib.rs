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
    /// Its HOSTNAME, extra arguments and environment, for [`World::restart_manager`].
    pub started_as: (String, Vec<String>, Vec<(String, String)>),
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
        self.launch_manager(&bin("fledge-manager"), host, args, env)
            .await
    }

    /// Starts `binary` as a manager (see [`World::start_manager_with`]); returns its index.
    pub async fn launch_manager(
        &mut self,
        binary: &Path,
        host: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> usize {
        let log = self
            .dir
            .path()
            .join(format!("{host}-{}.log", self.managers.len()));
        let mut command = Command::new(binary);
        command.arg("serve");
        // Agents dial the address they were installed with, so a restarted manager may need
        // its old one (`--listen` in `args`).
        if !args.contains(&"--listen") {
            command.args(["--listen", "127.0.0.1:0"]);
        }
        command
            .arg("--kubeconfig")
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
        let started_as = (
            host.to_string(),
            args.iter().map(ToString::to_string).collect(),
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        self.managers.push(Manager {
            child,
            addr,
            log,
            started_as,
        });
        self.managers.len() - 1
    }

    /// Starts manager `manager` again (after it was stopped or killed) on the same address,
    /// with the same arguments and environment; returns the new index.
    pub async fn restart_manager(&mut self, manager: usize) -> usize {
        let addr = self.managers[manager].addr.clone();
        let (host, args, env) = self.managers[manager].started_as.clone();
        let mut args: Vec<String> = args;
        if let Some(i) = args.iter().position(|a| a == "--listen") {
            args.drain(i..(i + 2).min(args.len()));
        }
        args.push("--listen".into());
        args.push(addr);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        self.start_manager_with(&host, &args, &env).await
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
        for manager in &mut self.managers {
            let _ = manager.child.start_kill();
        }
        // SIGTERM first: the sim then stops the agent processes it runs, each in its own
        // process group, which a SIGKILL of the sim would leave running.
        if let Some(pid) = self.sim.id().and_then(|p| i32::try_from(p).ok())
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while matches!(self.sim.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.sim.start_kill();
        // Whatever still runs from this world's directory (an agent the sim could not stop).
        kill_processes_mentioning(self.dir.path());
        if std::env::var_os("FLEDGE_E2E_KEEP").is_some() {
            let kept = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            eprintln!("kept {}", kept.keep().display());
        }
    }
}

/// SIGKILLs every process whose command line mentions `dir`.
fn kill_processes_mentioning(dir: &Path) {
    let needle = dir.display().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for pid in entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
    {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&needle)
            && let Some(pid) = rustix::process::Pid::from_raw(pid)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
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

// === AgentService: a test-side fake agent (tests/tests/agent_service.rs) ===

/// A client certificate and key (PEM) for a fake agent.
#[derive(Clone)]
pub struct AgentCert {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PEM).
    pub key_pem: String,
}

/// Issues an agent certificate for `namespace/name/uid` (URI SAN
/// `fledge://cluster/<ns>/<name>/<uid>`, as the manager's `ca.rs` does) from the CA files
/// `ca.crt`/`ca.key` in `tls_dir`, valid from 5 minutes ago for `validity`.
pub fn issue_agent_cert(
    tls_dir: &Path,
    namespace: &str,
    name: &str,
    uid: &str,
    validity: Duration,
) -> AgentCert {
    let ca_cert = std::fs::read_to_string(tls_dir.join("ca.crt")).expect("ca.crt");
    let ca_key = std::fs::read_to_string(tls_dir.join("ca.key")).expect("ca.key");
    let ca_key = rcgen::KeyPair::from_pem(&ca_key).expect("CA key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca_cert, ca_key).expect("CA cert");
    sign_agent_cert(&issuer, namespace, name, uid, validity)
}

/// An agent certificate signed by `issuer` (any CA, e.g. a foreign one).
pub fn sign_agent_cert<S: rcgen::SigningKey>(
    issuer: &rcgen::Issuer<'_, S>,
    namespace: &str,
    name: &str,
    uid: &str,
    validity: Duration,
) -> AgentCert {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.subject_alt_names = vec![rcgen::SanType::URI(
        format!("fledge://cluster/{namespace}/{name}/{uid}")
            .try_into()
            .expect("URI"),
    )];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let now = std::time::SystemTime::now();
    params.not_before = (now - Duration::from_secs(300)).into();
    params.not_after = (now + validity).into();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let cert = params.signed_by(&key, issuer).expect("sign");
    AgentCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A self-signed CA that is not the manager's (for negative tests).
pub fn foreign_ca() -> rcgen::Issuer<'static, rcgen::KeyPair> {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    rcgen::Issuer::new(params, key)
}

/// A fake agent's open stream.
pub struct FakeAgent {
    /// Messages to the manager.
    pub tx: futures::channel::mpsc::UnboundedSender<fledge_core::proto::v1::AgentMessage>,
    /// Messages from the manager.
    pub rx: tonic::Streaming<fledge_core::proto::v1::ManagerMessage>,
}

/// An AgentService stream's first message.
pub fn hello(
    namespace: &str,
    name: &str,
    uid: &str,
    applied: i64,
) -> fledge_core::proto::v1::AgentMessage {
    use fledge_core::proto::v1::{AgentMessage, ClusterIdentity, Hello, agent_message::Message};
    AgentMessage {
        message: Some(Message::Hello(Hello {
            cluster: Some(ClusterIdentity {
                namespace: namespace.into(),
                name: name.into(),
                uid: uid.into(),
            }),
            agent_version: "fake-1".into(),
            applied_generation: applied,
            status_digest: String::new(),
        })),
    }
}

impl World {
    /// A TLS channel to manager `manager` presenting `cert` (or none); errors are returned, not
    /// panicked on, so tests can assert handshake failures.
    pub async fn agent_channel(
        &self,
        manager: usize,
        cert: Option<&AgentCert>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca_pem()))
            .domain_name("localhost");
        if let Some(cert) = cert {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                &cert.cert_pem,
                &cert.key_pem,
            ));
        }
        Endpoint::from_shared(format!("https://{}", self.managers[manager].addr))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(20))
            .connect()
            .await
    }

    /// Opens an AgentService stream on manager `manager` with `cert`, sending `first` at once.
    /// Returns the manager's status if it refuses the stream.
    pub async fn fake_agent(
        &self,
        manager: usize,
        cert: Option<&AgentCert>,
        first: fledge_core::proto::v1::AgentMessage,
    ) -> Result<FakeAgent, tonic::Status> {
        use fledge_core::proto::v1::agent_service_client::AgentServiceClient;
        let channel = self
            .agent_channel(manager, cert)
            .await
            .map_err(|err| tonic::Status::unavailable(format!("connect: {err:?}")))?;
        let (tx, outbound) = futures::channel::mpsc::unbounded();
        tx.unbounded_send(first).expect("queue the first message");
        let response =
            tokio::time::timeout(DEADLINE, AgentServiceClient::new(channel).session(outbound))
                .await
                .expect("the manager answers the stream")?;
        Ok(FakeAgent {
            tx,
            rx: response.into_inner(),
        })
    }
}

impl FakeAgent {
    /// Sends a message to the manager.
    pub fn send(&self, message: fledge_core::proto::v1::agent_message::Message) {
        self.tx
            .unbounded_send(fledge_core::proto::v1::AgentMessage {
                message: Some(message),
            })
            .expect("stream open");
    }

    /// The next message from the manager other than a heartbeat, within `deadline`;
    /// `Ok(None)` when the deadline passes, `Err` when the stream ends with an error.
    pub async fn next_within(
        &mut self,
        deadline: Duration,
    ) -> Result<Option<fledge_core::proto::v1::manager_message::Message>, tonic::Status> {
        use fledge_core::proto::v1::manager_message::Message;
        let wait = async {
            loop {
                match self.rx.message().await? {
                    Some(message) => match message.message {
                        Some(Message::Heartbeat(_)) | None => continue,
                        Some(other) => return Ok(Some(other)),
                    },
                    None => return Ok(None),
                }
            }
        };
        match tokio::time::timeout(deadline, wait).await {
            Ok(result) => result,
            Err(_) => Ok(None),
        }
    }

    /// The next message other than a heartbeat; fails after [`DEADLINE`].
    pub async fn next(&mut self) -> fledge_core::proto::v1::manager_message::Message {
        self.next_within(DEADLINE)
            .await
            .expect("the stream stays open")
            .expect("a message from the manager")
    }
}

/// What one `fledge-manager` client command did.
#[derive(Debug)]
pub struct CliRun {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// A `fledge-manager` command with a clean environment: no `FLEDGE_*` connection variables
/// from the caller, and `XDG_CONFIG_HOME` set to `config_home` so no user config leaks in.
pub fn cli_command(config_home: &Path) -> Command {
    let mut command = Command::new(bin("fledge-manager"));
    for var in [
        "FLEDGE_SERVER",
        "FLEDGE_CA_FILE",
        "FLEDGE_TOKEN",
        "KUBECONFIG",
    ] {
        command.env_remove(var);
    }
    command
        .env("XDG_CONFIG_HOME", config_home)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs a prepared client command to completion (within [`DEADLINE`]).
pub async fn cli_output(mut command: Command) -> CliRun {
    let output = tokio::time::timeout(DEADLINE, command.output())
        .await
        .expect("fledge-manager did not finish")
        .expect("run fledge-manager");
    CliRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl World {
    /// The connection flags of a client command to manager `manager` with `token`.
    pub fn cli_flags(&self, manager: usize, token: &str) -> Vec<String> {
        vec![
            "--server".into(),
            format!("https://{}", self.managers[manager].addr),
            "--ca-file".into(),
            self.tls_dir().join("ca.crt").display().to_string(),
            "--token".into(),
            token.into(),
        ]
    }

    /// Runs `fledge-manager <args> <connection flags>` against manager `manager` as `token`.
    pub async fn cli(&self, manager: usize, token: &str, args: &[&str]) -> CliRun {
        let mut command = cli_command(&self.dir.path().join("cli-config"));
        command.args(args).args(self.cli_flags(manager, token));
        cli_output(command).await
    }
}

/// Benchmark figures in the format `scripts/bench-report.py` renders.
pub mod report;

// ===== Pivot and deletion helpers (H1) =====

/// Creates the example `file`'s profiles and cluster (renamed `name`) over gRPC as tenant
/// `team-a` (token `token-a`), after creating the namespace and the vSphere credentials.
pub async fn create_example_over_grpc(world: &World, manager: usize, file: &str, name: &str) {
    use fledge_core::proto::v1;
    let kube = world.kube().await;
    create_credentials(&kube, "team-a").await;
    let mut grpc = world.grpc(manager).await;
    for profile in example_profiles(file, "team-a") {
        let request = v1::CreateProfileRequest {
            name: profile.metadata.name.clone().unwrap_or_default(),
            spec: Some((&profile.spec).into()),
        };
        match grpc.create_profile(authed(request, "token-a")).await {
            Ok(_) => {}
            Err(status) if status.code() == tonic::Code::AlreadyExists => {}
            Err(status) => panic!("creating the profile: {status}"),
        }
    }
    let cluster = example_cluster(file, "team-a", name);
    let request = v1::CreateClusterRequest {
        name: name.to_string(),
        spec: Some(v1::ClusterSpec::from(&cluster.spec)),
    };
    grpc.create_cluster(authed(request, "token-a"))
        .await
        .unwrap_or_else(|s| panic!("creating {name} over gRPC: {s}"));
}

/// The pivot journal (`fledge-pivot-<name>`) of a cluster: its JSON record, if any.
pub async fn pivot_journal(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Option<serde_json::Value> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), namespace);
    let cm = api
        .get_opt(&format!("fledge-pivot-{name}"))
        .await
        .expect("reading the journal")?;
    let text = cm.data?.get("journal.json")?.clone();
    Some(serde_json::from_str(&text).expect("journal parses"))
}

/// The kill points of `const <which>` in `crates/manager/src/pivot/kill.rs` (the one list).
pub fn kill_points(which: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo_root().join("crates/manager/src/pivot/kill.rs"))
        .expect("kill.rs");
    let start = text
        .find(&format!("pub const {which}: &[&str] = &["))
        .unwrap_or_else(|| panic!("no {which} in kill.rs"));
    let body = &text[start..];
    let body = &body[body.find("= &[").expect("list") + 4..body.find("];").expect("end")];
    body.split(',')
        .map(|s| s.trim().trim_matches('"').to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The kill points that fired in a manager's log (`KILL POINT <name> cluster=<cluster>`).
pub fn fired_kill_points(log: &str) -> Vec<(String, String)> {
    log.lines()
        .filter_map(|l| {
            let rest = &l[l.find("KILL POINT ")? + "KILL POINT ".len()..];
            let (point, rest) = rest.split_once(" cluster=")?;
            let cluster = rest.split(':').next()?;
            Some((point.to_string(), cluster.to_string()))
        })
        .collect()
}

/// Asserts the pivot's end state for `team-a/name`: the management cluster holds none of the
/// cluster's CAPI objects, the workload cluster holds every planned one (same names), the
/// Cluster is unpaused and keeps its status, no object carries the paused annotation, and the
/// Machines are the planned ones with their Nodes' providerIDs. Returns the journal.
pub async fn assert_pivoted(world: &World, name: &str) -> serde_json::Value {
    let kube = world.kube().await;
    let journal = pivot_journal(&kube, "team-a", name)
        .await
        .unwrap_or_else(|| panic!("{name}: no journal"));
    assert_eq!(journal["state"], "Done", "{name}: {journal:#}");
    assert_eq!(journal["direction"], "forward");
    let left = capi_objects(&kube, "team-a", name).await;
    assert!(
        left.is_empty(),
        "{name}: left in the management cluster: {left:?}"
    );
    let workload = world.workload_kube("team-a", name).await;
    let moved = capi_objects(&workload, "team-a", name).await;
    let mut planned: Vec<String> = journal["objects"]
        .as_array()
        .expect("objects")
        .iter()
        .filter(|e| e["apiVersion"].as_str().is_some_and(|v| v.contains('/')))
        .map(|e| {
            format!(
                "{}/{}",
                e["kind"].as_str().unwrap_or_default(),
                e["name"].as_str().unwrap_or_default()
            )
        })
        .collect();
    planned.sort();
    // Every planned object is there once; controllers may add none while unpaused here since
    // the spec did not change (a new Machine would be a recreated one).
    assert_eq!(
        moved, planned,
        "{name}: objects in the workload cluster vs the plan"
    );
    let cluster = dynamic(
        &workload,
        "team-a",
        "cluster.x-k8s.io",
        "v1beta2",
        "Cluster",
    )
    .get(name)
    .await
    .expect("the Cluster in the workload cluster");
    assert_ne!(
        cluster.data["spec"]["paused"], true,
        "{name}: Cluster still paused"
    );
    assert_eq!(
        cluster.data["status"]["initialization"]["controlPlaneInitialized"], true,
        "{name}: status lost"
    );
    for (group, version, kind) in CAPI_KINDS {
        let list = match dynamic(&workload, "team-a", group, version, kind)
            .list(&Default::default())
            .await
        {
            Ok(l) => l,
            Err(_) => continue,
        };
        for obj in list {
            let paused = obj
                .metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(fledge_core::names::PAUSED_ANNOTATION));
            assert!(
                !paused,
                "{name}: {kind} {:?} still paused",
                obj.metadata.name
            );
        }
    }
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(workload.clone());
    let provider_ids: Vec<String> = nodes
        .list(&Default::default())
        .await
        .expect("nodes")
        .items
        .into_iter()
        .filter_map(|n| n.spec.and_then(|s| s.provider_id))
        .collect();
    let machines = dynamic(
        &workload,
        "team-a",
        "cluster.x-k8s.io",
        "v1beta2",
        "Machine",
    )
    .list(&Default::default())
    .await
    .expect("machines");
    for m in machines.items.iter().filter(|m| {
        m.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(fledge_core::names::CLUSTER_NAME_LABEL))
            .is_some_and(|c| c == name)
    }) {
        let pid = m.data["spec"]["providerID"].as_str().unwrap_or_default();
        assert!(
            !pid.is_empty() && provider_ids.iter().any(|p| p == pid),
            "{name}: Machine {:?} providerID {pid:?} matches no Node ({provider_ids:?})",
            m.metadata.name
        );
    }
    let secrets: Api<Secret> = Api::namespaced(kube.clone(), "team-a");
    assert!(
        secrets
            .get_opt(&format!("{name}-kubeconfig"))
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        secrets
            .get_opt(&format!("{name}-fledge-kubeconfig"))
            .await
            .expect("get")
            .is_some()
    );
    journal
}

/// Appends one JSON line to `$FLEDGE_BENCH_OUT` (a file path) when the variable is set.
pub fn bench_line(value: &serde_json::Value) {
    let Some(path) = std::env::var_os("FLEDGE_BENCH_OUT") else {
        return;
    };
    use std::io::Write as _;
    let path = PathBuf::from(path);
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .expect("bench file");
    writeln!(file, "{value}").expect("write bench line");
}

/// Fails unless the manager binary was built with its kill points
/// (`--features fledge-manager/failpoints`, as `make build` does).
pub fn require_kill_points() {
    let binary = std::fs::read(bin("fledge-manager")).expect("read the manager binary");
    let marker = b"KILL POINT ";
    assert!(
        binary.windows(marker.len()).any(|w| w == marker),
        "target/debug/fledge-manager has no kill points: build it with \
         `cargo build --workspace --bins --features fledge-manager/failpoints` (make build does)"
    );
}

// === Agent (tests/tests/agent.rs) ===

/// The logs of the agent Pods of workload cluster `namespace/name` so far (all Pods).
pub fn agent_logs(world: &World, namespace: &str, name: &str) -> String {
    let dir = world
        .state_dir
        .join("clusters")
        .join(namespace)
        .join(name)
        .join("pods");
    let mut out = String::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let is_agent = path
                .file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.contains("fledge-agent"));
            if is_agent {
                out.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    out
}

/// A private copy of the manager binary with its kill points, so that a concurrent
/// `cargo build` without the feature cannot swap it out under a long test.
/// `$FLEDGE_E2E_FAILPOINTS_MANAGER` names another binary to copy (one built apart, when other
/// builds share the target directory).
pub fn kill_point_manager(world: &World) -> PathBuf {
    let source = match std::env::var_os("FLEDGE_E2E_FAILPOINTS_MANAGER") {
        Some(path) => PathBuf::from(path),
        None => {
            require_kill_points();
            bin("fledge-manager")
        }
    };
    let copy = world.dir.path().join("fledge-manager-failpoints");
    std::fs::copy(&source, &copy).expect("copy the manager binary");
    copy
}

/// [`World::start_manager_with`], running `binary` instead of the workspace's manager.
pub async fn start_manager_from(
    world: &mut World,
    binary: &Path,
    host: &str,
    env: &[(&str, &str)],
) -> usize {
    world.launch_manager(binary, host, &[], env).await
}

/// Deletes the manager's leader Lease, as if its SIGKILLed holder had let it expire: the next
/// manager leads at once instead of after the lease duration (tests of crashes, not of
/// leadership, use this to stay fast).
pub async fn release_dead_leader(world: &World) {
    let api: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(world.kube().await, fledge_core::names::FLEDGE_NAMESPACE);
    match api
        .delete(fledge_core::names::MANAGER_LEASE, &Default::default())
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(err) => panic!("deleting the leader Lease: {err}"),
    }
}

impl World {
    /// Starts a manager whose identity is `host`, with extra `args`, listening on `listen` (e.g. the address of a
    /// manager that was killed, so that agents, which know one endpoint, find it again, as
    /// they would through a Service); returns its index.
    pub async fn start_manager_at(&mut self, host: &str, listen: &str, args: &[&str]) -> usize {
        let mut all = vec!["--listen", listen];
        all.extend_from_slice(args);
        self.start_manager_with(host, &all, &[]).await
    }
}
