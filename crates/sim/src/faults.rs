//! Fault knobs: what can go wrong in the world, reachable in-process (methods on [`World`]) and
//! from outside through a small admin endpoint on localhost ([`AdminServer`]).
//!
//! # Knobs
//!
//! | Knob | In-process | Effect |
//! |------|------------|--------|
//! | fail clones | [`World::fail_next_clones`] | the next N VM clones of the cluster fail; the VSphereVM reports `VirtualMachineProvisioned=False` (reason `CloningFailed`) and the clone is retried |
//! | node NotReady | [`World::set_node_not_ready`] | the Node's `Ready` turns `False` (reason `KubeletNotReady`) and its heartbeats stop, so after the node-monitor grace period it becomes `Unknown` |
//! | node Ready | [`World::set_node_ready`] | heartbeats resume, `Ready=True` again |
//! | delete a VM | [`World::delete_node_vm`] | the VM disappears from the simulated vCenter (and stays gone: CAPV does not re-clone a VM it had provisioned); its Node stops posting status and becomes `Ready=Unknown` after the grace period; the Machine stays until remediated |
//! | API outage | [`World::stop_api`] / [`World::start_api`] | the workload cluster's API refuses connections / listens again on the same port, state intact |
//! | network cut | [`World::cut_network`] / [`World::restore_network`] | the cluster's network file turns `down` / `up` (see below) |
//! | kill an agent | [`World::kill_agent`] | SIGKILL to the agent processes of a Pod; the node runtime restarts them with back-off |
//! | Helm chart failures | [`World::fail_helm_chart`] / [`World::heal_helm_chart`] | HelmReleases of the chart fail to install / install again (see [`crate::controllers::helmrelease`]) |
//!
//! # The network file contract
//!
//! The world cannot intercept the sockets of the real agent processes it runs, so a cut network
//! is announced through a file. Every agent process the node runtime starts gets the environment
//! variable `FLEDGE_SIM_NETWORK_FILE` holding the absolute path of its workload cluster's network
//! file, `<state-dir>/clusters/<namespace>/<name>/network` (namespace and name of the CAPI
//! Cluster). The file's content, ignoring surrounding whitespace, is `up` or `down`:
//!
//! - `up`: the cluster's outbound network to the manager works.
//! - `down`: it is cut. A process that honours the contract must fail every new connection to
//!   the manager (as if the peer were unreachable: treat it like a connect timeout/refusal) and
//!   should drop established ones when it notices.
//! - Missing or unreadable file, or any other content: treat as `up` (a process outside the
//!   simulation never has the variable set).
//!
//! The world writes the file atomically (write a temporary file, then rename), so a reader never
//! sees partial content; readers should re-read it before every dial (it is tiny) rather than
//! cache it. The cut concerns only traffic to the manager: the agent's own workload cluster API
//! stays reachable.
//!
//! # Admin endpoint
//!
//! `fledge-sim serve --admin-listen <addr>` (default `127.0.0.1:0`; only loopback addresses are
//! accepted) serves plain HTTP/1.1 with JSON bodies and writes its address (`127.0.0.1:<port>`
//! and a newline) to `<state-dir>/admin-addr` once it accepts connections; the file is removed
//! on shutdown. `{ns}`/`{name}` are the CAPI Cluster's namespace and name.
//!
//! | Method and path | Body | Answer |
//! |-----------------|------|--------|
//! | `GET /healthz` | | `{"ok":true}` |
//! | `GET /v1/clusters` | | `{"clusters":[{"namespace","name","serving","network"}]}` |
//! | `POST /v1/clusters/{ns}/{name}/fail-clones` | `{"count":N}` | `{"ok":true}` |
//! | `POST /v1/clusters/{ns}/{name}/nodes/{node}/not-ready` | | `{"ok":true}` |
//! | `POST /v1/clusters/{ns}/{name}/nodes/{node}/ready` | | `{"ok":true}` |
//! | `POST /v1/clusters/{ns}/{name}/nodes/{node}/delete-vm` | | `{"ok":true}` |
//! | `POST /v1/clusters/{ns}/{name}/api/stop` | | `{"ok":true}` |
//! | `POST /v1/clusters/{ns}/{name}/api/start` | | `{"ok":true}` |
//! | `POST /v1/clusters/{ns}/{name}/network/cut` | | `{"ok":true}` |
//! | `POST /v1/clusters/{ns}/{name}/network/restore` | | `{"ok":true}` |
//! | `POST /v1/clusters/{ns}/{name}/agents/{pod-namespace}/{pod}/kill` | | `{"ok":true,"killed":N}` |
//! | `POST /v1/helm/charts/{chart}/fail` | | `{"ok":true}`: HelmReleases of that chart fail ([`World::fail_helm_chart`]) |
//! | `POST /v1/helm/charts/{chart}/heal` | | `{"ok":true}` ([`World::heal_helm_chart`]) |
//!
//! Errors answer `{"error":"<message>"}` with 404 (unknown cluster, node or route), 400 (bad
//! body) or 500.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use kube_sim::sim::ClusterHandle;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::world::World;

