//! The node runtime of one workload cluster ("sim-kubelet"): the controllers and the kubelet a
//! real cluster would run for its workloads, in-process, against the cluster's [`ApiServer`].
//!
//! - Deployments get hash-named ReplicaSets (`<deployment>-<pod-template-hash>`, RollingUpdate
//!   with maxSurge/maxUnavailable, or Recreate); ReplicaSets, DaemonSets (one Pod per eligible
//!   Node) and StatefulSets (`<name>-<ordinal>`, OrderedReady or Parallel) get Pods; their status
//!   (replicas, ready/available/updated counts, observedGeneration, Deployment conditions
//!   `Available` and `Progressing`) follows the Pods.
//! - Pods are scheduled onto Ready Nodes honouring `NoSchedule`/`NoExecute` taints and
//!   tolerations, `nodeSelector` and required node affinity, spreading by Pod count; a Pod that
//!   fits nowhere stays Pending with `PodScheduled=False` (reason `Unschedulable`, kube-scheduler's
//!   message).
//! - A bound Pod starts after [`Timings::pod_start`]: `Running`, Ready, `containerStatuses`,
//!   `podIP`, `hostIP`, `startTime`. Containers whose image repository ends in `fledge-agent`
//!   run [`KubeletConfig::agent_bin`] for real (see [`agent`] for arguments, environment,
//!   volumes, `KUBECONFIG` and restarts); other containers are simulated.
//! - Deleting a Pod stops its processes (SIGTERM, SIGKILL after the grace period) and then
//!   removes it. Pods on a NotReady Node lose their processes and readiness at once and are
//!   evicted (deleted, so that their owner replaces them) after [`Timings::eviction_timeout`],
//!   unless they tolerate NotReady forever (DaemonSet Pods); Pods on a deleted Node are deleted.
//!
//! The runtime is level-triggered: every change of a watched kind (Pods, Nodes, the workload
//! kinds), every change of an agent process and every timer (start delays, evictions) runs one
//! pass over the whole cluster; a periodic resync catches the rest. Conflicts just wait for the
//! next pass.
//!
//! Every delay is realistic and divided by [`KubeletConfig::speed`].

pub mod agent;
mod objects;
mod pods;
mod scheduling;
mod workloads;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream::SelectAll;
use kube_sim::ApiServer;
use kube_sim::api_server::{ListOptions, WatchOptions};
use kube_sim::sim::ClusterHandle;
use kube_sim::watch::WatchStream;
use serde_json::Value;
use tokio::sync::{Notify, watch};
use tracing::{Instrument as _, debug, info, info_span, warn};

pub use agent::{AgentProcess, AgentProcesses, is_agent_image};

use self::pods::PodRuntime;

/// Realistic durations of the runtime (before dividing by the speed factor).
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// From binding to Running (image pull, sandbox, container start): 2 s.
    pub pod_start: Duration,
    /// How long a Node may be NotReady before its Pods are evicted: 40 s (kube-controller-manager
    /// waits 40 s before marking a Node unreachable; eviction follows).
    pub eviction_timeout: Duration,
    /// First CrashLoopBackOff delay: 10 s, doubling per crash.
    pub backoff_base: Duration,
    /// Longest CrashLoopBackOff delay: 300 s.
    pub backoff_cap: Duration,
    /// Retry interval for a container whose configuration is missing (a Secret, a
    /// ServiceAccount): 2 s.
    pub config_retry: Duration,
    /// Full pass even without events: 10 s. Not divided by the speed: events and timers drive
    /// the runtime, the resync only repairs missed watch events (and reopens failed watches).
    pub resync: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            pod_start: Duration::from_secs(2),
            eviction_timeout: Duration::from_secs(40),
            backoff_base: Duration::from_secs(10),
            backoff_cap: Duration::from_secs(300),
            config_retry: Duration::from_secs(2),
            resync: Duration::from_secs(10),
        }
    }
}

