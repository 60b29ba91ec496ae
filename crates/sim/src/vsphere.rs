//! The simulated vCenter: virtual machines with clone and boot delays, and a fault knob that
//! fails the next clones of a cluster.
//!
//! VMs are keyed by the namespace and name of their `VSphereVM` object, which `clusterctl move`
//! keeps, so a VM survives a pivot of its CAPI objects to another cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::clock::Speed;

/// How long cloning a VM from its template takes in real life.
pub const CLONE_TIME: Duration = Duration::from_secs(40);
/// How long a cloned VM takes from power-on until its kubelet registers.
pub const BOOT_TIME: Duration = Duration::from_secs(50);

/// What the world needs to know about a VM to turn it into a Kubernetes node.
#[derive(Debug, Clone, PartialEq)]
pub struct VmSpec {
    /// Namespace of the `VSphereVM` (and of its CAPI Cluster).
    pub namespace: String,
    /// Name of the `VSphereVM`; also the VM's hostname and Node name.
    pub name: String,
    /// The CAPI Cluster's name.
    pub cluster: String,
    /// The kube-sim cluster holding the CAPI objects that asked for the VM (where the world
    /// writes the workload cluster's Secrets when this VM initializes it).
    pub host: String,
    /// Whether the bootstrap data runs `kubeadm init` (the first control-plane machine).
    pub init: bool,
    /// Whether the machine is a control-plane machine.
    pub control_plane: bool,
    /// Kubernetes version of the kubelet.
    pub version: String,
    /// The Node's taints.
    pub taints: Vec<serde_json::Value>,
    /// vCPUs.
    pub cpus: u64,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Disk in GiB.
    pub disk_gib: u64,
}

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmPhase {
    /// The clone task runs.
    Cloning,
    /// Powered on, the OS and kubelet are starting.
    Booting,
    /// Powered on and booted.
    Running,
}

/// A VM as observed by a controller.
#[derive(Debug, Clone, PartialEq)]
pub struct VmStatus {
    /// The BIOS UUID (what `providerID: vsphere://<uuid>` names).
    pub uuid: String,
    /// The VM's IP address.
    pub ip: String,
    /// Its phase now.
    pub phase: VmPhase,
    /// When it reaches the next phase (`None` once running).
    pub next_change: Option<Instant>,
}

/// A VM held by the simulated vCenter.
#[derive(Debug, Clone)]
pub struct Vm {
    /// Its spec.
    pub spec: VmSpec,
    /// The BIOS UUID.
    pub uuid: String,
    /// Its IP address.
    pub ip: String,
    clone_done: Instant,
    boot_done: Instant,
    /// Whether its kubelet registered its Node.
    pub registered: bool,
}

impl Vm {
    fn status(&self, now: Instant) -> VmStatus {
        let (phase, next_change) = if now < self.clone_done {
            (VmPhase::Cloning, Some(self.clone_done))
        } else if now < self.boot_done {
            (VmPhase::Booting, Some(self.boot_done))
        } else {
            (VmPhase::Running, None)
        };
        VmStatus {
            uuid: self.uuid.clone(),
            ip: self.ip.clone(),
            phase,
            next_change,
        }
    }
}

/// Errors of vCenter operations.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum VsphereError {
    /// A clone failed (fault knob).
    #[error("clone of VM {namespace}/{name} failed: simulated vCenter fault")]
    CloneFailed {
        /// The VM's namespace.
        namespace: String,
        /// The VM's name.
        name: String,
    },
    /// The VM was provisioned and then disappeared (fault knob): CAPV does not clone it again.
    #[error("VM {namespace}/{name} not found in vCenter: it was deleted out of band")]
    NotFound {
        /// The VM's namespace.
        namespace: String,
        /// The VM's name.
        name: String,
    },
}

/// The simulated vCenter shared by every cluster of the world.
#[derive(Debug)]
pub struct VCenter {
    speed: Speed,
    vms: Mutex<BTreeMap<(String, String), Vm>>,
    /// Clones still to fail, by `namespace/cluster`.
    failing_clones: Mutex<HashMap<String, u32>>,
    /// VMs deleted out of band (fault knob), by `(namespace, name)`: gone for good.
    lost: Mutex<BTreeMap<(String, String), Vm>>,
    next_ip: AtomicU32,
    /// Signalled whenever a VM is created or deleted.
    pub changed: Notify,
}

impl VCenter {
    /// An empty vCenter whose delays run at `speed`.
    pub fn new(speed: Speed) -> Self {
        VCenter {
            speed,
            vms: Mutex::default(),
            failing_clones: Mutex::default(),
            lost: Mutex::default(),
            next_ip: AtomicU32::new(10),
            changed: Notify::new(),
        }
    }

