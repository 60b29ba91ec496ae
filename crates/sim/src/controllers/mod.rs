//! The simulated Cluster API and vSphere controllers, and the per-cluster host that runs them
//! only while the matching provider's Deployment is available in that cluster.
//!
//! Every controller works level-triggered through the in-process [`ApiServer`] object API: a
//! *pass* reconciles every object of the kinds whose provider is available, writing only what
//! changed, so passes converge. A pass runs after any watched object changes (debounced by the
//! pass itself), when a simulated delay ends, on a periodic resync, and when the world pokes
//! (a VM's kubelet registered a Node in another cluster). Errors, including 409 conflicts, are
//! logged and retried by the next pass.

pub mod cluster;
pub mod helmrelease;
pub mod kcp;
pub mod kubeadm_config;
pub mod machine;
pub mod machinedeployment;
pub mod machineset;
pub mod mhc;
pub mod vsphere;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use kube_sim::api_server::{DeleteOptions, ListOptions, WatchOptions};
use kube_sim::sim::ClusterHandle;
use kube_sim::{ApiError, ApiServer};
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tracing::{Instrument as _, debug, info, info_span, warn};

use crate::providers::{self, Provider, ProviderSet};
use crate::world::World;

/// `cluster.x-k8s.io/v1beta2`.
pub const CAPI: &str = "cluster.x-k8s.io/v1beta2";
/// `controlplane.cluster.x-k8s.io/v1beta2`.
pub const CONTROLPLANE: &str = "controlplane.cluster.x-k8s.io/v1beta2";
/// `bootstrap.cluster.x-k8s.io/v1beta2`.
pub const BOOTSTRAP: &str = "bootstrap.cluster.x-k8s.io/v1beta2";
/// `infrastructure.cluster.x-k8s.io/v1beta2`.
pub const INFRA: &str = "infrastructure.cluster.x-k8s.io/v1beta2";
/// The label naming an object's CAPI Cluster.
pub const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";
/// The annotation that pauses reconciliation of one object.
pub const PAUSED_ANNOTATION: &str = "cluster.x-k8s.io/paused";
/// The label marking control-plane Machines.
pub const CONTROL_PLANE_LABEL: &str = "cluster.x-k8s.io/control-plane";
/// The label naming a control-plane Machine's KubeadmControlPlane.
pub const CONTROL_PLANE_NAME_LABEL: &str = "cluster.x-k8s.io/control-plane-name";

/// What a reconciler sees: the world, the cluster it runs in, and when to come back.
pub struct Ctx<'a> {
    /// The world (vCenter, workload clusters, speed).
    pub world: &'a Arc<World>,
    /// The API of the cluster these controllers run in.
    pub api: &'a ApiServer,
    /// The kube-sim name of that cluster.
    pub host: &'a str,
    next: Cell<Option<Instant>>,
    /// Clusters read during this pass, by `namespace/name`.
    clusters: BTreeMap<(String, String), Value>,
}

impl Ctx<'_> {
    /// Asks for another pass no later than `at`.
    pub fn requeue_at(&self, at: Instant) {
        self.next
            .set(Some(self.next.get().map_or(at, |n: Instant| n.min(at))));
    }

    /// Asks for another pass after the realistic duration `after` (scaled by the speed).
    pub fn requeue_after(&self, after: Duration) {
        self.requeue_at(Instant::now() + self.world.speed().delay(after));
    }

    /// The CAPI Cluster `namespace/name`, as read at the start of this pass.
    pub fn cluster(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.clusters.get(&(namespace.to_owned(), name.to_owned()))
    }

    /// Whether reconciliation of `obj` is paused: its Cluster has `spec.paused` or the object
    /// carries the paused annotation.
    pub fn paused(&self, obj: &Value) -> bool {
        if !obj["metadata"]["annotations"][PAUSED_ANNOTATION].is_null() {
            return true;
        }
        if obj["kind"] == "Cluster" {
            return obj["spec"]["paused"] == true;
        }
        let Some(cluster) = cluster_name_of(obj) else {
            return false;
        };
        match self.cluster(ns(obj), cluster) {
            Some(c) => c["spec"]["paused"] == true,
            // Created after this pass read its Clusters: read it now rather than reconcile an
            // object whose Cluster may be paused.
            None => self
                .api
                .get_object(CAPI, "Cluster", Some(ns(obj)), cluster)
                .is_ok_and(|c| c["spec"]["paused"] == true),
        }
    }
}