/// Configuration of one cluster's node runtime.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// Divides every realistic delay: 50 runs 50× faster. Non-positive values mean 1.
    pub speed: f64,
    /// The program run for `fledge-agent` containers (replaces the image's entrypoint).
    pub agent_bin: PathBuf,
    /// Where container output goes: `<pod_log_dir>/<pod>.log` (appended, stdout and stderr).
    pub pod_log_dir: PathBuf,
    /// Per-Pod directories: `<work_dir>/pods/<namespace>/<pod>/` (volumes, kubeconfig, rootfs).
    pub work_dir: PathBuf,
    /// The realistic delays.
    pub timings: Timings,
    /// The cluster's network file, passed to agent processes as `FLEDGE_SIM_NETWORK_FILE`
    /// (see [`crate::faults`] for the contract).
    pub network_file: Option<PathBuf>,
}

impl KubeletConfig {
    /// A configuration at realistic speed with the default [`Timings`].
    pub fn new(
        agent_bin: impl Into<PathBuf>,
        pod_log_dir: impl Into<PathBuf>,
        work_dir: impl Into<PathBuf>,
    ) -> Self {
        KubeletConfig {
            speed: 1.0,
            agent_bin: agent_bin.into(),
            pod_log_dir: pod_log_dir.into(),
            work_dir: work_dir.into(),
            timings: Timings::default(),
            network_file: None,
        }
    }

    /// Sets the network file given to agent processes.
    pub fn with_network_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.network_file = Some(path.into());
        self
    }

    /// Sets the speed factor.
    pub fn with_speed(mut self, speed: f64) -> Self {
        self.speed = speed;
        self
    }

    /// A realistic delay divided by the speed factor.
    pub fn delay(&self, realistic: Duration) -> Duration {
        let speed = if self.speed.is_finite() && self.speed > 0.0 {
            self.speed
        } else {
            1.0
        };
        realistic.div_f64(speed)
    }
}

/// The objects one pass works on.
pub(crate) struct Snapshot {
    nodes: Vec<Value>,
    pods: Vec<Value>,
    deployments: Vec<Value>,
    replicasets: Vec<Value>,
    daemonsets: Vec<Value>,
    statefulsets: Vec<Value>,
}

/// The kinds whose changes trigger a pass.
const WATCHED: &[(&str, &str)] = &[
    ("v1", "Pod"),
    ("v1", "Node"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "ReplicaSet"),
    ("apps/v1", "DaemonSet"),
    ("apps/v1", "StatefulSet"),
];

/// The runtime's state.
pub(crate) struct Kubelet {
    cluster: ClusterHandle,
    api: Arc<ApiServer>,
    cfg: KubeletConfig,
    processes: AgentProcesses,
    notify: Arc<Notify>,
    pods: HashMap<String, PodRuntime>,
    not_ready_since: HashMap<String, Instant>,
    node_index: HashMap<String, usize>,
    next_ip: HashMap<String, u32>,
}

impl Kubelet {
    fn list(&self, api_version: &str, kind: &str) -> Vec<Value> {
        match self
            .api
            .list_objects(api_version, kind, None, &ListOptions::default())
        {
            Ok(mut list) => match list["items"].take() {
                Value::Array(items) => items,
                _ => Vec::new(),
            },
            Err(err) => {
                debug!(kind, %err, "list failed");
                Vec::new()
            }
        }
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            nodes: self.list("v1", "Node"),
            pods: self.list("v1", "Pod"),
            deployments: self.list("apps/v1", "Deployment"),
            replicasets: self.list("apps/v1", "ReplicaSet"),
            daemonsets: self.list("apps/v1", "DaemonSet"),
            statefulsets: self.list("apps/v1", "StatefulSet"),
        }
    }

    fn backoff(&self) -> agent::Backoff {
        agent::Backoff {
            base: self.cfg.delay(self.cfg.timings.backoff_base),
            cap: self.cfg.delay(self.cfg.timings.backoff_cap),
            config_retry: self.cfg.delay(self.cfg.timings.config_retry),
        }
    }

    /// One pass; returns the next timer deadline, if any.
    fn pass(&mut self) -> Option<Instant> {
        let snap = self.snapshot();
        let mut next = None;
        self.sync_deployments(&snap);
        self.sync_replicasets(&snap);
        self.sync_daemonsets(&snap);
        self.sync_statefulsets(&snap);
        self.schedule(&snap);
        self.sync_pods(&snap, &mut next);
        next
    }

    fn open_watches(&self) -> Option<SelectAll<WatchStream>> {
        let mut all = SelectAll::new();
        for (api_version, kind) in WATCHED {
            match self
                .api
                .watch_objects(api_version, kind, None, &WatchOptions::default())
            {
                Ok(stream) => all.push(stream),
                Err(err) => debug!(kind, %err, "watch failed"),
            }
        }
        (!all.is_empty()).then_some(all)
    }

    /// Stops every process (graceful, bounded by the Pods' grace periods) and waits for them.
    async fn stop_all(&mut self) {
        let grace = self.cfg.delay(Duration::from_secs(30));
        for rt in self.pods.values() {
            rt.stop(agent::Stop::Graceful(grace));
        }
        for (_, rt) in self.pods.drain() {
            rt.join().await;
        }
    }
}