/// Environment variable naming the network file of an agent's workload cluster.
pub const NETWORK_FILE_ENV: &str = "FLEDGE_SIM_NETWORK_FILE";

/// Errors of fault knobs.
#[derive(Debug, thiserror::Error)]
pub enum FaultError {
    /// No workload cluster (yet) for that CAPI Cluster.
    #[error("no workload cluster {namespace}/{name}")]
    UnknownCluster {
        /// The Cluster's namespace.
        namespace: String,
        /// The Cluster's name.
        name: String,
    },
    /// No such Node or VM.
    #[error("no node or VM {node} in cluster {namespace}/{cluster}")]
    UnknownNode {
        /// The Cluster's namespace.
        namespace: String,
        /// The Cluster's name.
        cluster: String,
        /// The Node (VM) name.
        node: String,
    },
    /// The API refused a write.
    #[error("{what}: {source}")]
    Api {
        /// What was written.
        what: String,
        /// The error.
        #[source]
        source: Box<kube_sim::ApiError>,
    },
    /// kube-sim could not listen again.
    #[error(transparent)]
    Sim(Box<kube_sim::sim::SimError>),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The admin endpoint must listen on loopback.
    #[error("the admin endpoint only listens on loopback, not {0}")]
    NotLoopback(SocketAddr),
}

