//! Real processes for `fledge-agent` containers: preparing a container's arguments, environment
//! and volumes from the Pod, supervising the process with CrashLoopBackOff-style restarts, and
//! stopping it (SIGTERM, then SIGKILL after the grace period) with its whole process group.
//!
//! # How paths are mapped
//! The process cannot see the Pod's mount paths, so each Pod gets a directory
//! `<work_dir>/pods/<namespace>/<pod>/` holding:
//! - `volumes/<volume>/`: the files of its Secret, ConfigMap and projected volumes (emptyDirs
//!   are empty directories);
//! - `rootfs/`: the container's view of the mounted paths: `rootfs/<mountPath>` is a symlink to
//!   the volume (or its `subPath`); the process gets `FLEDGE_SIM_ROOT=<pod dir>/rootfs`, so any
//!   path `P` the container would see is at `$FLEDGE_SIM_ROOT/P`;
//! - `kubeconfig`: authenticates as the Pod's ServiceAccount; `KUBECONFIG` points to it, so
//!   `kube::Config::infer()` (and kubectl) work unchanged.
//!
//! Arguments and env values that are, or start with, a mount path (also after the `=` of a
//! `--flag=value` argument) are rewritten to the volume directory, so `--config /etc/agent/c.yaml`
//! with a volume mounted at `/etc/agent` reads the file the Pod would read. `$(VAR)` references
//! in arguments and env values are expanded as the kubelet does.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_sim::ApiServer;
use kube_sim::api_server::now_rfc3339;
use kube_sim::sim::ClusterHandle;
use rustix::process::{Pid, Signal, kill_process_group};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, watch};
use tracing::{debug, info, warn};

use super::objects::{name, namespace, uid};

/// Whether an image runs the real agent: its repository (without registry, tag or digest) ends
/// with `fledge-agent`.
pub fn is_agent_image(image: &str) -> bool {
    let without_digest = image.split('@').next().unwrap_or_default();
    let last = without_digest.rsplit('/').next().unwrap_or_default();
    let repo = last.split(':').next().unwrap_or_default();
    repo.ends_with("fledge-agent")
}

/// One running (or restarting) agent container, as listed by [`AgentProcesses::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentProcess {
    /// The (kube-sim) name of the cluster the Pod runs in.
    pub cluster: String,
    /// The Pod's namespace.
    pub namespace: String,
    /// The Pod's name.
    pub pod: String,
    /// The container's name.
    pub container: String,
    /// The process id while the process runs (it leads its own process group).
    pub pid: Option<u32>,
    /// How many times the container has been restarted.
    pub restart_count: u32,
}

/// Cluster, namespace, Pod, container.
type ProcessKey = (String, String, String, String);

/// The agent processes of node runtimes (one registry may serve many clusters): listing them and
/// the fault knob "kill an agent process". Cheap to clone; clones share the registry.
#[derive(Debug, Clone, Default)]
pub struct AgentProcesses {
    inner: Arc<Mutex<BTreeMap<ProcessKey, AgentProcess>>>,
}

impl AgentProcesses {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<ProcessKey, AgentProcess>> {
        // Every update is a single insert/remove/field write: the map stays consistent.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every agent container known to the runtime.
    pub fn list(&self) -> Vec<AgentProcess> {
        self.lock().values().cloned().collect()
    }

    /// The process ids of the Pod's running agent containers (in any cluster of the registry).
    pub fn pids(&self, namespace: &str, pod: &str) -> Vec<u32> {
        self.pids_matching(None, namespace, pod)
    }

    /// The process ids of the Pod's running agent containers in the cluster named `cluster`.
    pub fn pids_in(&self, cluster: &str, namespace: &str, pod: &str) -> Vec<u32> {
        self.pids_matching(Some(cluster), namespace, pod)
    }

    fn pids_matching(&self, cluster: Option<&str>, namespace: &str, pod: &str) -> Vec<u32> {
        self.lock()
            .values()
            .filter(|p| cluster.is_none_or(|c| c == p.cluster))
            .filter(|p| p.namespace == namespace && p.pod == pod)
            .filter_map(|p| p.pid)
            .collect()
    }

    /// Kills (SIGKILL, whole process group) the running agent processes of the Pod (in any
    /// cluster of the registry), as a crash would: the runtime restarts them with back-off.
    /// Returns how many were killed.
    pub fn kill_agent(&self, namespace: &str, pod: &str) -> usize {
        Self::kill(&self.pids(namespace, pod), namespace, pod)
    }