/// Result of reconcilers.
pub type Result<T = ()> = std::result::Result<T, ApiError>;

// ----- small JSON helpers -----

/// `metadata.name`.
pub fn name(o: &Value) -> &str {
    o["metadata"]["name"].as_str().unwrap_or_default()
}

/// `metadata.namespace`.
pub fn ns(o: &Value) -> &str {
    o["metadata"]["namespace"].as_str().unwrap_or_default()
}

/// The object's CAPI Cluster name (label, or `spec.clusterName`).
pub fn cluster_name_of(o: &Value) -> Option<&str> {
    o["metadata"]["labels"][CLUSTER_NAME_LABEL]
        .as_str()
        .or_else(|| o["spec"]["clusterName"].as_str())
}

/// Whether the object is being deleted.
pub fn deleting(o: &Value) -> bool {
    !o["metadata"]["deletionTimestamp"].is_null()
}

/// An owner reference to `o`.
pub fn owner_ref(o: &Value, controller: bool) -> Value {
    json!({
        "apiVersion": o["apiVersion"],
        "kind": o["kind"],
        "name": o["metadata"]["name"],
        "uid": o["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": true,
    })
}

/// The owner of kind `kind`, if any.
pub fn owner_of_kind<'a>(o: &'a Value, kind: &str) -> Option<&'a Value> {
    o["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["kind"] == kind)
}

/// Lists objects, all namespaces (`None`) or one; an unknown kind lists as empty.
pub fn list(api: &ApiServer, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
    list_selected(api, api_version, kind, namespace, None)
}

/// Lists objects matching a label selector.
pub fn list_selected(
    api: &ApiServer,
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    selector: Option<String>,
) -> Vec<Value> {
    let opts = ListOptions {
        label_selector: selector,
        ..ListOptions::default()
    };
    match api.list_objects(api_version, kind, namespace, &opts) {
        Ok(mut l) => match l["items"].take() {
            Value::Array(items) => items
                .into_iter()
                .map(|mut i| {
                    // Items of a list omit apiVersion/kind; writes need them.
                    i["apiVersion"] = json!(api_version);
                    i["kind"] = json!(kind);
                    i
                })
                .collect(),
            _ => Vec::new(),
        },
        Err(_) => Vec::new(),
    }
}