/// The state of the knobs that persist (the rest act at once).
#[derive(Debug, Default)]
pub struct FaultState {
    /// Workload clusters whose network is cut, by CAPI Cluster `(namespace, name)`.
    network_cut: Mutex<BTreeSet<(String, String)>>,
    /// Nodes made NotReady, by `(namespace, cluster, node)`.
    not_ready: Mutex<BTreeSet<(String, String, String)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Single inserts/removes: the sets stay consistent after a panic.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FaultState {
    /// Whether the network of cluster `namespace/name` is cut.
    pub fn network_cut(&self, namespace: &str, name: &str) -> bool {
        lock(&self.network_cut).contains(&(namespace.to_owned(), name.to_owned()))
    }

    /// Whether Node `node` of cluster `namespace/cluster` was made NotReady.
    pub fn node_not_ready(&self, namespace: &str, cluster: &str, node: &str) -> bool {
        lock(&self.not_ready).contains(&(namespace.to_owned(), cluster.to_owned(), node.to_owned()))
    }
}

/// The network file of the workload cluster whose files live in `cluster_dir`.
pub fn network_file(cluster_dir: &Path) -> PathBuf {
    cluster_dir.join("network")
}

/// Writes `up` or `down` to `path` atomically.
///
/// # Errors
/// If the file cannot be written.
pub fn write_network_file(path: &Path, up: bool) -> Result<(), FaultError> {
    let io = |e| FaultError::Io {
        what: format!("writing {}", path.display()),
        source: e,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, if up { "up\n" } else { "down\n" }).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Sets the Node's `Ready` condition (and the pressure conditions with it) to `status`.
pub(crate) fn set_node_ready_condition(
    handle: &ClusterHandle,
    node: &str,
    status: &str,
    reason: &str,
    message: &str,
) -> Result<bool, kube_sim::ApiError> {
    let api = handle.api();
    let mut obj = api.get_object("v1", "Node", None, node)?;
    obj["apiVersion"] = json!("v1");
    obj["kind"] = json!("Node");
    let now = kube_sim::api_server::now_rfc3339();
    let Some(conds) = obj["status"]["conditions"].as_array_mut() else {
        return Ok(false);
    };
    let mut changed = false;
    for c in conds.iter_mut() {
        let (want, why, msg) = if c["type"] == "Ready" {
            (status, reason, message)
        } else if status == "Unknown" {
            // The node-lifecycle controller marks every kubelet condition Unknown.
            ("Unknown", reason, message)
        } else if c["status"] == "Unknown" {
            // A kubelet posting status again reports its pressure conditions again.
            match c["type"].as_str() {
                Some("MemoryPressure") => (
                    "False",
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available",
                ),
                Some("DiskPressure") => (
                    "False",
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure",
                ),
                Some("PIDPressure") => (
                    "False",
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available",
                ),
                _ => continue,
            }
        } else {
            // Here `status` is not Unknown: a kubelet posting its status is a heartbeat.
            c["lastHeartbeatTime"] = json!(now);
            continue;
        };
        if c["status"] != want {
            c["status"] = json!(want);
            c["lastTransitionTime"] = json!(now);
            c["reason"] = json!(why);
            c["message"] = json!(msg);
            changed = true;
        }
        if status != "Unknown" {
            // A kubelet posting its status is a heartbeat.
            c["lastHeartbeatTime"] = json!(now);
        }
    }
    if changed || status != "Unknown" {
        api.update_object_status(obj)?;
    }
    Ok(changed)
}

impl FaultState {
    /// Forgets the knobs of a workload cluster that is gone.
    pub(crate) fn forget_cluster(&self, namespace: &str, name: &str) {
        lock(&self.network_cut).remove(&(namespace.to_owned(), name.to_owned()));
        lock(&self.not_ready).retain(|(n, c, _)| !(n == namespace && c == name));
    }
}

impl World {
    /// The knobs' state.
    pub fn faults(&self) -> &FaultState {
        &self.faults
    }

    fn workload(&self, namespace: &str, name: &str) -> Result<ClusterHandle, FaultError> {
        self.workload_cluster(namespace, name)
            .ok_or_else(|| FaultError::UnknownCluster {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
    }

    /// Fault knob: the next `count` VM clones of cluster `namespace/cluster` fail.
    pub fn fail_next_clones(&self, namespace: &str, cluster: &str, count: u32) {
        info!(cluster = %format!("{namespace}/{cluster}"), count, "fault: failing the next clones");
        self.vcenter().fail_next_clones(namespace, cluster, count);
    }

    /// Fault knob: Node `node` of cluster `namespace/cluster` reports `Ready=False` and stops
    /// posting heartbeats (it becomes `Unknown` after the node-monitor grace period).
    ///
    /// # Errors
    /// If the cluster or the Node does not exist.
    pub fn set_node_not_ready(
        &self,
        namespace: &str,
        cluster: &str,
        node: &str,
    ) -> Result<(), FaultError> {
        let handle = self.workload(namespace, cluster)?;
        lock(&self.faults.not_ready).insert((
            namespace.to_owned(),
            cluster.to_owned(),
            node.to_owned(),
        ));
        info!(cluster = %format!("{namespace}/{cluster}"), node, "fault: node NotReady");
        self.write_node_condition(
            &handle,
            namespace,
            cluster,
            node,
            (
                "False",
                "KubeletNotReady",
                "simulated fault: the kubelet reports NotReady",
            ),
        )
    }

    /// Fault knob: undoes [`World::set_node_not_ready`]: heartbeats resume, `Ready=True`.
    ///
    /// # Errors
    /// If the cluster or the Node does not exist.
    pub fn set_node_ready(
        &self,
        namespace: &str,
        cluster: &str,
        node: &str,
    ) -> Result<(), FaultError> {
        let handle = self.workload(namespace, cluster)?;
        lock(&self.faults.not_ready).remove(&(
            namespace.to_owned(),
            cluster.to_owned(),
            node.to_owned(),
        ));
        info!(cluster = %format!("{namespace}/{cluster}"), node, "fault: node Ready again");
        self.write_node_condition(
            &handle,
            namespace,
            cluster,
            node,
            ("True", "KubeletReady", "kubelet is posting ready status"),
        )
    }

    fn write_node_condition(
        &self,
        handle: &ClusterHandle,
        namespace: &str,
        cluster: &str,
        node: &str,
        (status, reason, message): (&str, &str, &str),
    ) -> Result<(), FaultError> {
        // Conflicts with the heartbeat writer are expected: re-read and retry.
        let mut attempts = 0;
        loop {
            attempts += 1;
            match set_node_ready_condition(handle, node, status, reason, message) {
                Ok(_) => return Ok(()),
                Err(e) if e.is_conflict() && attempts < 10 => {}
                Err(e) if e.is_not_found() => {
                    return Err(FaultError::UnknownNode {
                        namespace: namespace.to_owned(),
                        cluster: cluster.to_owned(),
                        node: node.to_owned(),
                    });
                }
                Err(e) => {
                    return Err(FaultError::Api {
                        what: format!("updating Node {node}"),
                        source: Box::new(e),
                    });
                }
            }
        }
    }

    /// Fault knob: the VM of Node `node` of cluster `namespace/cluster` disappears from the
    /// simulated vCenter. Its Node stops posting status; the Machine stays until remediated.
    ///
    /// # Errors
    /// If no such VM exists.
    pub fn delete_node_vm(
        &self,
        namespace: &str,
        cluster: &str,
        node: &str,
    ) -> Result<(), FaultError> {
        let owned = self.vcenter().vms_snapshot().iter().any(|vm| {
            vm.spec.namespace == namespace && vm.spec.cluster == cluster && vm.spec.name == node
        });
        if !owned || !self.vcenter().lose(namespace, node) {
            return Err(FaultError::UnknownNode {
                namespace: namespace.to_owned(),
                cluster: cluster.to_owned(),
                node: node.to_owned(),
            });
        }
        info!(cluster = %format!("{namespace}/{cluster}"), node, "fault: VM deleted");
        Ok(())
    }

    /// Fault knob: the workload cluster's API stops serving (connections refused).
    ///
    /// # Errors
    /// If the cluster does not exist.
    pub async fn stop_api(&self, namespace: &str, name: &str) -> Result<(), FaultError> {
        let handle = self.workload(namespace, name)?;
        info!(cluster = %format!("{namespace}/{name}"), "fault: API stopped");
        handle.stop_serving().await;
        Ok(())
    }

    /// Fault knob: the workload cluster's API serves again on the same port.
    ///
    /// # Errors
    /// If the cluster does not exist or the port cannot be bound again.
    pub async fn start_api(&self, namespace: &str, name: &str) -> Result<(), FaultError> {
        let handle = self.workload(namespace, name)?;
        info!(cluster = %format!("{namespace}/{name}"), "fault: API started");
        handle
            .start_serving()
            .await
            .map_err(|e| FaultError::Sim(Box::new(e)))
    }

    /// The network file of workload cluster `namespace/name` (see the module docs).
    pub fn network_file(&self, namespace: &str, name: &str) -> PathBuf {
        network_file(&self.cluster_dir(namespace, name))
    }

    /// Fault knob: cuts the workload cluster's outbound network to the manager.
    ///
    /// # Errors
    /// If the cluster does not exist or its network file cannot be written.
    pub fn cut_network(&self, namespace: &str, name: &str) -> Result<(), FaultError> {
        self.set_network(namespace, name, false)
    }

    /// Fault knob: restores the workload cluster's outbound network.
    ///
    /// # Errors
    /// If the cluster does not exist or its network file cannot be written.
    pub fn restore_network(&self, namespace: &str, name: &str) -> Result<(), FaultError> {
        self.set_network(namespace, name, true)
    }

    fn set_network(&self, namespace: &str, name: &str, up: bool) -> Result<(), FaultError> {
        self.workload(namespace, name)?;
        let key = (namespace.to_owned(), name.to_owned());
        if up {
            lock(&self.faults.network_cut).remove(&key);
        } else {
            lock(&self.faults.network_cut).insert(key);
        }
        info!(cluster = %format!("{namespace}/{name}"), up, "fault: network");
        write_network_file(&self.network_file(namespace, name), up)
    }

    /// Fault knob: kills the agent processes of Pod `pod_namespace/pod` in workload cluster
    /// `namespace/name`; returns how many were killed.
    ///
    /// # Errors
    /// If the cluster does not exist.
    pub fn kill_agent(
        &self,
        namespace: &str,
        name: &str,
        pod_namespace: &str,
        pod: &str,
    ) -> Result<usize, FaultError> {
        let handle = self.workload(namespace, name)?;
        Ok(self
            .agents()
            .kill_agent_in(handle.name(), pod_namespace, pod))
    }
}

/// The admin endpoint: the fault knobs over HTTP on localhost.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl AdminServer {
    /// Listens on `addr` (loopback only) and serves the routes of the module docs.
    ///
    /// # Errors
    /// If `addr` is not a loopback address or cannot be bound.
    pub async fn bind(world: Arc<World>, addr: SocketAddr) -> Result<AdminServer, FaultError> {
        if !addr.ip().is_loopback() {
            return Err(FaultError::NotLoopback(addr));
        }
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| FaultError::Io {
                what: format!("binding the admin endpoint to {addr}"),
                source: e,
            })?;
        let addr = listener.local_addr().map_err(|e| FaultError::Io {
            what: "reading the admin endpoint's address".into(),
            source: e,
        })?;
        let (stop, mut stop_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop_rx.changed() => return,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "admin endpoint: accept failed");
                        continue;
                    }
                };
                let world = world.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(world.clone(), req));
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await
                    {
                        debug!(%peer, error = %e, "admin connection ended");
                    }
                });
            }
        });
        info!(%addr, "Admin endpoint listening");
        Ok(AdminServer { addr, stop, task })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
    }
}