    /// [`AgentProcesses::kill_agent`] limited to the cluster named `cluster`.
    pub fn kill_agent_in(&self, cluster: &str, namespace: &str, pod: &str) -> usize {
        Self::kill(&self.pids_in(cluster, namespace, pod), namespace, pod)
    }

    fn kill(pids: &[u32], namespace: &str, pod: &str) -> usize {
        let killed = pids
            .iter()
            .filter(|pid| signal_group(**pid, Signal::KILL))
            .count();
        info!(namespace, pod, killed, "fault: killed agent process");
        killed
    }

    fn set(&self, key: &ProcessKey, pid: Option<u32>, restart_count: u32) {
        self.lock().insert(
            key.clone(),
            AgentProcess {
                cluster: key.0.clone(),
                namespace: key.1.clone(),
                pod: key.2.clone(),
                container: key.3.clone(),
                pid,
                restart_count,
            },
        );
    }

    fn remove(&self, key: &ProcessKey) {
        self.lock().remove(key);
    }
}

/// Sends `signal` to the process group led by `pid`; whether it was delivered.
fn signal_group(pid: u32, signal: Signal) -> bool {
    let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return false;
    };
    kill_process_group(pid, signal).is_ok()
}

/// Kills the process group when dropped, so that no process outlives its supervisor, even when
/// the supervising task is aborted or the runtime shuts down.
struct GroupGuard(u32);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        signal_group(self.0, Signal::KILL);
    }
}

/// The container state the Pod status shows.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Phase {
    /// Not running: `ContainerCreating`, `CreateContainerConfigError`, `CrashLoopBackOff`…
    Waiting { reason: String, message: String },
    /// Running since `started_at`.
    Running { started_at: String },
    /// Exited for good (restart policy `Never`/`OnFailure`, or stopped).
    Terminated {
        exit_code: i32,
        reason: String,
        started_at: String,
        finished_at: String,
    },
}

/// What the supervisor reports to the status writer.
#[derive(Debug, Clone)]
pub(crate) struct ContainerState {
    pub phase: Phase,
    pub last_terminated: Option<Value>,
    pub restart_count: u32,
    /// The supervisor has ended (the process is gone for good).
    pub done: bool,
}

/// How the supervisor should stop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Stop {
    /// Keep running.
    Run,
    /// SIGTERM, then SIGKILL after the grace period.
    Graceful(Duration),
    /// SIGKILL now (the node died).
    Kill,
}

/// Delays of the supervisor, already divided by the speed factor.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    pub config_retry: Duration,
}

/// Everything needed to (re)start one agent container.
pub(crate) struct LaunchContext {
    pub cluster: ClusterHandle,
    pub api: Arc<ApiServer>,
    pub pod: Value,
    pub container: Value,
    pub pod_ip: String,
    pub host_ip: String,
    pub agent_bin: PathBuf,
    pub pod_dir: PathBuf,
    pub log_path: PathBuf,
    /// The cluster's network file (`FLEDGE_SIM_NETWORK_FILE`, see [`crate::faults`]).
    pub network_file: Option<PathBuf>,
}

