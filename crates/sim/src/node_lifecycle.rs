//! Node heartbeats and the node-lifecycle controller.
//!
//! The world plays each VM's kubelet: while a registered VM runs (and no fault made its Node
//! NotReady), its Node's conditions get a fresh `lastHeartbeatTime` every
//! [`HEARTBEAT_INTERVAL`] (realistic, divided by the speed; at least [`MIN_HEARTBEAT_WRITE`]
//! of wall time apart, so that a fast world does not spend itself on heartbeat writes). When the
//! VM is gone or the Node is faulted, heartbeats stop, and after [`NODE_MONITOR_GRACE_PERIOD`]
//! (scaled) the Node's conditions become `Unknown` with reason `NodeStatusUnknown`, as
//! kube-controller-manager's node-lifecycle controller does. Silence is judged from the world's
//! own record of the last heartbeat, not from the written timestamps.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::{debug, info};

use crate::faults::set_node_ready_condition;
use crate::world::World;

/// How often a kubelet posts its status (`nodeStatusUpdateFrequency`): 10 s.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);
/// How long a Node may stay silent before it is `Unknown` (`node-monitor-grace-period`): 40 s.
pub const NODE_MONITOR_GRACE_PERIOD: Duration = Duration::from_secs(40);
/// The shortest wall-clock time between two heartbeat writes of one Node.
pub const MIN_HEARTBEAT_WRITE: Duration = Duration::from_secs(2);

/// The Node of VM `name` in cluster `namespace/cluster`.
type NodeKey = (String, String, String);

#[derive(Debug)]
struct Track {
    /// The last heartbeat written.
    last_write: Instant,
    /// When heartbeats stopped (`None` while they flow).
    silent_since: Option<Instant>,
    /// Whether the Node was marked `Unknown` since heartbeats stopped.
    unknown: bool,
}

/// Runs heartbeats and the `Unknown` transition until `shutdown` turns true.
pub async fn run(world: Arc<World>, mut shutdown: watch::Receiver<bool>) {
    let speed = world.speed();
    let grace = speed.delay(NODE_MONITOR_GRACE_PERIOD);
    let beat = speed.delay(HEARTBEAT_INTERVAL).max(MIN_HEARTBEAT_WRITE);
    let tick = (grace / 4).clamp(Duration::from_millis(10), Duration::from_secs(5));
    let mut tracked: HashMap<NodeKey, Track> = HashMap::new();
    loop {
        let now = Instant::now();
        let mut alive = HashMap::new();
        // A lost VM's Node is silent even if this loop never saw it alive.
        for vm in world.vcenter().lost_snapshot() {
            if vm.registered {
                alive.insert(
                    (
                        vm.spec.namespace.clone(),
                        vm.spec.cluster.clone(),
                        vm.spec.name.clone(),
                    ),
                    false,
                );
            }
        }
        for vm in world.vcenter().vms_snapshot() {
            if vm.registered {
                let key = (
                    vm.spec.namespace.clone(),
                    vm.spec.cluster.clone(),
                    vm.spec.name.clone(),
                );
                let faulted = world.faults().node_not_ready(&key.0, &key.1, &key.2);
                alive.insert(key, !faulted);
            }
        }
        for (key, up) in &alive {
            tracked.entry(key.clone()).or_insert(Track {
                last_write: now,
                silent_since: (!up).then_some(now),
                unknown: false,
            });
        }
        let mut gone = Vec::new();
        for (key, track) in &mut tracked {
            let (namespace, cluster, node) = key;
            let Some(handle) = world.workload_cluster(namespace, cluster) else {
                gone.push(key.clone());
                continue;
            };
            // Re-read the fault knob: it may have been turned since the snapshot above.
            if alive.get(key).copied().unwrap_or(false)
                && !world.faults().node_not_ready(namespace, cluster, node)
            {
                let resumed = track.silent_since.take().is_some();
                if resumed || now.duration_since(track.last_write) >= beat {
                    match set_node_ready_condition(
                        &handle,
                        node,
                        "True",
                        "KubeletReady",
                        "kubelet is posting ready status",
                    ) {
                        Ok(_) => {
                            track.last_write = now;
                            track.unknown = false;
                        }
                        Err(e) if e.is_not_found() => gone.push(key.clone()),
                        // Conflicts: the next tick retries.
                        Err(e) => debug!(node, error = %e, "heartbeat failed"),
                    }
                }
                continue;
            }
            let since = *track.silent_since.get_or_insert(now);
            if !track.unknown && now.duration_since(since) >= grace {
                match set_node_ready_condition(
                    &handle,
                    node,
                    "Unknown",
                    "NodeStatusUnknown",
                    "Kubelet stopped posting node status.",
                ) {
                    Ok(_) => {
                        info!(cluster = %format!("{namespace}/{cluster}"), node, "Node stopped posting status: Unknown");
                        track.unknown = true;
                    }
                    Err(e) if e.is_not_found() => gone.push(key.clone()),
                    Err(e) => debug!(node, error = %e, "marking the node Unknown failed"),
                }
            }
            if track.unknown && !alive.contains_key(key) {
                // Nothing more to do for a Node whose VM is gone, until the Node itself goes.
                if handle.api().get_object("v1", "Node", None, node).is_err() {
                    gone.push(key.clone());
                }
            }
        }
        for key in gone {
            tracked.remove(&key);
        }
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
