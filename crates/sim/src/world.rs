//! The world: the management cluster with Cluster API and the vSphere provider installed, the
//! simulated vCenter, and the workload clusters that come to life when their first
//! control-plane VM runs.
//!
//! Each cluster (management and workload) gets a controller host
//! ([`crate::controllers::run_host`]) that runs the providers' controllers only while their
//! Deployments are available there. The world itself plays each VM's kubelet: when a VM has
//! booted, it registers the VM's Node in its workload cluster, first creating that cluster's
//! API if the VM runs `kubeadm init`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube_sim::sim::{ClusterHandle, ClusterOptions, Sim, SimError};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tracing::{info, warn};

use crate::clock::Speed;
use crate::controllers::{self, CLUSTER_NAME_LABEL, CONTROLPLANE, get, owner_ref};
use crate::providers;
use crate::vsphere::{VCenter, Vm};

/// The name of the management cluster (kubeconfig entries, PKI directory).
pub const MANAGEMENT_CLUSTER: &str = "management";

/// How to start a [`World`].
#[derive(Debug, Clone)]
pub struct WorldConfig {
    /// Directory for kubeconfigs, PKI and pod logs.
    pub state_dir: PathBuf,
    /// How much faster than real life the world runs.
    pub speed: Speed,
    /// The `fledge-agent` binary the node runtime runs for agent containers.
    pub agent_bin: PathBuf,
    /// Whether to install providers and run the simulated controllers.
    pub controllers: bool,
    /// Where the management cluster listens.
    pub listen: SocketAddr,
    /// Watch history per resource type.
    pub watch_history: usize,
}

impl WorldConfig {
    /// Defaults for a world in `state_dir`: realistic speed, controllers on, any free port.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        WorldConfig {
            state_dir: state_dir.into(),
            speed: Speed::default(),
            agent_bin: PathBuf::from("fledge-agent"),
            controllers: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            watch_history: 1000,
        }
    }
}

/// Errors of the world.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// kube-sim refused.
    #[error(transparent)]
    Sim(Box<SimError>),
    /// Installing providers failed.
    #[error(transparent)]
    Install(Box<providers::InstallError>),
    /// The API refused a write.
    #[error("{what}: {source}")]
    Api {
        /// What was written.
        what: String,
        /// The error.
        #[source]
        source: Box<kube_sim::ApiError>,
    },
    /// A file could not be written.
    #[error("{what}: {message}")]
    Io {
        /// What was written.
        what: String,
        /// The error.
        message: String,
    },
}

impl From<SimError> for WorldError {
    fn from(e: SimError) -> Self {
        WorldError::Sim(Box::new(e))
    }
}

impl From<providers::InstallError> for WorldError {
    fn from(e: providers::InstallError) -> Self {
        WorldError::Install(Box::new(e))
    }
}

struct Workload {
    handle: ClusterHandle,
    stop: watch::Sender<bool>,
}

/// The simulated world.
pub struct World {
    sim: Sim,
    management: ClusterHandle,
    config: WorldConfig,
    vcenter: VCenter,
    workloads: Mutex<BTreeMap<(String, String), Workload>>,
    poke: Notify,
    agents: crate::kubelet::AgentProcesses,
    running: Mutex<BTreeMap<String, providers::ProviderSet>>,
    /// Fault knob: Helm charts whose installs fail.
    pub(crate) helm_faults: controllers::helmrelease::HelmFaults,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    pub(crate) faults: crate::faults::FaultState,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("management", &self.management)
            .field("config", &self.config)
            .finish()
    }
}