fn reply(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_reply(e: &FaultError) -> Response<Full<Bytes>> {
    let status = match e {
        FaultError::UnknownCluster { .. } | FaultError::UnknownNode { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    reply(status, &json!({"error": e.to_string()}))
}

async fn handle(
    world: Arc<World>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return Ok(reply(
                StatusCode::BAD_REQUEST,
                &json!({"error": format!("reading the body: {e}")}),
            ));
        }
    };
    info!(%method, %path, "admin request");
    Ok(route(&world, &method, &path, &body).await)
}

async fn route(
    world: &Arc<World>,
    method: &Method,
    path: &str,
    body: &[u8],
) -> Response<Full<Bytes>> {
    let ok = |r: Result<(), FaultError>| match r {
        Ok(()) => reply(StatusCode::OK, &json!({"ok": true})),
        Err(e) => error_reply(&e),
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["healthz"]) => reply(StatusCode::OK, &json!({"ok": true})),
        ("GET", ["v1", "clusters"]) => {
            let mut out = Vec::new();
            for ((ns, name), handle) in world.workload_clusters() {
                out.push(json!({
                    "namespace": ns,
                    "name": name,
                    "serving": handle.is_serving().await,
                    "network": if world.faults().network_cut(&ns, &name) { "down" } else { "up" },
                }));
            }
            reply(StatusCode::OK, &json!({"clusters": out}))
        }
        ("POST", ["v1", "helm", "charts", chart, "fail"]) => {
            world.fail_helm_chart(chart);
            reply(StatusCode::OK, &json!({"ok": true}))
        }
        ("POST", ["v1", "helm", "charts", chart, "heal"]) => {
            world.heal_helm_chart(chart);
            reply(StatusCode::OK, &json!({"ok": true}))
        }
        ("POST", ["v1", "clusters", ns, name, rest @ ..]) => match rest {
            ["fail-clones"] => {
                let count = serde_json::from_slice::<Value>(body)
                    .ok()
                    .and_then(|v| v["count"].as_u64())
                    .and_then(|c| u32::try_from(c).ok());
                match count {
                    Some(c) => {
                        world.fail_next_clones(ns, name, c);
                        reply(StatusCode::OK, &json!({"ok": true}))
                    }
                    None => reply(
                        StatusCode::BAD_REQUEST,
                        &json!({"error": "expected a body {\"count\": N}"}),
                    ),
                }
            }
            ["nodes", node, "not-ready"] => ok(world.set_node_not_ready(ns, name, node)),
            ["nodes", node, "ready"] => ok(world.set_node_ready(ns, name, node)),
            ["nodes", node, "delete-vm"] => ok(world.delete_node_vm(ns, name, node)),
            ["api", "stop"] => ok(world.stop_api(ns, name).await),
            ["api", "start"] => ok(world.start_api(ns, name).await),
            ["network", "cut"] => ok(world.cut_network(ns, name)),
            ["network", "restore"] => ok(world.restore_network(ns, name)),
            ["agents", pod_ns, pod, "kill"] => match world.kill_agent(ns, name, pod_ns, pod) {
                Ok(killed) => reply(StatusCode::OK, &json!({"ok": true, "killed": killed})),
                Err(e) => error_reply(&e),
            },
            _ => reply(
                StatusCode::NOT_FOUND,
                &json!({"error": format!("no route {method} {path}")}),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            &json!({"error": format!("no route {method} {path}")}),
        ),
    }
}