/// Gets an object; `None` if it does not exist.
pub fn get(
    api: &ApiServer,
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Option<Value>> {
    match api.get_object(
        api_version,
        kind,
        Some(namespace).filter(|n| !n.is_empty()),
        name,
    ) {
        Ok(mut o) => {
            o["apiVersion"] = json!(api_version);
            o["kind"] = json!(kind);
            Ok(Some(o))
        }
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Deletes an object (background propagation); a missing object is fine.
pub fn delete(
    api: &ApiServer,
    api_version: &str,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result {
    match api.delete_object(
        api_version,
        kind,
        Some(namespace).filter(|n| !n.is_empty()),
        name,
        &DeleteOptions::default(),
    ) {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Adds `finalizer` if missing; returns the stored object.
pub fn ensure_finalizer(api: &ApiServer, o: &Value, finalizer: &str) -> Result<Value> {
    let has = o["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == finalizer));
    if has {
        return Ok(o.clone());
    }
    let mut o = o.clone();
    match o["metadata"]["finalizers"].as_array_mut() {
        Some(f) => f.push(json!(finalizer)),
        None => o["metadata"]["finalizers"] = json!([finalizer]),
    }
    api.update_object(o)
}

/// Removes `finalizer` if present.
pub fn remove_finalizer(api: &ApiServer, o: &Value, finalizer: &str) -> Result {
    let mut o = o.clone();
    if let Some(f) = o["metadata"]["finalizers"].as_array_mut() {
        let before = f.len();
        f.retain(|x| x != finalizer);
        if f.len() != before {
            match api.update_object(o) {
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// One v1beta2 condition.
#[derive(Debug, Clone)]
pub struct Cond {
    /// `type`.
    pub type_: &'static str,
    /// `True`, `False` or `Unknown`.
    pub status: &'static str,
    /// `reason`.
    pub reason: String,
    /// `message`.
    pub message: String,
}

impl Cond {
    /// A condition that is `True` when `ok`, else `False`.
    pub fn new(type_: &'static str, ok: bool, reason: &str, message: impl Into<String>) -> Self {
        Cond {
            type_,
            status: if ok { "True" } else { "False" },
            reason: reason.to_owned(),
            message: message.into(),
        }
    }
}

/// Writes `conds` into `status.conditions`, keeping `lastTransitionTime` of conditions whose
/// status did not change (as upstream's condition setters do).
pub fn set_conditions(status: &mut Value, old_status: &Value, generation: &Value, conds: &[Cond]) {
    let now = kube_sim::api_server::now_rfc3339();
    let old: Vec<Value> = old_status["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let out: Vec<Value> = conds
        .iter()
        .map(|c| {
            let prev = old.iter().find(|o| o["type"] == c.type_);
            let ltt = prev
                .filter(|p| p["status"] == c.status)
                .map(|p| p["lastTransitionTime"].clone())
                .unwrap_or_else(|| json!(now));
            json!({
                "type": c.type_,
                "status": c.status,
                "observedGeneration": generation,
                "lastTransitionTime": ltt,
                "reason": c.reason,
                "message": c.message,
            })
        })
        .collect();
    status["conditions"] = json!(out);
}

/// The status of condition `type_` (`None` if absent).
pub fn condition<'a>(o: &'a Value, type_: &str) -> Option<&'a str> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["status"]
        .as_str()
}

/// Replaces `o`'s status with `status` if it differs.
pub fn write_status(api: &ApiServer, o: &Value, status: Value) -> Result {
    if o["status"] == status {
        return Ok(());
    }
    let mut o = o.clone();
    o["status"] = status;
    match api.update_object_status(o) {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// A random lowercase suffix of `n` characters, as generateName adds.
pub fn random_suffix(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(n)
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

fn log_err(controller: &str, o: &Value, r: Result) {
    if let Err(e) = r {
        // Conflicts are normal with concurrent writers; the next pass re-reads.
        if e.is_conflict() {
            debug!(controller, object = %format!("{}/{}", ns(o), name(o)), error = %e, "Conflict, retrying");
        } else {
            warn!(controller, object = %format!("{}/{}", ns(o), name(o)), error = %e, "Reconcile failed");
        }
    }
}

/// One reconcile pass over every object whose provider is in `providers`; returns when the
/// next pass is due at the latest (a pending simulated delay), if any.
pub fn pass(
    world: &Arc<World>,
    api: &ApiServer,
    host: &str,
    providers: &ProviderSet,
) -> Option<Instant> {
    let clusters = list(api, CAPI, "Cluster", None)
        .into_iter()
        .map(|c| ((ns(&c).to_owned(), name(&c).to_owned()), c))
        .collect();
    let ctx = Ctx {
        world,
        api,
        host,
        next: Cell::new(None),
        clusters,
    };
    let had_error = Cell::new(false);
    let run =
        |controller: &str, kind_api: &str, kind: &str, f: &dyn Fn(&Ctx<'_>, &Value) -> Result| {
            // Every log line of a controller carries its name next to the host's `cluster`.
            let _span = tracing::info_span!("controller", controller).entered();
            for o in list(api, kind_api, kind, None) {
                let r = f(&ctx, &o);
                if r.is_err() {
                    had_error.set(true);
                }
                log_err(controller, &o, r);
            }
        };
    if providers.contains(&Provider::Vsphere) {
        run(
            "vspherecluster",
            INFRA,
            "VSphereCluster",
            &vsphere::reconcile_cluster,
        );
        run(
            "vspheremachine",
            INFRA,
            "VSphereMachine",
            &vsphere::reconcile_machine,
        );
        run("vspherevm", INFRA, "VSphereVM", &vsphere::reconcile_vm);
    }
    if providers.contains(&Provider::KubeadmBootstrap) {
        run(
            "kubeadmconfig",
            BOOTSTRAP,
            "KubeadmConfig",
            &kubeadm_config::reconcile,
        );
    }
    if providers.contains(&Provider::KubeadmControlPlane) {
        run(
            "kubeadmcontrolplane",
            CONTROLPLANE,
            "KubeadmControlPlane",
            &kcp::reconcile,
        );
    }
    if providers.contains(&Provider::Core) {
        run(
            "machinedeployment",
            CAPI,
            "MachineDeployment",
            &machinedeployment::reconcile,
        );
        run("machineset", CAPI, "MachineSet", &machineset::reconcile);
        run("machine", CAPI, "Machine", &machine::reconcile);
        run(
            "machinehealthcheck",
            CAPI,
            "MachineHealthCheck",
            &mhc::reconcile,
        );
        run("cluster", CAPI, "Cluster", &cluster::reconcile);
    }
    if providers.contains(&Provider::FluxHelm) {
        // Flux's source-controller ships with the helm-controller here.
        for kind in ["HelmRepository", "OCIRepository"] {
            run(
                "source",
                helmrelease::SOURCE,
                kind,
                &helmrelease::reconcile_source,
            );
        }
        run(
            "helmrelease",
            helmrelease::HELM,
            "HelmRelease",
            &helmrelease::reconcile_release,
        );
    }
    if had_error.get() {
        ctx.requeue_after(Duration::from_secs(5));
    }
    ctx.next.get()
}

/// Kinds whose changes trigger a pass.
const WATCHED: &[(&str, &str)] = &[
    ("apps/v1", "Deployment"),
    ("v1", "Secret"),
    (CAPI, "Cluster"),
    (CAPI, "Machine"),
    (CAPI, "MachineSet"),
    (CAPI, "MachineDeployment"),
    (CAPI, "MachineHealthCheck"),
    (helmrelease::HELM, "HelmRelease"),
    (helmrelease::SOURCE, "HelmRepository"),
    (helmrelease::SOURCE, "OCIRepository"),
    (CONTROLPLANE, "KubeadmControlPlane"),
    (BOOTSTRAP, "KubeadmConfig"),
    (INFRA, "VSphereCluster"),
    (INFRA, "VSphereMachine"),
    (INFRA, "VSphereVM"),
];

/// The controller host of one cluster: observes which providers are available there and runs
/// their controllers while they are, until `shutdown` turns true.
pub async fn run_host(
    world: Arc<World>,
    cluster: ClusterHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    let api = cluster.api();
    let host = cluster.name().to_owned();
    let wake = Arc::new(Notify::new());
    let resync = world
        .speed()
        .delay(Duration::from_secs(10))
        .clamp(Duration::from_millis(50), Duration::from_secs(10));
    let mut watchers = Vec::new();
    for (api_version, kind) in WATCHED {
        let (api, wake, mut shutdown) = (api.clone(), wake.clone(), shutdown.clone());
        watchers.push(tokio::spawn(async move {
            loop {
                if *shutdown.borrow() {
                    return;
                }
                if let Ok(mut stream) =
                    api.watch_objects(api_version, kind, None, &WatchOptions::default())
                {
                    loop {
                        tokio::select! {
                            ev = stream.next() => match ev {
                                Some(_) => wake.notify_one(),
                                None => break,
                            },
                            _ = shutdown.changed() => return,
                        }
                    }
                }
                // The kind may not be installed yet (CRDs come with the providers).
                tokio::select! {
                    () = tokio::time::sleep(resync) => {}
                    _ = shutdown.changed() => return,
                }
            }
        }));
    }
    let mut running = ProviderSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let providers = providers::observe(&api);
        if providers != running {
            let started: Vec<_> = providers.difference(&running).collect();
            let stopped: Vec<_> = running.difference(&providers).collect();
            info!(cluster = %host, ?started, ?stopped, "Provider controllers changed");
            running = providers;
        }
        world.set_running_providers(&host, running.clone());
        let next = if running.is_empty() {
            None
        } else {
            let span = info_span!("pass", cluster = %host);
            span.in_scope(|| pass(&world, &api, &host, &running))
        };
        let deadline = next
            .map_or(Instant::now() + resync, |n| n.min(Instant::now() + resync))
            .max(Instant::now() + Duration::from_millis(5));
        tokio::select! {
            () = wake.notified() => {}
            () = world.poked() => {}
            () = tokio::time::sleep_until(deadline.into()) => {}
            _ = shutdown.changed() => {}
        }
    }
    for w in watchers {
        w.abort();
    }
    info!(cluster = %host, "Controller host stopped");
}

/// Spawns [`run_host`] in a span naming the cluster.
pub fn spawn_host(
    world: Arc<World>,
    cluster: ClusterHandle,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let span = info_span!("controllers", cluster = %cluster.name());
    tokio::spawn(run_host(world, cluster, shutdown).instrument(span))
}