impl World {
    /// Starts the management cluster and, with `config.controllers`, installs the providers
    /// and starts the controllers and the VM runtime.
    ///
    /// # Errors
    /// If the management cluster cannot start or the providers cannot be installed.
    pub async fn start(config: WorldConfig) -> Result<Arc<World>, WorldError> {
        let sim = Sim::with_state_dir(&config.state_dir);
        let management = sim
            .add_cluster(
                ClusterOptions::new(MANAGEMENT_CLUSTER)
                    .listen(config.listen)
                    .watch_history(config.watch_history),
            )
            .await?;
        let (shutdown, _) = watch::channel(false);
        let world = Arc::new(World {
            sim,
            management: management.clone(),
            vcenter: VCenter::new(config.speed),
            config,
            workloads: Mutex::default(),
            poke: Notify::new(),
            agents: crate::kubelet::AgentProcesses::default(),
            running: Mutex::default(),
            helm_faults: controllers::helmrelease::HelmFaults::default(),
            shutdown,
            tasks: Mutex::default(),
            faults: crate::faults::FaultState::default(),
        });
        if world.config.controllers {
            providers::install_management_providers(&management.api())?;
            let host =
                controllers::spawn_host(world.clone(), management, world.shutdown.subscribe());
            let vms = tokio::spawn(run_vm_runtime(world.clone()));
            let nodes = tokio::spawn(crate::node_lifecycle::run(
                world.clone(),
                world.shutdown.subscribe(),
            ));
            world.lock_tasks().extend([host, vms, nodes]);
        }
        Ok(world)
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<tokio::task::JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_workloads(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Workload>> {
        self.workloads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The kube-sim host of every cluster.
    pub fn sim(&self) -> &Sim {
        &self.sim
    }

    /// The management cluster.
    pub fn management(&self) -> &ClusterHandle {
        &self.management
    }

    /// The world's configuration.
    pub fn config(&self) -> &WorldConfig {
        &self.config
    }

    /// The speed factor.
    pub fn speed(&self) -> Speed {
        self.config.speed
    }

    /// The simulated vCenter.
    pub fn vcenter(&self) -> &VCenter {
        &self.vcenter
    }

    /// The providers whose controllers run in the kube-sim cluster `cluster` (as its
    /// controller host last observed; every later pass uses a newer observation).
    pub fn running_providers(&self, cluster: &str) -> providers::ProviderSet {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cluster)
            .cloned()
            .unwrap_or_default()
    }

    /// Records what [`World::running_providers`] reports.
    pub(crate) fn set_running_providers(&self, cluster: &str, set: providers::ProviderSet) {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cluster.to_owned(), set);
    }

    /// The agent processes the node runtimes run (fault knob: kill one).
    pub fn agents(&self) -> &crate::kubelet::AgentProcesses {
        &self.agents
    }

    /// The workload cluster of the CAPI Cluster `namespace/name`, once its API exists.
    pub fn workload_cluster(&self, namespace: &str, name: &str) -> Option<ClusterHandle> {
        self.lock_workloads()
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|w| w.handle.clone())
    }

    /// Every workload cluster, by CAPI Cluster `(namespace, name)`.
    pub fn workload_clusters(&self) -> Vec<((String, String), ClusterHandle)> {
        self.lock_workloads()
            .iter()
            .map(|(k, w)| (k.clone(), w.handle.clone()))
            .collect()
    }

    /// Resolves when something outside a cluster changed (a Node registered): controller
    /// hosts re-run their pass.
    pub async fn poked(&self) {
        self.poke.notified().await;
    }

    /// The kube-sim name of the workload cluster of CAPI Cluster `namespace/name`.
    pub fn sim_cluster_name(namespace: &str, name: &str) -> String {
        // Namespaces cannot contain dots, so this is unique.
        format!("{namespace}.{name}")
    }