/// A running node runtime started by [`spawn`].
#[derive(Debug)]
pub struct KubeletHandle {
    processes: AgentProcesses,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl KubeletHandle {
    /// The agent processes (listing, the "kill an agent process" fault knob).
    pub fn processes(&self) -> &AgentProcesses {
        &self.processes
    }

    /// Stops the runtime and waits until every process it started is gone.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        if let Err(err) = self.task.await {
            warn!(%err, "node runtime ended abnormally");
        }
    }
}

/// Starts [`run`] for `cluster` on the current Tokio runtime.
pub fn spawn(cluster: ClusterHandle, cfg: KubeletConfig) -> KubeletHandle {
    let processes = AgentProcesses::default();
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(run(cluster, cfg, processes.clone(), rx));
    KubeletHandle {
        processes,
        shutdown,
        task,
    }
}

/// Runs the node runtime of `cluster` until `shutdown` turns `true` (or its sender is dropped)
/// or the cluster's API server shuts down; then stops every process it started before
/// returning. `processes` is the registry the fault knob uses (pass a clone of one you keep).
pub async fn run(
    cluster: ClusterHandle,
    cfg: KubeletConfig,
    processes: AgentProcesses,
    mut shutdown: watch::Receiver<bool>,
) {
    let span = info_span!("kubelet", cluster = %cluster.name());
    async move {
        let api = cluster.api();
        let mut api_down = api.shutdown_signal();
        let resync = cfg.timings.resync;
        let mut kubelet = Kubelet {
            cluster,
            api,
            cfg,
            processes,
            notify: Arc::new(Notify::new()),
            pods: HashMap::new(),
            not_ready_since: HashMap::new(),
            node_index: HashMap::new(),
            next_ip: HashMap::new(),
        };
        info!("node runtime started");
        let mut watches = kubelet.open_watches();
        loop {
            if *shutdown.borrow() || *api_down.borrow() {
                break;
            }
            let deadline = kubelet.pass();
            let now = Instant::now();
            let wake = deadline.map_or(now + resync, |d| d.min(now + resync));
            let notify = kubelet.notify.clone();
            tokio::select! {
                changed = shutdown.changed() => if changed.is_err() { break },
                changed = api_down.changed() => if changed.is_err() { break },
                () = notify.notified() => {}
                () = tokio::time::sleep_until(wake.into()) => {
                    if watches.is_none() {
                        watches = kubelet.open_watches();
                    }
                }
                event = async {
                    match watches.as_mut() {
                        Some(w) => w.next().await,
                        None => std::future::pending().await,
                    }
                } => {
                    match event {
                        Some(_) => {
                            // Coalesce a burst of events into one pass.
                            if let Some(w) = watches.as_mut() {
                                while let Some(Some(_)) = futures::FutureExt::now_or_never(w.next()) {}
                            }
                        }
                        None => watches = None,
                    }
                }
            }
        }
        info!("node runtime stopping");
        kubelet.stop_all().await;
        info!("node runtime stopped");
    }
    .instrument(span)
    .await;
}