    fn vms(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Vm>> {
        // Every update is a single map operation, so the map stays consistent after a panic.
        self.vms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns the VM of `spec`, starting its clone if it does not exist yet.
    ///
    /// # Errors
    /// [`VsphereError::CloneFailed`] when a fault knob fails this clone.
    pub fn clone_or_get(&self, spec: &VmSpec) -> Result<VmStatus, VsphereError> {
        let now = Instant::now();
        let key = (spec.namespace.clone(), spec.name.clone());
        if let Some(vm) = self.vms().get(&key) {
            return Ok(vm.status(now));
        }
        if self.lost().contains_key(&key) {
            return Err(VsphereError::NotFound {
                namespace: spec.namespace.clone(),
                name: spec.name.clone(),
            });
        }
        {
            let mut failing = self
                .failing_clones
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let cluster_key = format!("{}/{}", spec.namespace, spec.cluster);
            if let Some(n) = failing.get_mut(&cluster_key).filter(|n| **n > 0) {
                *n -= 1;
                return Err(VsphereError::CloneFailed {
                    namespace: spec.namespace.clone(),
                    name: spec.name.clone(),
                });
            }
        }
        let n = self.next_ip.fetch_add(1, Ordering::Relaxed);
        let clone_done = now + self.speed.delay(CLONE_TIME);
        let vm = Vm {
            spec: spec.clone(),
            uuid: uuid::Uuid::new_v4().to_string(),
            ip: format!("10.{}.{}.{}", 100 + (n >> 16), (n >> 8) & 0xff, n & 0xff),
            clone_done,
            boot_done: clone_done + self.speed.delay(BOOT_TIME),
            registered: false,
        };
        let status = vm.status(now);
        self.vms().entry(key).or_insert(vm);
        self.changed.notify_waiters();
        Ok(status)
    }

    /// The VM `namespace/name`, if it exists.
    pub fn get(&self, namespace: &str, name: &str) -> Option<VmStatus> {
        self.vms()
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|vm| vm.status(Instant::now()))
    }

    fn lost(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Vm>> {
        self.lost.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fault knob: the VM `namespace/name` disappears as if someone deleted it in vCenter; it is
    /// not cloned again (until its `VSphereVM` is deleted). Returns whether it existed.
    pub fn lose(&self, namespace: &str, name: &str) -> bool {
        let key = (namespace.to_owned(), name.to_owned());
        let removed = self.vms().remove(&key);
        let existed = removed.is_some();
        if let Some(vm) = removed {
            self.lost().insert(key, vm);
            self.changed.notify_waiters();
        }
        existed
    }

    /// The VMs lost through [`VCenter::lose`] (until their `VSphereVM` is deleted).
    pub fn lost_snapshot(&self) -> Vec<Vm> {
        self.lost().values().cloned().collect()
    }

    /// Destroys the VM `namespace/name`; returns whether it existed.
    pub fn delete(&self, namespace: &str, name: &str) -> bool {
        self.lost().remove(&(namespace.to_owned(), name.to_owned()));
        let existed = self
            .vms()
            .remove(&(namespace.to_owned(), name.to_owned()))
            .is_some();
        if existed {
            self.changed.notify_waiters();
        }
        existed
    }

    /// Fault knob: the next `n` clones of VMs of cluster `namespace/cluster` fail.
    pub fn fail_next_clones(&self, namespace: &str, cluster: &str, n: u32) {
        self.failing_clones
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(format!("{namespace}/{cluster}"), n);
    }

    /// Running VMs whose kubelet has not registered yet, and the earliest time another VM
    /// finishes booting.
    pub fn unregistered_running(&self) -> (Vec<Vm>, Option<Instant>) {
        let now = Instant::now();
        let mut ready = Vec::new();
        let mut next = None::<Instant>;
        for vm in self.vms().values().filter(|vm| !vm.registered) {
            if vm.boot_done <= now {
                ready.push(vm.clone());
            } else {
                next = Some(next.map_or(vm.boot_done, |n| n.min(vm.boot_done)));
            }
        }
        (ready, next)
    }

    /// Records that the kubelet of VM `namespace/name` registered its Node.
    pub fn mark_registered(&self, namespace: &str, name: &str) {
        if let Some(vm) = self.vms().get_mut(&(namespace.to_owned(), name.to_owned())) {
            vm.registered = true;
        }
    }

    /// Every VM, for inspection.
    pub fn vms_snapshot(&self) -> Vec<Vm> {
        self.vms().values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> VmSpec {
        VmSpec {
            namespace: "ns".into(),
            name: name.into(),
            cluster: "c".into(),
            host: "management".into(),
            init: false,
            control_plane: false,
            version: "v1.32.4".into(),
            taints: Vec::new(),
            cpus: 2,
            memory_mib: 4096,
            disk_gib: 40,
        }
    }

    #[test]
    fn clone_is_idempotent_and_faults_fail_clones() {
        let vc = VCenter::new(Speed(1.0));
        vc.fail_next_clones("ns", "c", 1);
        assert!(vc.clone_or_get(&spec("a")).is_err());
        let first = vc.clone_or_get(&spec("a")).unwrap();
        assert_eq!(first.phase, VmPhase::Cloning);
        let again = vc.clone_or_get(&spec("a")).unwrap();
        assert_eq!(first.uuid, again.uuid);
        assert!(vc.delete("ns", "a"));
        assert!(vc.get("ns", "a").is_none());
    }
}