    /// Where the world writes files of the workload cluster `namespace/name`.
    pub fn cluster_dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.config
            .state_dir
            .join("clusters")
            .join(namespace)
            .join(name)
    }

    /// Creates the workload cluster of CAPI Cluster `namespace/name` (what `kubeadm init` on
    /// its first control-plane VM does): its API with its own CA, the CAPI Secrets in `host`
    /// (the cluster holding the CAPI objects), the admin kubeconfig file, its controller host.
    ///
    /// # Errors
    /// If the API cannot start or a Secret cannot be written.
    pub async fn ensure_workload_cluster(
        self: &Arc<Self>,
        namespace: &str,
        name: &str,
        host: &str,
    ) -> Result<ClusterHandle, WorldError> {
        if let Some(h) = self.workload_cluster(namespace, name) {
            return Ok(h);
        }
        let sim_name = Self::sim_cluster_name(namespace, name);
        let handle = match self.sim.cluster(&sim_name) {
            Some(h) => h,
            None => self.sim.add_cluster(ClusterOptions::new(&sim_name)).await?,
        };
        let host_api = self
            .sim
            .cluster(host)
            .unwrap_or_else(|| self.management.clone())
            .api();
        self.write_capi_secrets(&host_api, namespace, name, &handle)?;
        let dir = self.cluster_dir(namespace, name);
        handle
            .admin_kubeconfig()
            .write_atomic(&dir.join("kubeconfig"))
            .map_err(|e| WorldError::Io {
                what: format!("writing {}", dir.join("kubeconfig").display()),
                message: e.to_string(),
            })?;
        let (stop, stop_rx) = watch::channel(false);
        let host_task = controllers::spawn_host(self.clone(), handle.clone(), stop_rx.clone());
        self.lock_tasks().push(host_task);
        self.start_node_runtime(namespace, name, &handle, stop_rx);
        self.lock_workloads().insert(
            (namespace.to_owned(), name.to_owned()),
            Workload {
                handle: handle.clone(),
                stop,
            },
        );
        info!(cluster = %format!("{namespace}/{name}"), endpoint = %handle.endpoint(), "Workload cluster API is up");
        self.poke.notify_waiters();
        Ok(handle)
    }

    /// Starts the node runtime (sim-kubelet) of a workload cluster.
    fn start_node_runtime(
        &self,
        namespace: &str,
        name: &str,
        handle: &ClusterHandle,
        stop: watch::Receiver<bool>,
    ) {
        let dir = self.cluster_dir(namespace, name);
        let network = crate::faults::network_file(&dir);
        let up = !self.faults.network_cut(namespace, name);
        if let Err(e) = crate::faults::write_network_file(&network, up) {
            warn!(error = %e, "Writing the network file failed");
        }
        let cfg = crate::kubelet::KubeletConfig::new(
            self.config.agent_bin.clone(),
            dir.join("pods"),
            dir.join("work"),
        )
        .with_speed(self.config.speed.0)
        .with_network_file(network);
        let task = tokio::spawn(crate::kubelet::run(
            handle.clone(),
            cfg,
            self.agents.clone(),
            stop,
        ));
        self.lock_tasks().push(task);
    }

    fn write_capi_secrets(
        &self,
        api: &kube_sim::ApiServer,
        namespace: &str,
        name: &str,
        handle: &ClusterHandle,
    ) -> Result<(), WorldError> {
        let cluster = get(api, controllers::CAPI, "Cluster", namespace, name)
            .ok()
            .flatten();
        // Upstream, the control plane provider owns these Secrets.
        let kcp = cluster.as_ref().and_then(|c| {
            c["spec"]["controlPlaneRef"]["name"].as_str().and_then(|n| {
                get(api, CONTROLPLANE, "KubeadmControlPlane", namespace, n)
                    .ok()
                    .flatten()
            })
        });
        let owner = kcp
            .as_ref()
            .map(|k| owner_ref(k, true))
            .or_else(|| cluster.as_ref().map(|c| owner_ref(c, false)));
        let ca_key = std::fs::read_to_string(
            self.config
                .state_dir
                .join("pki")
                .join(Self::sim_cluster_name(namespace, name))
                .join("ca.key"),
        )
        .unwrap_or_default();
        let etcd = self_signed_ca("etcd-ca")?;
        let proxy = self_signed_ca("front-proxy-ca")?;
        let sa = rcgen::KeyPair::generate().map_err(|e| WorldError::Io {
            what: "generating the service account key".into(),
            message: e.to_string(),
        })?;
        let kubeconfig = handle
            .client_cert_kubeconfig("kubernetes-admin", &["system:masters".to_owned()])?
            .to_yaml()
            .map_err(|e| WorldError::Io {
                what: "serializing the kubeconfig".into(),
                message: e.to_string(),
            })?;
        let secrets: [(&str, Vec<(&str, String)>); 5] = [
            (
                "ca",
                vec![("tls.crt", handle.ca_pem().to_owned()), ("tls.key", ca_key)],
            ),
            ("etcd", vec![("tls.crt", etcd.0), ("tls.key", etcd.1)]),
            ("proxy", vec![("tls.crt", proxy.0), ("tls.key", proxy.1)]),
            (
                "sa",
                vec![
                    ("tls.crt", sa.public_key_pem()),
                    ("tls.key", sa.serialize_pem()),
                ],
            ),
            ("kubeconfig", vec![("value", kubeconfig)]),
        ];
        for (purpose, data) in secrets {
            let data: serde_json::Map<String, Value> = data
                .into_iter()
                .map(|(k, v)| (k.to_owned(), json!(STANDARD.encode(v))))
                .collect();
            let mut secret = json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "cluster.x-k8s.io/secret",
                "metadata": {
                    "name": format!("{name}-{purpose}"),
                    "namespace": namespace,
                    "labels": {CLUSTER_NAME_LABEL: name},
                },
                "data": data,
            });
            if let Some(o) = &owner {
                secret["metadata"]["ownerReferences"] = json!([o]);
            }
            match api.create_object(secret) {
                Ok(_) => {}
                Err(e) if e.is_conflict() => {}
                Err(source) => {
                    return Err(WorldError::Api {
                        what: format!("creating Secret {namespace}/{name}-{purpose}"),
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(())
    }

    /// Stops and forgets the workload cluster of CAPI Cluster `namespace/name` (its Cluster is
    /// gone): its controllers, node runtime and API; removes its files.
    pub fn remove_workload_cluster(self: &Arc<Self>, namespace: &str, name: &str) {
        let Some(w) = self
            .lock_workloads()
            .remove(&(namespace.to_owned(), name.to_owned()))
        else {
            return;
        };
        w.stop.send_replace(true);
        self.faults.forget_cluster(namespace, name);
        let world = self.clone();
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        tokio::spawn(async move {
            if let Err(e) = world
                .sim
                .remove_cluster(&Self::sim_cluster_name(&namespace, &name))
                .await
            {
                warn!(error = %e, "Removing the workload cluster failed");
            }
            let _ = std::fs::remove_dir_all(world.cluster_dir(&namespace, &name));
        });
    }

    /// Stops every controller and cluster.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        for w in self.lock_workloads().values() {
            w.stop.send_replace(true);
        }
        let tasks: Vec<_> = self.lock_tasks().drain(..).collect();
        for t in tasks {
            t.abort();
        }
        self.sim.shutdown().await;
    }
}