/// The handle on one supervised agent container.
pub(crate) struct Supervisor {
    pub state: Arc<Mutex<ContainerState>>,
    stop: watch::Sender<Stop>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Supervisor {
    /// Starts supervising the container described by `ctx`.
    pub fn start(
        ctx: LaunchContext,
        processes: AgentProcesses,
        notify: Arc<Notify>,
        backoff: Backoff,
    ) -> Supervisor {
        let state = Arc::new(Mutex::new(ContainerState {
            phase: Phase::Waiting {
                reason: "ContainerCreating".into(),
                message: String::new(),
            },
            last_terminated: None,
            restart_count: 0,
            done: false,
        }));
        let (stop, stop_rx) = watch::channel(Stop::Run);
        let task = tokio::spawn(supervise(
            ctx,
            state.clone(),
            stop_rx,
            processes,
            notify,
            backoff,
        ));
        Supervisor {
            state,
            stop,
            task: Some(task),
        }
    }

    /// Asks the supervisor to stop its process (idempotent; a `Kill` overrides a graceful stop).
    pub fn stop(&self, how: Stop) {
        self.stop.send_if_modified(|current| {
            let change = match (*current, how) {
                (Stop::Run, Stop::Run) => false,
                (Stop::Run, _) | (Stop::Graceful(_), Stop::Kill) => true,
                _ => false,
            };
            if change {
                *current = how;
            }
            change
        });
    }

    /// A snapshot of the container state.
    pub fn snapshot(&self) -> ContainerState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for the supervisor to end (after [`Supervisor::stop`]).
    pub async fn join(mut self) {
        self.stop(Stop::Kill);
        if let Some(task) = self.task.take()
            && let Err(err) = task.await
        {
            warn!(%err, "agent supervisor ended abnormally");
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // A dropped supervisor must not leave a process behind: ask it to kill, the task's own
        // guard kills the process group even if the task is aborted.
        self.stop.send_replace(Stop::Kill);
    }
}

fn update(state: &Mutex<ContainerState>, f: impl FnOnce(&mut ContainerState)) {
    f(&mut state.lock().unwrap_or_else(|p| p.into_inner()));
}

/// Waits until a stop is requested (or the handle is gone); returns how to stop.
async fn stopped(rx: &mut watch::Receiver<Stop>) -> Stop {
    loop {
        let current = *rx.borrow_and_update();
        if current != Stop::Run {
            return current;
        }
        if rx.changed().await.is_err() {
            return Stop::Kill;
        }
    }
}

async fn supervise(
    ctx: LaunchContext,
    state: Arc<Mutex<ContainerState>>,
    mut stop_rx: watch::Receiver<Stop>,
    processes: AgentProcesses,
    notify: Arc<Notify>,
    backoff: Backoff,
) {
    let key: ProcessKey = (
        ctx.cluster.name().to_owned(),
        namespace(&ctx.pod).to_owned(),
        name(&ctx.pod).to_owned(),
        ctx.container["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let restart_policy = ctx.pod["spec"]["restartPolicy"]
        .as_str()
        .unwrap_or("Always")
        .to_owned();
    let mut failures: u32 = 0;
    let mut restart_count: u32 = 0;
    processes.set(&key, None, 0);
    loop {
        if *stop_rx.borrow() != Stop::Run {
            break;
        }
        let spawned = prepare(&ctx).and_then(|launch| spawn(&launch).map(|c| (c, launch)));
        let (mut child, pid) = match spawned {
            Ok((child, _)) => match child.id() {
                Some(pid) => (child, pid),
                None => continue,
            },
            Err(LaunchError { reason, message }) => {
                debug!(pod = %key.2, container = %key.3, %reason, %message, "agent container cannot start");
                update(&state, |s| {
                    s.phase = Phase::Waiting { reason, message };
                });
                notify.notify_one();
                tokio::select! {
                    () = tokio::time::sleep(backoff.config_retry) => continue,
                    _ = stopped(&mut stop_rx) => break,
                }
            }
        };
        let guard = GroupGuard(pid);
        let started_at = now_rfc3339();
        let started = Instant::now();
        info!(pod = %key.2, container = %key.3, pid, "agent process started");
        processes.set(&key, Some(pid), restart_count);
        update(&state, |s| {
            s.phase = Phase::Running {
                started_at: started_at.clone(),
            }
        });
        notify.notify_one();
        let outcome = tokio::select! {
            status = child.wait() => Ok(status),
            how = stopped(&mut stop_rx) => Err(how),
        };
        let status = match outcome {
            Ok(status) => status,
            Err(how) => {
                let status = terminate(&mut child, pid, how).await;
                drop(guard);
                let (exit_code, _) = exit_code(status.as_ref().ok());
                info!(pod = %key.2, container = %key.3, pid, exit_code, "agent process stopped");
                update(&state, |s| {
                    s.phase = Phase::Terminated {
                        exit_code,
                        reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
                        started_at: started_at.clone(),
                        finished_at: now_rfc3339(),
                    };
                });
                break;
            }
        };
        // The container is one unit: whatever the main process left behind goes with it.
        drop(guard);
        let (exit_code, reason) = exit_code(status.as_ref().ok());
        let finished_at = now_rfc3339();
        warn!(pod = %key.2, container = %key.3, pid, exit_code, "agent process exited");
        let restart = match restart_policy.as_str() {
            "Never" => false,
            "OnFailure" => exit_code != 0,
            _ => true,
        };
        if !restart {
            update(&state, |s| {
                s.phase = Phase::Terminated {
                    exit_code,
                    reason: reason.into(),
                    started_at: started_at.clone(),
                    finished_at: finished_at.clone(),
                };
            });
            break;
        }
        // Like the kubelet: the back-off resets once a container ran long enough.
        if started.elapsed() > backoff.cap * 2 {
            failures = 0;
        }
        let delay = backoff
            .base
            .saturating_mul(1u32 << failures.min(16))
            .min(backoff.cap);
        failures = failures.saturating_add(1);
        restart_count = restart_count.saturating_add(1);
        processes.set(&key, None, restart_count);
        update(&state, |s| {
            s.restart_count = restart_count;
            s.last_terminated = Some(json!({"terminated": {
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": started_at,
                "finishedAt": finished_at,
                "containerID": format!("sim://{pid}"),
            }}));
            s.phase = Phase::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: format!(
                    "back-off {:?} restarting failed container={} pod={}_{}({})",
                    delay,
                    key.3,
                    key.2,
                    key.1,
                    uid(&ctx.pod)
                ),
            };
        });
        notify.notify_one();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stopped(&mut stop_rx) => break,
        }
    }
    processes.remove(&key);
    update(&state, |s| s.done = true);
    notify.notify_one();
}

/// The container exit code (`128 + signal` for a signal, like a container runtime) and reason.
fn exit_code(status: Option<&std::process::ExitStatus>) -> (i32, &'static str) {
    use std::os::unix::process::ExitStatusExt as _;
    let code = match status {
        Some(s) => s
            .code()
            .or_else(|| s.signal().map(|n| 128 + n))
            .unwrap_or(255),
        None => 255,
    };
    (code, if code == 0 { "Completed" } else { "Error" })
}

/// Stops the process group: SIGTERM and a grace period, then SIGKILL.
async fn terminate(
    child: &mut Child,
    pid: u32,
    how: Stop,
) -> std::io::Result<std::process::ExitStatus> {
    if let Stop::Graceful(grace) = how {
        signal_group(pid, Signal::TERM);
        if let Ok(status) = tokio::time::timeout(grace, child.wait()).await {
            signal_group(pid, Signal::KILL);
            return status;
        }
    }
    signal_group(pid, Signal::KILL);
    child.wait().await
}

/// Why a container could not start: the waiting reason and message the Pod status shows.
#[derive(Debug)]
struct LaunchError {
    reason: String,
    message: String,
}

fn config_error(message: impl Into<String>) -> LaunchError {
    LaunchError {
        reason: "CreateContainerConfigError".into(),
        message: message.into(),
    }
}

fn io_error(what: &str, path: &Path, err: &std::io::Error) -> LaunchError {
    LaunchError {
        reason: "RunContainerError".into(),
        message: format!("{what} {}: {err}", path.display()),
    }
}

/// A prepared process launch.
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    log_path: PathBuf,
}

fn spawn(launch: &Launch) -> Result<Child, LaunchError> {
    if let Some(dir) = launch.log_path.parent() {
        fs::create_dir_all(dir).map_err(|e| io_error("creating", dir, &e))?;
    }
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&launch.log_path)
        .map_err(|e| io_error("opening", &launch.log_path, &e))?;
    let log2 = log
        .try_clone()
        .map_err(|e| io_error("opening", &launch.log_path, &e))?;
    Command::new(&launch.program)
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // Its own process group, so that stopping the container stops everything it started.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| LaunchError {
            reason: "RunContainerError".into(),
            message: format!(
                "failed to start container process {}: {err}",
                launch.program.display()
            ),
        })
}