fn self_signed_ca(cn: &str) -> Result<(String, String), WorldError> {
    let err = |e: rcgen::Error| WorldError::Io {
        what: format!("generating the {cn} certificate"),
        message: e.to_string(),
    };
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cn);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The Node a VM's kubelet registers.
pub fn node_for(vm: &Vm) -> (Value, Value) {
    let spec = &vm.spec;
    let mut labels = json!({
        "kubernetes.io/hostname": spec.name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": "amd64",
    });
    if spec.control_plane {
        labels["node-role.kubernetes.io/control-plane"] = json!("");
        labels["node.kubernetes.io/exclude-from-external-load-balancers"] = json!("");
    }
    let node = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels},
        "spec": {"providerID": format!("vsphere://{}", vm.uuid), "taints": spec.taints},
    });
    let now = kube_sim::api_server::now_rfc3339();
    let capacity = json!({
        "cpu": spec.cpus.to_string(),
        "memory": format!("{}Ki", spec.memory_mib * 1024),
        "ephemeral-storage": format!("{}Gi", spec.disk_gib),
        "pods": "110",
    });
    let cond = |t: &str, s: &str, reason: &str, message: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    let status = json!({
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
        ],
        "addresses": [
            {"type": "InternalIP", "address": vm.ip},
            {"type": "Hostname", "address": spec.name},
        ],
        "nodeInfo": {
            "machineID": vm.uuid.replace('-', ""),
            "systemUUID": vm.uuid,
            "bootID": uuid::Uuid::new_v4().to_string(),
            "kernelVersion": "6.8.0-51-generic",
            "osImage": "Ubuntu 24.04.1 LTS",
            "containerRuntimeVersion": "containerd://1.7.24",
            "kubeletVersion": spec.version,
            "kubeProxyVersion": spec.version,
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    });
    (node, status)
}

fn register_node(handle: &ClusterHandle, vm: &Vm) -> Result<(), kube_sim::ApiError> {
    let api = handle.api();
    let (node, status) = node_for(vm);
    let created = match api.create_object(node) {
        Ok(n) => n,
        Err(e) if e.is_conflict() => api.get_object("v1", "Node", None, &vm.spec.name)?,
        Err(e) => return Err(e),
    };
    let mut created = created;
    created["apiVersion"] = json!("v1");
    created["kind"] = json!("Node");
    created["status"] = status;
    api.update_object_status(created).map(|_| ())
}

/// Plays every VM's kubelet: once a VM has booted, registers its Node in its workload cluster,
/// creating that cluster first when the VM runs `kubeadm init`.
async fn run_vm_runtime(world: Arc<World>) {
    let mut shutdown = world.shutdown.subscribe();
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Subscribe before looking, so a VM created meanwhile is not missed.
        let changed = world.vcenter.changed.notified();
        let (ready, next) = world.vcenter.unregistered_running();
        let mut retry = false;
        for vm in ready {
            let (ns, cluster) = (vm.spec.namespace.clone(), vm.spec.cluster.clone());
            let handle = if vm.spec.init {
                match world
                    .ensure_workload_cluster(&ns, &cluster, &vm.spec.host)
                    .await
                {
                    Ok(h) => Some(h),
                    Err(e) => {
                        warn!(cluster = %format!("{ns}/{cluster}"), error = %e, "Creating the workload cluster failed");
                        None
                    }
                }
            } else {
                world.workload_cluster(&ns, &cluster)
            };
            let Some(handle) = handle else {
                retry = true;
                continue;
            };
            match register_node(&handle, &vm) {
                Ok(()) => {
                    info!(cluster = %format!("{ns}/{cluster}"), node = %vm.spec.name, "Node registered");
                    world.vcenter.mark_registered(&ns, &vm.spec.name);
                    world.poke.notify_waiters();
                }
                Err(e) => {
                    warn!(node = %vm.spec.name, error = %e, "Registering the node failed");
                    retry = true;
                }
            }
        }
        let mut deadline = next.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        if retry {
            deadline = deadline.min(
                Instant::now()
                    + world
                        .speed()
                        .delay(Duration::from_secs(5))
                        .max(Duration::from_millis(20)),
            );
        }
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep_until(deadline.into()) => {}
            _ = shutdown.changed() => return,
        }
    }
}