/// Reads `key` of a Secret (decoded) or ConfigMap.
fn source_data(
    api: &ApiServer,
    kind: &str,
    ns: &str,
    obj_name: &str,
) -> Option<BTreeMap<String, Vec<u8>>> {
    let obj = api.get_object("v1", kind, Some(ns), obj_name).ok()?;
    let mut out = BTreeMap::new();
    let decode = |v: &Value| v.as_str().and_then(|s| STANDARD.decode(s).ok());
    if kind == "Secret" {
        for (k, v) in obj["data"].as_object().into_iter().flatten() {
            if let Some(bytes) = decode(v) {
                out.insert(k.clone(), bytes);
            }
        }
        for (k, v) in obj["stringData"].as_object().into_iter().flatten() {
            if let Some(s) = v.as_str() {
                out.insert(k.clone(), s.as_bytes().to_vec());
            }
        }
    } else {
        for (k, v) in obj["data"].as_object().into_iter().flatten() {
            if let Some(s) = v.as_str() {
                out.insert(k.clone(), s.as_bytes().to_vec());
            }
        }
        for (k, v) in obj["binaryData"].as_object().into_iter().flatten() {
            if let Some(bytes) = decode(v) {
                out.insert(k.clone(), bytes);
            }
        }
    }
    Some(out)
}

/// Expands `$(VAR)` with the variables defined so far; `$$(VAR)` escapes. Unknown references
/// stay as written, like the kubelet.
fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix("$(") {
            out.push_str("$(");
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
        {
            let var = &inner[..end];
            match vars.get(var) {
                Some(v) => out.push_str(v),
                None => {
                    out.push_str("$(");
                    out.push_str(var);
                    out.push(')');
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Rewrites a value that is (or starts with) a mount path onto the volume directory; also the
/// value part of `--flag=value`.
fn rewrite_paths(s: &str, mounts: &[(String, PathBuf)]) -> String {
    let rewrite = |v: &str| -> Option<String> {
        mounts.iter().find_map(|(mount, dir)| {
            let m = mount.trim_end_matches('/');
            if v == m {
                Some(dir.display().to_string())
            } else {
                v.strip_prefix(m)
                    .filter(|r| r.starts_with('/'))
                    .map(|r| format!("{}{r}", dir.display()))
            }
        })
    };
    if let Some(r) = rewrite(s) {
        return r;
    }
    if let Some((flag, value)) = s.split_once('=')
        && let Some(r) = rewrite(value)
    {
        return format!("{flag}={r}");
    }
    s.to_owned()
}

/// Writes `files` into `dir` (replacing what was there), honouring `items` (key → path).
fn write_volume(
    dir: &Path,
    files: &BTreeMap<String, Vec<u8>>,
    items: &Value,
) -> Result<(), LaunchError> {
    let mut wanted: Vec<(PathBuf, &Vec<u8>)> = Vec::new();
    match items.as_array() {
        Some(items) if !items.is_empty() => {
            for item in items {
                let key = item["key"].as_str().unwrap_or_default();
                let path = item["path"].as_str().unwrap_or(key);
                match files.get(key) {
                    Some(data) => wanted.push((dir.join(path), data)),
                    None => {
                        return Err(config_error(format!(
                            "configmap/secret key {key} not found"
                        )));
                    }
                }
            }
        }
        _ => {
            for (k, data) in files {
                wanted.push((dir.join(k), data));
            }
        }
    }
    for (path, data) in wanted {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| io_error("creating", parent, &e))?;
        }
        fs::write(&path, data).map_err(|e| io_error("writing", &path, &e))?;
    }
    Ok(())
}

/// Materializes the Pod's volumes under `<pod dir>/volumes/`.
fn write_volumes(ctx: &LaunchContext) -> Result<(), LaunchError> {
    let ns = namespace(&ctx.pod);
    let root = ctx.pod_dir.join("volumes");
    for volume in ctx.pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let vname = volume["name"].as_str().unwrap_or_default();
        let dir = root.join(vname);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| io_error("cleaning", &dir, &e))?;
        }
        fs::create_dir_all(&dir).map_err(|e| io_error("creating", &dir, &e))?;
        let mut sources: Vec<(&str, &Value)> = Vec::new();
        if volume["secret"].is_object() {
            sources.push(("Secret", &volume["secret"]));
        }
        if volume["configMap"].is_object() {
            sources.push(("ConfigMap", &volume["configMap"]));
        }
        for source in volume["projected"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if source["secret"].is_object() {
                sources.push(("Secret", &source["secret"]));
            }
            if source["configMap"].is_object() {
                sources.push(("ConfigMap", &source["configMap"]));
            }
        }
        for (kind, src) in sources {
            let obj_name = src["secretName"]
                .as_str()
                .or_else(|| src["name"].as_str())
                .unwrap_or_default();
            match source_data(&ctx.api, kind, ns, obj_name) {
                Some(files) => write_volume(&dir, &files, &src["items"])?,
                None if src["optional"] == true => {}
                None => {
                    return Err(LaunchError {
                        reason: "ContainerCreating".into(),
                        message: format!(
                            "MountVolume.SetUp failed for volume \"{vname}\" : {} \"{obj_name}\" not found",
                            kind.to_lowercase()
                        ),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The value of a `fieldRef`.
fn field_value(ctx: &LaunchContext, path: &str) -> Option<String> {
    let pod = &ctx.pod;
    let s = |v: &Value| v.as_str().map(str::to_owned);
    match path {
        "metadata.name" => Some(name(pod).to_owned()),
        "metadata.namespace" => Some(namespace(pod).to_owned()),
        "metadata.uid" => Some(uid(pod).to_owned()),
        "spec.nodeName" => s(&pod["spec"]["nodeName"]),
        "spec.serviceAccountName" => Some(
            pod["spec"]["serviceAccountName"]
                .as_str()
                .unwrap_or("default")
                .to_owned(),
        ),
        "status.podIP" | "status.podIPs" => Some(ctx.pod_ip.clone()),
        "status.hostIP" | "status.hostIPs" => Some(ctx.host_ip.clone()),
        _ => {
            let (map, key) = path
                .strip_prefix("metadata.labels['")
                .map(|k| ("labels", k))
                .or_else(|| {
                    path.strip_prefix("metadata.annotations['")
                        .map(|k| ("annotations", k))
                })?;
            let key = key.strip_suffix("']")?;
            Some(s(&pod["metadata"][map][key]).unwrap_or_default())
        }
    }
}

/// Resolves the container's environment: `envFrom`, then `env` (later entries win).
fn environment(ctx: &LaunchContext) -> Result<BTreeMap<String, String>, LaunchError> {
    let ns = namespace(&ctx.pod);
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    for from in ctx.container["envFrom"].as_array().into_iter().flatten() {
        let prefix = from["prefix"].as_str().unwrap_or_default();
        let (kind, src) = if from["secretRef"].is_object() {
            ("Secret", &from["secretRef"])
        } else {
            ("ConfigMap", &from["configMapRef"])
        };
        let obj_name = src["name"].as_str().unwrap_or_default();
        match source_data(&ctx.api, kind, ns, obj_name) {
            Some(data) => {
                for (k, v) in data {
                    vars.insert(
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            None if src["optional"] == true => {}
            None => {
                return Err(config_error(format!(
                    "{} \"{obj_name}\" not found",
                    kind.to_lowercase()
                )));
            }
        }
    }
    for var in ctx.container["env"].as_array().into_iter().flatten() {
        let key = var["name"].as_str().unwrap_or_default().to_owned();
        let from = &var["valueFrom"];
        let value = if let Some(v) = var["value"].as_str() {
            expand(v, &vars)
        } else if from.is_object() {
            let key_ref = |kind: &str, r: &Value| -> Result<Option<String>, LaunchError> {
                let obj_name = r["name"].as_str().unwrap_or_default();
                let k = r["key"].as_str().unwrap_or_default();
                let optional = r["optional"] == true;
                match source_data(&ctx.api, kind, ns, obj_name) {
                    Some(data) => match data.get(k) {
                        Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
                        None if optional => Ok(None),
                        None => Err(config_error(format!(
                            "couldn't find key {k} in {kind} {ns}/{obj_name}"
                        ))),
                    },
                    None if optional => Ok(None),
                    None => Err(config_error(format!(
                        "{} \"{obj_name}\" not found",
                        kind.to_lowercase()
                    ))),
                }
            };
            let resolved = if from["secretKeyRef"].is_object() {
                key_ref("Secret", &from["secretKeyRef"])?
            } else if from["configMapKeyRef"].is_object() {
                key_ref("ConfigMap", &from["configMapKeyRef"])?
            } else if let Some(path) = from["fieldRef"]["fieldPath"].as_str() {
                field_value(ctx, path)
            } else {
                // resourceFieldRef: no resources are simulated.
                Some("0".to_owned())
            };
            match resolved {
                Some(v) => v,
                None => continue,
            }
        } else {
            String::new()
        };
        vars.insert(key, value);
    }
    Ok(vars)
}

/// Prepares volumes, the kubeconfig, arguments and environment of one (re)start.
fn prepare(ctx: &LaunchContext) -> Result<Launch, LaunchError> {
    let ns = namespace(&ctx.pod);
    fs::create_dir_all(&ctx.pod_dir).map_err(|e| io_error("creating", &ctx.pod_dir, &e))?;
    write_volumes(ctx)?;

    // The container's view of its mounts.
    let rootfs = ctx.pod_dir.join("rootfs");
    if rootfs.exists() {
        fs::remove_dir_all(&rootfs).map_err(|e| io_error("cleaning", &rootfs, &e))?;
    }
    fs::create_dir_all(&rootfs).map_err(|e| io_error("creating", &rootfs, &e))?;
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for m in ctx.container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let mount_path = m["mountPath"].as_str().unwrap_or_default();
        let mut dir = ctx
            .pod_dir
            .join("volumes")
            .join(m["name"].as_str().unwrap_or_default());
        if let Some(sub) = m["subPath"].as_str().filter(|s| !s.is_empty()) {
            dir = dir.join(sub);
        }
        let link = rootfs.join(mount_path.trim_start_matches('/'));
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).map_err(|e| io_error("creating", parent, &e))?;
        }
        std::os::unix::fs::symlink(&dir, &link).map_err(|e| io_error("linking", &link, &e))?;
        mounts.push((mount_path.to_owned(), dir));
    }
    // Longest mount path first, so nested mounts win.
    mounts.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));

    let sa = ctx.pod["spec"]["serviceAccountName"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let kubeconfig = ctx
        .cluster
        .service_account_kubeconfig(ns, sa)
        .map_err(|e| config_error(e.to_string()))?;
    let kubeconfig_path = ctx.pod_dir.join("kubeconfig");
    kubeconfig
        .write_atomic(&kubeconfig_path)
        .map_err(|e| config_error(e.to_string()))?;

    let mut vars = environment(ctx)?;
    for v in vars.values_mut() {
        *v = rewrite_paths(v, &mounts);
    }
    let command: Vec<&str> = ctx.container["command"]
        .as_array()
        .map(|c| c.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let args = command
        .iter()
        .skip(1)
        .copied()
        .chain(
            ctx.container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str),
        )
        .map(|a| rewrite_paths(&expand(a, &vars), &mounts))
        .collect();

    let mut env: BTreeMap<String, String> = BTreeMap::new();
    env.insert(
        "PATH".into(),
        std::env::var("PATH").unwrap_or_else(|_| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        }),
    );
    env.insert("HOME".into(), ctx.pod_dir.display().to_string());
    env.insert("HOSTNAME".into(), name(&ctx.pod).to_owned());
    env.extend(vars);
    env.insert("KUBECONFIG".into(), kubeconfig_path.display().to_string());
    env.insert("FLEDGE_SIM_ROOT".into(), rootfs.display().to_string());
    if let Some(path) = &ctx.network_file {
        env.insert(
            crate::faults::NETWORK_FILE_ENV.into(),
            std::path::absolute(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string(),
        );
    }
    Ok(Launch {
        program: ctx.agent_bin.clone(),
        args,
        env: env.into_iter().collect(),
        cwd: ctx.pod_dir.clone(),
        log_path: ctx.log_path.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_images_are_recognized_by_repository() {
        assert!(is_agent_image("ghcr.io/fledge-dev/fledge-agent:0.1.0"));
        assert!(is_agent_image("example.com/fledge-agent:test"));
        assert!(is_agent_image("fledge-agent"));
        assert!(is_agent_image("localhost:5000/fledge-agent@sha256:abc"));
        assert!(!is_agent_image("ghcr.io/fledge-dev/fledge-agent-helper:1"));
        assert!(!is_agent_image("nginx:1.27"));
    }

    #[test]
    fn variables_expand_like_the_kubelet() {
        let vars: BTreeMap<String, String> =
            [("A".to_owned(), "x".to_owned())].into_iter().collect();
        assert_eq!(expand("--a=$(A)", &vars), "--a=x");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("cost $5", &vars), "cost $5");
    }

    #[test]
    fn mount_paths_are_rewritten() {
        let mounts = vec![("/etc/agent".to_owned(), PathBuf::from("/w/volumes/cfg"))];
        assert_eq!(
            rewrite_paths("/etc/agent/c.yaml", &mounts),
            "/w/volumes/cfg/c.yaml"
        );
        assert_eq!(
            rewrite_paths("--config=/etc/agent/c.yaml", &mounts),
            "--config=/w/volumes/cfg/c.yaml"
        );
        assert_eq!(rewrite_paths("/etc/agentx", &mounts), "/etc/agentx");
        assert_eq!(rewrite_paths("/etc/agent", &mounts), "/w/volumes/cfg");
    }
}
